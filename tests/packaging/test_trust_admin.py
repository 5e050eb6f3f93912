"""`jit-hooks status`, `check` and `enable` refuse trust inputs others could change
(issue 15 item 1: status said "Config: ok" for a world-writable config)."""

from __future__ import annotations

import os

import pytest

from tests.packaging.conftest import Root
from tests.packaging.test_admin_commands import make_key
from tests.packaging.test_enable import refused, status_lines


def _break(root: Root, what: str) -> tuple[str, str]:
    """Make ``what`` untrusted; (path the error must name, text it must say)."""
    if what == "config":
        os.chmod(root.config, 0o666)
        return str(root.config), f"world-writable (mode 0666): chmod 644 {root.config}"
    if what == "dir":
        d = root.config.parent
        os.chmod(d, 0o775)
        return str(d), f"group-writable (mode 0775): chmod 755 {d}"
    if what == "token":
        os.chmod(root.token, 0o644)
        return str(root.token), f"must be 0640 or stricter: chmod 640 {root.token}"
    if what == "symlink":
        real = root.token.with_name("token-elsewhere")
        os.rename(root.token, real)
        os.symlink(real, root.token)
        return str(root.token), "host token is a symlink"
    raise AssertionError(what)


WHAT = ["config", "dir", "token", "symlink"]


@pytest.mark.parametrize("what", WHAT)
def test_status_fails_naming_the_file_and_the_fix(enabled_root, what):
    before = enabled_root.run("status")
    assert status_lines(before.stdout)["config"][0] == "ok", before.stdout  # control
    path, says = _break(enabled_root, what)
    r = enabled_root.run("status")
    assert r.returncode == 1
    config_line = status_lines(r.stdout)["config"]
    assert config_line[:2] == ("FAIL", f"{path}:"), r.stdout
    assert says in r.stdout


@pytest.mark.parametrize("what", WHAT)
def test_enable_refuses_with_that_line(enabled_root, what):
    path, says = _break(enabled_root, what)
    line = refused(enabled_root)
    assert path in line and says in line


def test_check_refuses_a_world_writable_config(enabled_root, tmp_path):
    pub = make_key(tmp_path, "alice")
    path, says = _break(enabled_root, "config")
    r = enabled_root.run("check", "deploy", "--key", str(pub))
    assert r.returncode != 0
    assert path in r.stderr + r.stdout and says in r.stderr + r.stdout


def test_http_to_a_remote_service_is_refused_by_status(enabled_root):
    text = enabled_root.config.read_text()
    url = next(line.split('"')[1] for line in text.splitlines() if line.startswith("urls"))
    enabled_root.config.write_text(text.replace(url, "http://jit.example.com:8080"))
    r = enabled_root.run("status")
    assert r.returncode == 1
    assert "'http://jit.example.com:8080': use https://" in r.stdout
