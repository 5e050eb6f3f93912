"""A sick service denies every login (fail closed); break-glass still works; a failing
session hook leaves nothing usable. The faults come from a real local HTTP server
that misbehaves on purpose (tests/utils/fault_server.py), nothing is mocked."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

import pytest

from jit_hooks.testing.sshd import free_port
from tests.utils.fault_server import FaultServer

AKC = "jit-authorized-keys"
ACCOUNT = "jit-pam-account"
SESSION = "jit-pam-session"
PATH_AKC = "/api/v1/hook/authorized-keys"
PATH_ACCOUNT = "/api/v1/hook/account"
PATH_SESSION = "/api/v1/hook/session"
ALLOW = {"decision": "allow", "reason": "approved", "request_id": 7}


def key_answer(person, expires_at):
    pub = person.public
    return {
        "keys": [
            {
                "key_type": pub.key_type,
                "key": pub.blob,
                "fingerprint": pub.fingerprint,
                "expires_at": expires_at,
                "options": [],
                "request_id": 7,
            }
        ]
    }


@pytest.fixture
def fault(world):
    server = FaultServer(drip_total=30)
    world.box.configure([server.url], world.host_token, connect_timeout=1.0, total_timeout=3.0)
    yield server
    server.stop()


@pytest.mark.parametrize(
    "fault_name, status, reason",
    [
        ("status", 500, "http_500"),
        ("status", 503, "http_503"),
        ("garbage", 200, "malformed"),
        ("oversize", 200, "oversize"),
        ("redirect", 302, "redirect"),
        ("drip", 200, "timeout"),
        ("hang", 200, "timeout"),
    ],
)
def test_sick_service_denies(world, fault, fault_name, status, reason):
    # The answer the server would give if it behaved: alice's key, valid for an hour.
    fault.fault, fault.status = fault_name, status
    fault.answer = key_answer(world.person("alice"), int(time.time()) + 3600)
    r = world.ssh("alice", "echo ran-ok")
    assert r.returncode == 255 and "ran-ok" not in r.stdout, r
    world.box.sink.wait_for(rf"decision=deny login={world.login} .*reason={reason}", ident=AKC)
    assert fault.requests, "the hook never asked the service"
    assert "failed, status 1" in world.box.log_text()  # sshd saw the AKC fail


def test_service_text_is_never_printed_into_sshd(world, fault):
    """A key line with injected options is dropped, not passed on (login denied)."""
    answer = key_answer(world.person("alice"), int(time.time()) + 3600)
    answer["keys"][0]["options"] = ['command="/bin/sh -c id"', "no-pty"]
    fault.answer = answer
    r = world.ssh("alice", "echo ran-ok")
    assert r.returncode == 255 and "ran-ok" not in r.stdout
    world.box.sink.wait_for(r"reason=dropped dropped=option_not_allowed", ident=AKC)


def test_expiry_time_is_read_as_utc_by_sshd(world, fault):
    """sshd runs 5 h east of UTC: a key valid for 2 more hours gets in only if sshd reads
    expiry-time="...Z" as UTC (read as local time it would have expired 3 h ago)."""
    assert world.box.tz == "JIT-5"  # POSIX TZ: 5 h east of UTC, needs no tzdata
    fault.routes = {
        PATH_AKC: {"answer": key_answer(world.person("alice"), int(time.time()) + 7200)},
        PATH_ACCOUNT: {"answer": {**ALLOW, "expires_at": int(time.time()) + 7200}},
        PATH_SESSION: {"answer": {**ALLOW, "expires_at": int(time.time()) + 7200}},
    }
    r = world.ssh("alice", "echo ran-ok $(id -un)")
    assert r.returncode == 0 and r.stdout.split() == ["ran-ok", world.login], r
    world.box.sink.wait_for(r"decision=allow .*request=7", ident=AKC)


def test_break_glass_works_while_service_is_down(world):
    world.box.configure([f"http://127.0.0.1:{free_port()}"], world.host_token)
    bg = world.person("breakglass")
    r = world.box.ssh(world.box.bg_login, bg, "echo ran-ok $(id -un)")
    assert r.returncode == 0 and r.stdout.split() == ["ran-ok", world.box.bg_login], r
    sink = world.box.sink
    sink.wait_for(rf"decision=allow reason=break_glass login={world.box.bg_login}", ident=ACCOUNT)
    sink.wait_for(r"event=break_glass_report reported=no", ident=ACCOUNT)
    # No session-open hook: the account stage is the only report; the close is logged.
    sink.wait_for(
        rf"decision=close .*login={world.box.bg_login} .*reason=break_glass", ident=SESSION
    )
    # Logged loudly: syslog priority ALERT.
    assert any(pri & 7 == 1 and "break_glass" in msg for pri, _i, msg in sink.lines)


def test_break_glass_is_reported_to_the_audit(world):
    bg = world.person("breakglass")
    r = world.box.ssh(world.box.bg_login, bg, "echo ran-ok $(id -un)")
    assert r.returncode == 0, r
    world.box.sink.wait_for(r"event=break_glass_report reported=yes", ident=ACCOUNT)
    stages = {e["data"]["stage"] for e in world.events("hook.break_glass")}
    assert stages == {"account"}


def test_break_glass_key_does_not_open_other_accounts(world):
    r = world.box.ssh(world.login, world.person("breakglass"), "echo ran-ok")
    assert r.returncode == 255 and "ran-ok" not in r.stdout
    world.box.sink.wait_for(rf"decision=deny login={world.login} .*reason=no_approval", ident=AKC)


# -- the session opened by the account call ------------------------------------


def test_account_call_opens_the_session_and_no_session_hook_runs(world, fault):
    """The wiring `jit-hooks enable` writes: one account call carrying open_session, no
    session-open call; a failing account call (the only check left) gives no command."""
    fault.routes = {
        PATH_AKC: {"answer": key_answer(world.person("alice"), int(time.time()) + 3600)},
        PATH_ACCOUNT: {"answer": {**ALLOW, "expires_at": int(time.time()) + 3600}},
        PATH_SESSION: {"answer": {**ALLOW, "expires_at": int(time.time()) + 3600}},
    }
    r = world.ssh("alice", "echo ran-ok $(id -un)")
    assert r.returncode == 0 and r.stdout.split() == ["ran-ok", world.login], r
    world.box.sink.wait_for(r"decision=close event=close .*reported=yes", ident=SESSION)
    accounts = [q for q in fault.requests if q.path == PATH_ACCOUNT]
    assert len(accounts) == 1 and json.loads(accounts[0].body)["open_session"] is True
    events = [json.loads(q.body)["event"] for q in fault.requests if q.path == PATH_SESSION]
    assert events == ["close"]

    fault.routes[PATH_ACCOUNT] = {"fault": "status", "status": 500}
    marker = world.box.root / "ran-marker"
    r = world.ssh("alice", f"echo ran-ok; touch {marker}")
    assert r.returncode == 255 and "ran-ok" not in r.stdout, r
    assert not marker.exists()
    world.box.sink.wait_for(r"decision=deny .*session=open .*reason=http_500", ident=ACCOUNT)


# -- a failing session hook (the wiring before --open-session) ---------------------


@pytest.fixture
def legacy_wiring(world):
    """The PAM lines of a host enabled before --open-session (a session-open hook):
    it keeps working until `jit-hooks enable` is run again."""
    world.box._write_pam_file(legacy_session=True)
    yield
    world.box._write_pam_file()


@pytest.fixture
def session_fails(world, fault, legacy_wiring):
    """Key and account checks allow; the session check answers 500."""
    fault.routes = {
        PATH_AKC: {"answer": key_answer(world.person("alice"), int(time.time()) + 3600)},
        PATH_ACCOUNT: {"answer": {**ALLOW, "expires_at": int(time.time()) + 3600}},
        PATH_SESSION: {"fault": "status", "status": 500},
    }
    return fault


def test_control_session_allowed_runs_the_command(world, fault, session_fails):
    fault.routes[PATH_SESSION] = {"answer": {**ALLOW, "expires_at": int(time.time()) + 3600}}
    r = world.ssh("alice", "echo ran-ok $(id -un)")
    assert r.returncode == 0 and "ran-ok" in r.stdout, r


def test_failing_session_hook_runs_no_command(world, session_fails):
    marker = world.box.root / "ran-marker"
    r = world.ssh("alice", f"echo ran-ok; touch {marker}")
    assert "ran-ok" not in r.stdout and r.returncode != 0, r
    assert not marker.exists()
    world.box.sink.wait_for(r"decision=deny event=open .*reason=http_500", ident=SESSION)
    world.box.sink.wait_for(r"decision=allow", ident=ACCOUNT)  # got that far
    # sshd may write its log line just after the client has gone: poll, bounded.
    deadline = time.monotonic() + 15
    while "pam_open_session" not in world.box.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "pam_open_session" in world.box.log_text(), world.box.log_text()[-2000:]


def test_failing_session_hook_gives_no_shell(world, session_fails):
    args = world.box.ssh_args(
        world.login, "-i", str(world.person("alice").key_path), "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes", "-tt",
    )  # fmt: skip
    r = subprocess.run(
        args, input="echo ran-$((40+2))\nexit\n", capture_output=True, text=True, timeout=60
    )
    assert "ran-42" not in r.stdout, r
    world.box.sink.wait_for(r"decision=deny event=open", ident=SESSION)


@pytest.mark.parametrize("session", ["fails", "allowed"])
def test_failing_session_hook_forwards_no_port(world, fault, session_fails, session):
    """ssh -N -L: no session channel at all, yet the forward must not work either.
    The 'allowed' control proves the same forward works when the session hook allows."""
    if session == "allowed":
        fault.routes[PATH_SESSION] = {"answer": {**ALLOW, "expires_at": int(time.time()) + 3600}}
    hits = []
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(4)
    target.settimeout(0.2)
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = target.accept()
            except OSError:
                continue
            hits.append(conn)
            conn.sendall(b"forwarded\n")

    threading.Thread(target=accept, daemon=True).start()
    local = free_port()
    args = world.box.ssh_args(
        world.login, "-i", str(world.person("alice").key_path), "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes", "-N", "-L", f"{local}:127.0.0.1:{target.getsockname()[1]}",
    )  # fmt: skip
    ssh = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        try:
            world.box.sink.wait_for(r"event=open", ident=SESSION)
        except AssertionError:
            ssh.kill()
            out, err = ssh.communicate()
            raise AssertionError(
                f"no session hook line; ssh: {err!r}; hooks: {world.box.sink.lines!r}; "
                f"sshd: {world.box.log_text()[-3000:]}"
            ) from None
        got, connected = b"", False
        deadline = time.monotonic() + 30  # generous: CI machines are shared and slow
        while time.monotonic() < deadline and ssh.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", local), timeout=2) as c:
                    connected = True
                    c.settimeout(5)
                    got = c.recv(100)
                    break
            except OSError:
                time.sleep(0.2)  # the client may not be listening yet
        assert connected, "the ssh client never listened on the forwarded port"
        if session == "allowed":
            assert got == b"forwarded\n" and len(hits) == 1
        else:
            assert got == b"" and hits == []
    finally:
        ssh.kill()
        ssh.wait()
        stop.set()
        target.close()
