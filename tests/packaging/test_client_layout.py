"""The jit-client package's layout, checked on the source tree (scripts/ci-deb-client
checks the built package the same way): `jit` and every module under jit_hooks/cli
except the host admin command import with nothing from jit_hooks.host, the service,
the test harness or jit_hooks.sshkeys, and no third-party module but requests and
click (Debian's python3-requests and python3-click are its only Depends)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.packaging.conftest import REPO

CLIENT_RULES = REPO / "packaging/deb/jit-client/debian/rules"
# Not shipped by jit-client (its debian/rules deletes them after the wheel is installed).
NOT_SHIPPED = ("jit_hooks.host", "jit_hooks.server", "jit_hooks.testing", "jit_hooks.sshkeys")
# requests and click, and what they import themselves on Debian 12.
ALLOWED_THIRD_PARTY = {"click", "requests", "urllib3", "idna", "charset_normalizer", "chardet"}
ALLOWED_THIRD_PARTY |= {
    "certifi",
    "six",
    "simplejson",
    "socks",
    "brotli",
    "cryptography",
    "OpenSSL",
}


def client_modules() -> list[str]:
    cli = REPO / "jit_hooks/cli"
    return sorted(f"jit_hooks.cli.{p.stem}" for p in cli.glob("*.py") if p.name != "admin.py")


def test_rules_remove_what_the_client_does_not_ship():
    rules = CLIENT_RULES.read_text()
    for path in ("jit_hooks/host", "jit_hooks/server", "jit_hooks/testing"):
        assert f"$(SITE)/{path}" in rules, path
    assert "$(SITE)/jit_hooks/sshkeys.py" in rules
    assert "$(SITE)/jit_hooks/cli/admin.py" in rules


def test_jit_imports_nothing_the_client_package_leaves_out(tmp_path: Path):
    code = "\n".join(
        [
            "import importlib, sys",
            f"sys.path.insert(0, {str(REPO)!r})",
            "before = set(sys.modules)",
            f"for name in {client_modules()!r}:",
            "    importlib.import_module(name)",
            "new = set(sys.modules) - before",
            "print('\\n'.join(sorted(new)))",
        ]
    )
    # -I: no PYTHONPATH or user site; -S: not the venv's site-packages beyond what we
    # add (Debian's dist-packages: python3-requests and python3-click, as installed).
    r = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    loaded = set(r.stdout.split())
    assert "jit_hooks.cli.jit" in loaded
    leaked = sorted(m for m in loaded if m.startswith(NOT_SHIPPED))
    assert not leaked, leaked
    import sys

    third_party = {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names)
    extra = third_party - ALLOWED_THIRD_PARTY - {"jit_hooks"}
    assert not extra, sorted(extra)


MAKE_COMPLETIONS = REPO / "packaging/deb/jit-client/make-completions"


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completes_on_the_first_tab(tmp_path: Path):
    """The package's _jit, autoloaded by compinit, completes the first Tab of a shell.

    Debian 12's click writes a zsh script that only registers itself when first
    called: as a vendor-completions file, the first Tab in every new shell did
    nothing. A real interactive zsh on a pty types `jit req<Tab>`.
    """
    out = tmp_path / "share"
    # The completion scripts made as debian/rules makes them (Debian's python3 and click).
    subprocess.run(["sh", str(MAKE_COMPLETIONS), str(REPO), str(out)], check=True, timeout=120)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    jit = bindir / "jit"
    jit.write_text(
        "#!/bin/sh\nexec /usr/bin/python3 -I -c 'import sys; sys.path.insert(0, sys.argv.pop(1)); "
        f'from jit_hooks.cli.jit import main; sys.exit(main())\' {REPO} "$@"\n'
    )
    jit.chmod(0o755)
    r = subprocess.run(
        [
            "zsh",
            "-f",
            str(REPO / "tests/packaging/zsh_first_tab.zsh"),
            str(out / "zsh/vendor-completions"),
            str(tmp_path / "zcompdump"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "jit request", r.stdout
    # bash: the same command completes through the static script.
    words = subprocess.run(
        [
            "bash",
            "--norc",
            "-c",
            f"source {out}/bash-completion/completions/jit; COMP_WORDS=(jit req); COMP_CWORD=1; "
            "_jit_completion jit; printf '%s\\n' \"${COMPREPLY[@]}\"",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert "request" in words.stdout.split(), words.stdout + words.stderr
