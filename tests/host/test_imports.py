"""The hot path stays stdlib-only: importing the hooks pulls in no heavy package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
FORBIDDEN = (
    "fastapi", "sqlalchemy", "pydantic", "click", "requests", "jit_hooks.server", "starlette",
    "uvicorn", "cachetools", "logging",
    # start-up cost: the hooks have their own HTTP exchange, NamedTuples, and load ssl
    # only for an https URL
    "http", "email", "dataclasses", "inspect", "ssl",
)  # fmt: skip
HOOKS = ("authorized_keys", "pam_account", "pam_session")


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_imports_are_stdlib_only(hook):
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
        f"import jit_hooks.host.login.{hook}; print('\\n'.join(sorted(sys.modules)))"
    )
    # -I: isolated, as the installed wrappers run it (no site-packages, no env).
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    loaded = [m for m in out if m.split(".")[0] in FORBIDDEN or m in FORBIDDEN]
    assert loaded == []
    assert f"jit_hooks.host.login.{hook}" in out


def test_entry_point_usage_smoke(tmp_path):
    """Each entry point runs as a process and fails closed without a config."""
    for hook in HOOKS:
        r = subprocess.run(
            [
                sys.executable,
                "-I",
                "-c",
                f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                f"from jit_hooks.host.login.{hook} import main; raise SystemExit(main())",
                "--config",
                str(tmp_path / "missing.toml"),
                "deploy",
                "SHA256:x",
                "t",
                "k",
            ],
            capture_output=True,
            text=True,
            env={"PAM_TYPE": "account", "PAM_USER": "deploy"},
        )
        assert r.returncode == 1, hook
        assert "reason=config" in r.stderr


def test_thin_client_fast_path_imports_only_socket(tmp_path, trusted):
    """The wrappers' fast path (thin.main against a live helper) loads nothing but
    ``_socket`` and the thin module itself on top of a bare ``python3 -IS``.

    The helper here is the real daemon, run as this user (which may then ask for
    the AKC), with a config whose service port is closed: it answers a deny.
    """
    from jit_hooks.testing.hooksd import HooksDaemon
    from jit_hooks.testing.trusted import write_token

    token = write_token(trusted / "token", "jith_" + "t" * 43)  # trusted: the hooks' mode rule
    (tmp_path / "state").mkdir(mode=0o700)
    config = trusted / "c.toml"
    config.write_text(
        f'[service]\nurls = ["http://127.0.0.1:9"]\ntoken_file = "{token}"\n'
        f'[state]\ndir = "{tmp_path / "state"}"\n[log]\nsyslog_socket = "{tmp_path / "nolog"}"\n'
    )
    sock = tmp_path / "h.sock"
    python = "/usr/bin/python3"
    bare = subprocess.run(
        [python, "-IS", "-c", "import sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); from jit_hooks.host.login import thin; "
        f"rc = thin.main('authorized-keys', {str(sock)!r}); "
        "print(' '.join(sorted(sys.modules)), file=sys.stderr); raise SystemExit(rc)"
    )
    args = ["--config", str(config), "deploy", "SHA256:" + "A" * 43, "ssh-ed25519", "AAAA"]
    with HooksDaemon(ROOT, sock, log_path=tmp_path / "d.log") as daemon:
        r = subprocess.run([python, "-IS", "-c", code, *args], capture_output=True, text=True)
        helper_log = daemon.log_text()
    assert r.returncode == 1 and r.stdout == ""
    # The daemon ran the hook (its line, to stderr here: no syslog socket).
    assert "reason=bad_input" in helper_log and "via=hooksd" in helper_log
    extra = set(r.stderr.split()) - set(bare)
    assert extra == {
        "_socket", "jit_hooks", "jit_hooks.host", "jit_hooks.host.login",
        "jit_hooks.host.login.frames", "jit_hooks.host.login.thin",
    }  # fmt: skip
