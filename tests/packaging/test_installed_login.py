"""Logins through the wiring `jit-hooks enable` writes, with the INSTALLED package.

Runs only with JIT_HOOKS_INSTALLED=1 (scripts/ci-deb, after installing the .deb):
sshd refuses an AuthorizedKeysCommand outside root-owned directories, so the
hooks must be the real /usr/bin ones. A real sshd (a link named sshd-jitpkg-N, so
PAM reads /etc/pam.d/sshd-jitpkg-N and never the machine's /etc/pam.d/sshd) runs
the config of a throw-away root on 127.0.0.1 at a free port; the real ssh client
logs in; the real service decides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from jit_hooks.testing import trusted
from tests.packaging.conftest import INSTALLED, Root, free_port, write_sshd_root

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not INSTALLED, reason="needs the installed package (scripts/ci-deb)"),
]

LOGIN = "jitpkg-deploy"
BREAK_GLASS = "jitpkg-bg"
POLICY = f"""
[[policy]]
name = "pkg"
hosts = ["web1"]
logins = ["{LOGIN}"]
requesters = {{ roles = ["requester"] }}
approvers = {{ roles = ["approver"] }}
approvals_required = 1
max_duration = 3600
reason_required = false
"""


def make_key(directory: Path, name: str) -> Path:
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
        check=True,
        timeout=30,
    )
    return path


def add_user(name: str, home: Path) -> None:
    # A run that was killed may have left the account behind.
    subprocess.run(["userdel", name], timeout=30, capture_output=True)
    subprocess.run(
        ["useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/sh", name],
        check=True,
        timeout=30,
    )
    home.chmod(0o755)


class Sandbox:
    def __init__(self, root: Root, svc, keys: dict[str, Path], tokens: dict[str, str]):
        self.root, self.svc, self.keys, self.tokens = root, svc, keys, tokens
        self.proc: subprocess.Popen | None = None

    def ssh(self, login: str, key: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "ssh",
                "-i",
                str(self.keys[key]),
                "-p",
                str(self.root.port),
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
                f"{login}@127.0.0.1",
                "echo jit-ok-$(id -un)",
            ],
            capture_output=True,
            text=True,
            timeout=90,
            stdin=subprocess.DEVNULL,
        )

    def api(self, who: str, method: str, path: str, body=None):
        status, answer = self.svc.call(method, path, token=self.tokens[who], body=body)
        assert status in (200, 201), (status, answer)
        return answer

    def audit_kinds(self) -> list[str]:
        return [e["kind"] for e in self.api("admin", "GET", "/api/v1/audit?limit=1000")["events"]]


@pytest.fixture
def sandbox(tmp_path, service, hook_user):
    # Not under pytest's tmp dir (0700 root): the AKC reads the config as the hook
    # user, and sshd reads a break-glass authorized_keys as that account. Not under
    # /tmp either (1777): the hooks refuse a config or token below a directory others
    # may write, so the root sits in a root-owned 0755 tree (jit_hooks.testing.trusted).
    base = trusted.make_dir("jitpkg-")
    root = write_sshd_root(base / "root", free_port())
    (base / "home").mkdir()
    name = f"sshd-jitpkg-{os.getpid()}"
    pam_file = Path("/etc/pam.d") / name
    link = tmp_path / name
    users = []
    proc = None
    try:
        # Service side: people, this host, a policy, alice's key.
        tokens = {}
        for who, role in (("alice", "requester"), ("bob", "approver"), ("admin", "admin")):
            service.admin("user", "add", who, "--role", role)
            tokens[who] = service.admin("token", "create", who).strip()
        host_token = service.admin("host", "add", "web1").strip()
        (tmp_path / "policy.toml").write_text(POLICY)
        service.admin("policy", "add", str(tmp_path / "policy.toml"))
        keys = {who: make_key(tmp_path, who) for who in ("alice", "mallory", "bg")}
        sb = Sandbox(root, service, keys, tokens)
        sb.api(
            "alice",
            "POST",
            "/api/v1/keys",
            {"public_key": keys["alice"].with_suffix(".pub").read_text()},
        )

        # Host side: a login account and a break-glass account with its own key.
        for user in (LOGIN, BREAK_GLASS):
            add_user(user, base / "home" / user)
            users.append(user)
        ssh_dir = base / "home" / BREAK_GLASS / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        shutil.copy(keys["bg"].with_suffix(".pub"), ssh_dir / "authorized_keys")
        shutil.chown(ssh_dir, BREAK_GLASS)
        shutil.chown(ssh_dir / "authorized_keys", BREAK_GLASS)

        # The admin's steps, with the installed command.
        r = root.run(
            "enroll",
            "--url",
            service.url,
            "--host-name",
            "web1",
            "--break-glass",
            BREAK_GLASS,
            input=host_token + "\n",
        )
        assert r.returncode == 0, r.stderr
        shutil.copy(root.pam, pam_file)
        r = root.run("enable", "--pam-file", str(pam_file))
        assert r.returncode == 0, r.stderr
        assert "sshd is not running" in r.stdout

        os.symlink("/usr/sbin/sshd", link)
        proc = subprocess.Popen(
            [str(link), "-D", "-f", str(root.sshd_config), "-E", str(tmp_path / "sshd.log")],
            stdin=subprocess.DEVNULL,
        )
        for _ in range(100):
            if (root.path / "run/sshd.pid").exists():
                break
            time.sleep(0.1)
        sb.proc = proc
        yield sb
    finally:
        if proc:
            proc.terminate()
            proc.wait(10)
        pam_file.unlink(missing_ok=True)
        for user in users:
            subprocess.run(["userdel", user], timeout=30, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_key_works_only_while_approved(sandbox):
    sb = sandbox
    r = sb.ssh(LOGIN, "alice")
    assert r.returncode == 255 and "jit-ok" not in r.stdout, "no request: must be denied"
    assert "hook.authorized_keys" in sb.audit_kinds(), "the installed AKC must have asked"

    req = sb.api(
        "alice",
        "POST",
        "/api/v1/requests",
        {"host": "web1", "login": LOGIN, "reason": "pkg test", "duration_seconds": 600},
    )
    assert sb.ssh(LOGIN, "alice").returncode == 255, "pending: must be denied"
    sb.api("bob", "POST", f"/api/v1/requests/{req['id']}/approve", {})

    r = sb.ssh(LOGIN, "alice")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"jit-ok-{LOGIN}"
    assert "hook.account" in sb.audit_kinds(), "the installed PAM account hook must have asked"
    assert sb.ssh(LOGIN, "mallory").returncode == 255, "someone else's key: denied"

    sb.api("alice", "POST", f"/api/v1/requests/{req['id']}/revoke", {})
    assert sb.ssh(LOGIN, "alice").returncode == 255, "revoked: must be denied"


def test_break_glass_gets_in_while_the_service_is_down(sandbox):
    sb = sandbox
    sb.svc.stop()
    r = sb.ssh(BREAK_GLASS, "bg")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"jit-ok-{BREAK_GLASS}"
    assert sb.ssh(LOGIN, "alice").returncode == 255


def test_disable_restores_the_pam_file_and_status(sandbox):
    sb = sandbox
    r = sb.root.run("status", "--pam-file", f"/etc/pam.d/sshd-jitpkg-{os.getpid()}")
    assert r.returncode == 0, r.stdout + r.stderr
    r = sb.root.run("disable", "--pam-file", f"/etc/pam.d/sshd-jitpkg-{os.getpid()}")
    assert r.returncode == 0, r.stderr
    assert f"reloaded sshd (pid {sb.proc.pid})" in r.stdout
    assert (
        Path(f"/etc/pam.d/sshd-jitpkg-{os.getpid()}").read_bytes()
        == Path("/etc/pam.d/sshd").read_bytes()
    )
