"""`jit-hooks enable` against a real sshd: key-less (password) logins while an approval exists.

The sandboxed sshd is given a config shaped like Debian 12's (drop-ins included at
the top, then the admin's own ``PasswordAuthentication yes``); `jit-hooks enable`
writes its drop-in and PAM block into it, and real ssh clients log in.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from jit_hooks.testing.service import start_service
from jit_hooks.testing.sshd import installed
from tests.e2e.conftest import PASSWORD, make_box, setup_world


@pytest.fixture
def enabled_world(tmp_path_factory):
    box = make_box()
    svc = None
    try:
        svc = start_service(tmp_path_factory.mktemp("e2e-enable-server"))
        world = setup_world(svc, box)
        (box.root / "sshd_config.d").mkdir(mode=0o755)
        (box.root / "sshd_config").write_text(
            f"Include {box.root}/sshd_config.d/*.conf\n"
            f"Port {box.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {box.root / 'host_key'}\n"
            f"PidFile {box.root / 'sshd.pid'}\n"
            "PasswordAuthentication yes\n"
            "KbdInteractiveAuthentication yes\n"
            "UsePAM yes\n"
            "PermitRootLogin no\n"
            "LogLevel VERBOSE\n"
            "PrintMotd no\n"
        )
        yield world
    finally:
        if svc is not None:
            svc.stop()
        box.close()


def jit_hooks(world, *args: str) -> subprocess.CompletedProcess:
    """`jit-hooks ARGS` on the sandbox: the installed command and hooks with
    JIT_HOOKS_INSTALLED=1 (scripts/ci-deb), else this checkout's."""
    box = world.box
    admin = ["/usr/bin/jit-hooks"] if installed() else [sys.executable, "-m", "jit_hooks.cli.admin"]
    cmd = [*admin, args[0], "--root", str(box.root)]
    cmd += ["--sshd-config", str(box.root / "sshd_config"), "--pam-file", str(box.pam_file)]
    cmd += ["--config", str(box.config_path), "--bin-dir", str(box.bin_dir), *args[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def restart(world) -> None:
    world.box.stop()
    world.box.start()


def test_enable_refuses_passwords_even_with_an_approval(enabled_world):
    w = enabled_world
    r = jit_hooks(w, "enable", "--no-reload")
    assert r.returncode == 0, r.stderr
    assert "passwords: off" in r.stdout and r.stderr == ""
    restart(w)
    w.approve(w.request("alice"))

    r = w.box.ssh_password(w.login, PASSWORD, "echo ran-ok")
    assert r.returncode == 255 and "ran-ok" not in r.stdout
    assert "Permission denied (publickey)" in r.stderr  # sshd no longer offers passwords
    assert f"Accepted password for {w.login}" not in w.box.log_text()
    # Key logins still work through the hooks the drop-in names.
    r = w.ssh("alice", "echo key-ok")
    assert r.returncode == 0 and "key-ok" in r.stdout, r.stderr


def test_allow_passwords_lets_the_password_in_while_an_approval_exists(enabled_world):
    w = enabled_world
    r = jit_hooks(w, "enable", "--no-reload", "--allow-passwords")
    assert r.returncode == 0, r.stderr
    assert "warning: passwords allowed" in r.stderr
    restart(w)

    r = w.box.ssh_password(w.login, PASSWORD, "echo ran-ok")
    assert r.returncode != 0 and "ran-ok" not in r.stdout  # no approval: the PAM hook denies

    request_id = w.request("alice")
    w.approve(request_id)
    r = w.box.ssh_password(w.login, PASSWORD, "echo ran-ok")
    assert r.returncode == 0 and "ran-ok" in r.stdout, r.stderr
    assert f"Accepted password for {w.login}" in w.box.log_text()
    # A password proves nobody's identity: the audit names no person (H-BIND's side).
    allowed = [e for e in w.events("hook.account") if e["data"]["decision"] == "allow"]
    assert len(allowed) == 1
    assert allowed[0]["actor"] is None
    assert allowed[0]["data"]["via"] == "login-account"
    assert allowed[0]["data"]["request_ids"] == [request_id]

    r = jit_hooks(w, "disable", "--no-reload")
    assert r.returncode == 0, r.stderr
    assert not (w.box.root / "sshd_config.d" / "10-jit-hooks.conf").exists()
