"""The hook entry points the package installs: tiny `python3 -IS` scripts, no console-script
wrapper, each importing a real `main` of the host package."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest

from tests.packaging.conftest import REPO

WRAPPERS = {
    "jit-authorized-keys": "jit_hooks.host.login.authorized_keys",
    "jit-pam-account": "jit_hooks.host.login.pam_account",
    "jit-pam-session": "jit_hooks.host.login.pam_session",
}


@pytest.mark.parametrize("name,module", sorted(WRAPPERS.items()))
def test_wrapper_imports_the_hook_main(name, module):
    path = REPO / "packaging/host/usr/bin" / name
    text = path.read_text()
    # -S (no site: ~2.5 ms per hook) means the wrapper itself adds the package's directory.
    assert text.startswith("#!/usr/bin/python3 -IS\n")
    assert 'sys.path.append("/usr/lib/python3/dist-packages")' in text
    assert path.stat().st_mode & 0o777 == 0o755
    # A thin client of jit-hooksd, falling back to the hook module itself (host/thin.py).
    assert re.findall(r"^from (\S+) import main$", text, re.M) == ["jit_hooks.host.login.thin"]
    mode = name.removeprefix("jit-")
    assert f'main("{mode}", "/run/jit-hooks/hooksd.sock")' in text
    assert importlib.import_module("jit_hooks.host.login.thin").MODES[mode] == module
    assert "importlib" not in text and "pkg_resources" not in text
    assert callable(importlib.import_module(module).main)


def test_wrapper_fails_closed_without_config(tmp_path):
    """Run as a script with this checkout on the path: no config -> nothing for sshd, exit 1."""
    script = REPO / "packaging/host/usr/bin/jit-authorized-keys"
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.argv[0] = {str(script)!r}; "
    code += f"exec(open({str(script)!r}).read())"
    missing = tmp_path / "missing.toml"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "--config",
            str(missing),
            "alice",
            "SHA256:x",
            "ssh-ed25519",
            "AAAA",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and r.stdout == ""
