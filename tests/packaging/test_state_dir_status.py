"""`jit-hooks status` applies the hooks' state-dir rule, directories above included."""

import os

import pytest

pytestmark = pytest.mark.usefixtures("hook_user")


def test_status_fails_for_a_state_dir_below_a_writable_directory(enabled_root):
    root = enabled_root
    assert root.run("enable", "--no-reload").returncode == 0
    assert "state dir:    ok" in root.run("status").stdout
    os.chmod(root.path / "run", 0o777)
    st = root.run("status")
    assert st.returncode != 0
    line = next(ln for ln in st.stdout.splitlines() if ln.startswith("state dir:"))
    assert "FAIL" in line and "directory above state dir" in line and "world-writable" in line
