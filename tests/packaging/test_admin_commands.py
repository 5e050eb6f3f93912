"""`jit-hooks enroll` (files, owners, modes) and `jit-hooks check` (dry run) on a real service."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import subprocess
import tomllib

import pytest

from tests.packaging.conftest import Root
from tests.utils.tls import self_signed

pytestmark = pytest.mark.usefixtures("hook_user")

POLICY = """
[[policy]]
name = "web"
hosts = ["web1"]
logins = ["deploy"]
requesters = { roles = ["requester"] }
approvers = { roles = ["approver"] }
approvals_required = 1
max_duration = 3600
reason_required = false
options = ["no-agent-forwarding"]
"""


def enroll(root: Root, *args: str, token: str | None = None):
    return root.run("enroll", *args, input=token)


def test_enroll_writes_config_and_token_with_the_right_modes(sshd_root, host_service):
    svc, token = host_service
    r = enroll(
        sshd_root,
        "--url",
        svc.url,
        "--host-name",
        "web1",
        "--break-glass",
        "root",
        token=token + "\n",
    )
    assert r.returncode == 0, r.stderr
    st = sshd_root.token.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (
        0o640,
        0,
        grp.getgrnam("jit-hooks").gr_gid,
    )
    assert sshd_root.token.read_text() == token + "\n"
    assert sshd_root.config.stat().st_mode & 0o7777 == 0o644
    cfg = tomllib.loads(sshd_root.config.read_text())
    assert cfg["service"]["urls"] == [svc.url]
    assert cfg["service"]["token_file"] == str(sshd_root.token)
    assert cfg["host"]["name"] == "web1"
    assert cfg["break_glass"]["accounts"] == ["root"]
    # The result is what enable needs: status finds service and token fine.
    r = sshd_root.run("status")
    assert "answers for host web1" in r.stdout and "token:        ok" in r.stdout, r.stdout


def test_re_enroll_keeps_break_glass_and_takes_the_token_from_a_file(
    sshd_root, host_service, tmp_path
):
    svc, token = host_service
    assert enroll(sshd_root, "--url", svc.url, "--break-glass", "root", token=token).returncode == 0
    token_file = tmp_path / "t"
    token_file.write_text(token)
    r = enroll(
        sshd_root,
        "--url",
        "https://jit2.example.org:8443",
        "--url",
        svc.url,
        "--token-file",
        str(token_file),
    )
    assert r.returncode == 0, r.stderr
    cfg = tomllib.loads(sshd_root.config.read_text())
    assert cfg["service"]["urls"] == ["https://jit2.example.org:8443", svc.url]
    assert cfg["break_glass"]["accounts"] == ["root"]


@pytest.mark.parametrize(
    "args,token,message",
    [
        (["--url", "ftp://x"], "jith_" + "a" * 43, "service.urls"),
        (["--url", "https://jit.example.org"], "not a token!", "host token is malformed"),
        (["--url", "https://jit.example.org"], "", "no host token given"),
        (
            ["--url", "https://jit.example.org", "--break-glass", "Bad Name"],
            "jith_" + "a" * 43,
            "break_glass.accounts",
        ),
    ],
)
def test_enroll_refuses_bad_input_without_writing(sshd_root, args, token, message):
    r = enroll(sshd_root, *args, token=token)
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert not sshd_root.config.exists() and not sshd_root.token.exists()


def make_key(tmp_path, name):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(tmp_path / name)],
        check=True,
        timeout=30,
    )
    return tmp_path / f"{name}.pub"


def test_check_shows_what_sshd_would_get_and_why(sshd_root, host_service, tmp_path):
    svc, token = host_service
    assert enroll(sshd_root, "--url", svc.url, "--break-glass", "root", token=token).returncode == 0
    pub = make_key(tmp_path, "alice")
    # check runs the real AuthorizedKeysCommand: like sshd's, it needs its state
    # directory (tmpfiles.d makes it at boot) to record the key it accepts.
    state = sshd_root.path / "run/jit-hooks"
    with sshd_root.config.open("a") as f:
        f.write(f'\n[state]\ndir = "{state}"\n')
    state.mkdir(mode=0o700)
    os.chown(state, pwd.getpwnam("jit-hooks").pw_uid, pwd.getpwnam("jit-hooks").pw_gid)
    for who, role in (("alice", "requester"), ("bob", "approver")):
        svc.admin("user", "add", who, "--role", role)
    alice = svc.admin("token", "create", "alice").strip()
    bob = svc.admin("token", "create", "bob").strip()
    (tmp_path / "policy.toml").write_text(POLICY)
    svc.admin("policy", "add", str(tmp_path / "policy.toml"))
    status, _ = svc.call("POST", "/api/v1/keys", token=alice, body={"public_key": pub.read_text()})
    assert status == 201

    r = sshd_root.run("check", "deploy", "--key", str(pub))
    assert r.returncode == 1
    assert "sshd would get: nothing (no_approval): the key is refused" in r.stdout
    assert "account check: deny" in r.stdout

    body = {"host": "web1", "login": "deploy", "reason": "x", "duration_seconds": 600}
    status, req = svc.call("POST", "/api/v1/requests", token=alice, body=body)
    assert status == 201
    status, _ = svc.call("POST", f"/api/v1/requests/{req['id']}/approve", token=bob, body={})
    assert status == 200
    r = sshd_root.run("check", "deploy", "--key", str(pub))
    assert r.returncode == 0, r.stdout + r.stderr
    blob = pub.read_text().split()[1]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("sshd would get: "))
    assert line.startswith('sshd would get: expiry-time="')
    assert f",no-agent-forwarding ssh-ed25519 {blob} jit-request-{req['id']}" in line
    assert "account check: allow" in r.stdout

    r = sshd_root.run("check", "root", "--key", str(pub))
    assert r.returncode == 0 and "break-glass account" in r.stdout

    svc.stop()
    r = sshd_root.run("check", "deploy", "--key", str(pub))
    assert r.returncode == 1 and "service error refused" in r.stdout


def test_enroll_copies_the_ca_where_the_hook_user_can_read_it(sshd_root, host_service, tmp_path):
    svc, token = host_service
    private = tmp_path / "private"  # like /root: the hook user can't read in here
    private.mkdir(mode=0o700)
    self_signed(private / "ca.pem", private / "ca.key", cn="jit test CA")
    r = enroll(sshd_root, "--url", svc.url, "--ca-file", str(private / "ca.pem"), token=token)
    assert r.returncode == 0, r.stderr
    copy = sshd_root.path / "etc/jit-hooks/ca.pem"
    assert copy.read_bytes() == (private / "ca.pem").read_bytes()
    assert copy.stat().st_mode & 0o777 == 0o644
    assert tomllib.loads(sshd_root.config.read_text())["service"]["ca_file"] == str(copy)
    # Enrolling again without --ca-file keeps it; a key file is not a certificate.
    assert enroll(sshd_root, "--url", svc.url, token=token).returncode == 0
    assert tomllib.loads(sshd_root.config.read_text())["service"]["ca_file"] == str(copy)
    r = enroll(sshd_root, "--url", svc.url, "--ca-file", str(private / "ca.key"), token=token)
    assert r.returncode == 1 and "no PEM certificate" in r.stderr


def test_status_and_check_report_the_helper_which_is_optional(sshd_root, host_service, tmp_path):
    """status/check say whether jit-hooksd's socket (under --root) is listening; without
    it the hooks run in-process, so its absence never fails status."""
    svc, token = host_service
    assert enroll(sshd_root, "--url", svc.url, "--break-glass", "root", token=token).returncode == 0
    sock = sshd_root.path / "run/jit-hooks/hooksd.sock"
    r = sshd_root.run("status")
    assert f"helper:       off  no jit-hooksd at {sock} (missing)" in r.stdout, r.stdout
    assert "the hooks still work, in-process (slower)" in r.stdout
    rc_without = r.returncode
    r = sshd_root.run("check", "deploy", "--key", str(make_key(tmp_path, "carol")))
    assert f"helper: no jit-hooksd at {sock} (missing)" in r.stdout, r.stdout

    sock.parent.mkdir(parents=True)
    # status only looks for a listener (without connecting: that would start the helper):
    # a plain listening socket is what it sees of jit-hooksd or of systemd's socket unit
    # (the installed helper itself serves in test_hooksd.py).
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock))
        listener.listen(4)
        r = sshd_root.run("status")
        assert f"helper:       ok   jit-hooksd socket {sock} is listening" in r.stdout
        assert r.returncode == rc_without
    # The socket file of a helper that is gone: the hooks fall back in-process.
    r = sshd_root.run("status")
    assert f"no jit-hooksd at {sock} (no listener: a stale socket file)" in r.stdout
    assert r.returncode == rc_without


def test_enable_warns_about_files_jit_hooksd_cannot_see(capsys):
    """`enable` on / warns when config, token or CA sit where the helper's sandbox hides them."""
    from jit_hooks.cli import admin
    from jit_hooks.host.admin import preflight
    from jit_hooks.host.login.config import parse_config

    def config(token_file: str, ca_file: str | None = None):
        service = {"urls": ["https://jit.example.org"], "token_file": token_file}
        if ca_file:
            service["ca_file"] = ca_file
        return parse_config({"service": service}, path="/etc/jit-hooks/jit-hooks.toml")

    preflight.warn_hidden_from_helper(
        config("/etc/jit-hooks/host-token", "/etc/jit-hooks/ca.pem"), admin._warn
    )
    assert capsys.readouterr().err == ""
    preflight.warn_hidden_from_helper(config("/root/host-token", "/tmp/ca.pem"), admin._warn)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("jit-hooks: warning: token /root/host-token is hidden from jit-hooksd")
    assert err[1].startswith("jit-hooks: warning: CA file /tmp/ca.pem is hidden from jit-hooksd")
