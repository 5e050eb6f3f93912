"""`jit-hooks enforce` with the real sshd and service: revoked or expired approvals end sessions.

Each test holds real ssh sessions (``ssh ... sleep N`` in the background), changes
the approval through the API, runs ``jit-hooks enforce --once`` as a process
pointed at the sandbox's config, and checks the observable outcome: the ssh
client exits, the remote command is gone, the service shows the session closed
and a ``hook.enforce`` audit event, and a session still approved is untouched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jit_hooks.host import procfs
from jit_hooks.host.admin import enforce
from jit_hooks.testing.sshd import installed

ENFORCE = "jit-hooks-enforce"
WAIT = 30  # seconds a bounded poll may take before the test fails (not a timing assert)


def enforce_once(world) -> subprocess.CompletedProcess:
    if installed():
        cmd = ["/usr/bin/jit-hooks"]
    else:
        cmd = [sys.executable, "-m", "jit_hooks.cli.admin"]
    return subprocess.run(
        [*cmd, "enforce", "--once", "--config", str(world.box.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_session(world, who: str, seconds: int) -> subprocess.Popen:
    key = world.person(who).key_path
    args = world.box.ssh_args(
        world.login, "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "PasswordAuthentication=no",
    )  # fmt: skip
    return subprocess.Popen(
        [*args, f"sleep {seconds}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(predicate, what: str):
    deadline = time.monotonic() + WAIT
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


def open_session(world, rid: int, proc: subprocess.Popen) -> str:
    """Wait for the service to record the session of request ``rid``; its connection id."""

    def recorded():
        assert proc.poll() is None, (proc.returncode, proc.communicate())
        rows = world.svc.sqlite(
            "SELECT connection FROM sessions WHERE request_id = ? AND closed_at IS NULL", (rid,)
        )
        return rows[0][0] if rows else None

    return wait_until(recorded, f"session of request {rid} recorded")


def remote_commands(seconds: int) -> list[int]:
    """Pids of the remote ``sleep SECONDS`` commands run through the sandbox sshd."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", str(seconds).encode()]:
            out.append(int(name))
    return out


def session_closed(world, conn: str) -> bool:
    rows = world.svc.sqlite("SELECT closed_at FROM sessions WHERE connection = ?", (conn,))
    return bool(rows) and rows[0][0] is not None


def stop(proc: subprocess.Popen, seconds: int) -> None:
    """Teardown: the ssh client, and its remote command (which outlives a dropped client)."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)
    for pid in remote_commands(seconds):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_revoked_session_is_ended_and_others_kept(world):
    alice_rid = world.request("alice")
    world.approve(alice_rid)
    carol_rid = world.request("carol")
    world.approve(carol_rid)
    alice = start_session(world, "alice", 1201)
    carol = start_session(world, "carol", 1202)
    try:
        alice_conn = open_session(world, alice_rid, alice)
        carol_conn = open_session(world, carol_rid, carol)
        wait_until(lambda: remote_commands(1201), "alice's remote command runs")
        assert alice.poll() is None and carol.poll() is None

        world.revoke(alice_rid)
        result = enforce_once(world)
        assert result.returncode == 0, result.stderr
        assert "ended 1," in result.stdout

        # alice's ssh ends (sshd closed the connection) and her command is gone.
        alice.wait(timeout=WAIT)
        wait_until(lambda: not remote_commands(1201), "alice's remote command ended")
        wait_until(lambda: session_closed(world, alice_conn), "session closed in the service")
        world.box.sink.wait_for(
            rf"action=end login={world.login} connection={alice_conn} request={alice_rid} "
            r"why=revoked result=terminated",
            ident=ENFORCE,
        )
        # (Sessions left open by earlier tests whose close was never reported may be
        # listed too: they are closed, not ended, as their sshd is gone.)
        ends = [e["data"] for e in world.events("hook.enforce")]
        assert [e for e in ends if e["request_id"] in (alice_rid, carol_rid)] == [
            {
                "decision": "end",
                "connection": alice_conn,
                "login": world.login,
                "request_id": alice_rid,
                "reason": "revoked",
            }
        ]
        closes = [e["data"] for e in world.events("hook.session") if e["data"]["event"] == "close"]
        assert alice_conn in {c["connection"] for c in closes}

        # carol's approval is active: her session and command are untouched.
        assert carol.poll() is None
        assert remote_commands(1202)
        assert not session_closed(world, carol_conn)
        # A second pass finds nothing more to end.
        again = enforce_once(world)
        assert again.returncode == 0, again.stderr
        assert "ended 0," in again.stdout
        assert carol.poll() is None
    finally:
        stop(alice, 1201)
        stop(carol, 1202)


def test_expired_session_is_ended(world):
    rid = world.request("alice", duration=6)
    world.approve(rid)
    proc = start_session(world, "alice", 1203)
    try:
        conn = open_session(world, rid, proc)
        wait_until(
            lambda: world.api("GET", f"/api/v1/requests/{rid}", "alice")["state"] == "expired",
            "the approval expired",
        )
        assert proc.poll() is None  # expiry-time stops new logins only
        result = enforce_once(world)
        assert result.returncode == 0, result.stderr
        proc.wait(timeout=WAIT)
        wait_until(lambda: not remote_commands(1203), "the remote command ended")
        wait_until(lambda: session_closed(world, conn), "session closed in the service")
        ends = [e["data"] for e in world.events("hook.enforce")]
        assert [(e["request_id"], e["reason"]) for e in ends if e["connection"] == conn] == [
            (rid, "expired")
        ]
    finally:
        stop(proc, 1203)


def test_service_down_ends_nothing(world):
    rid = world.request("alice")
    world.approve(rid)
    proc = start_session(world, "alice", 1204)
    try:
        conn = open_session(world, rid, proc)
        world.revoke(rid)
        world.box.configure(["http://127.0.0.1:9"], world.host_token, total_timeout=2.0)
        result = enforce_once(world)
        assert result.returncode == 1
        assert "no session ended" in result.stderr
        world.box.sink.wait_for(r"action=none reason=service_unavailable", ident=ENFORCE)
        assert proc.poll() is None
        assert remote_commands(1204)
        assert not session_closed(world, conn)
    finally:
        stop(proc, 1204)


def test_session_with_a_pty_is_warned_before_expiry(world):
    # 600 s: the pass right after the approval falls in the 10-minute mark's timer
    # period (sessions.warn_before, default 600 and 60 s): the user sees one line.
    rid = world.request("alice", duration=600)
    world.approve(rid)
    key = world.person("alice").key_path
    args = world.box.ssh_args(
        world.login, "-tt", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
    )  # fmt: skip
    proc = subprocess.Popen(
        [*args, "sleep 1205"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        conn = open_session(world, rid, proc)
        wait_until(lambda: remote_commands(1205), "the remote command runs")
        result = enforce_once(world)
        assert result.returncode == 0, result.stderr
        assert "ended 0," in result.stdout and "warned 1" in result.stdout
        os.set_blocking(proc.stdout.fileno(), False)
        seen = b""

        def warned() -> bool:
            nonlocal seen
            seen += proc.stdout.read() or b""
            return b"ends at" in seen and f"jit extend {rid} --for 30m".encode() in seen

        wait_until(warned, "the warning reached the user's terminal")
        assert proc.poll() is None  # warned, not ended
        world.box.sink.wait_for(rf"action=warn login={world.login} connection={conn}", ENFORCE)
    finally:
        stop(proc, 1205)


def test_the_sshd_listener_is_never_ended(world):
    """A connection id naming the sshd listener (not a per-connection monitor) is refused:
    ending it would drop every session, break-glass included, and the daemon itself."""
    rid = world.request("alice")
    world.approve(rid)
    alice = start_session(world, "alice", 1205)
    try:
        conn = open_session(world, rid, alice)
        listener = world.box.proc.pid
        listener_conn = f"{listener}:{procfs.stat(listener).start}"
        assert enforce.check_connection(conn) == "match"  # the real monitor
        assert enforce.check_connection(listener_conn) == "not_monitor"
        assert enforce.end_connection(listener_conn, grace=0.2) == "not_monitor"
        assert world.box.proc.poll() is None and alice.poll() is None
    finally:
        stop(alice, 1205)
