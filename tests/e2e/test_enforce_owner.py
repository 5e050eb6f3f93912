"""`jit-hooks enforce` ends only the session of the login the service names, never break-glass.

A compromised service (here: one row written straight into its database, as an
attacker holding the service or its database could) lists a live connection
under a revoked request. The host reads the connection's user from /proc and
refuses unless it is that request's login and not a break-glass account: the
session survives and the refusal is logged at alert (review M1).
"""

from __future__ import annotations

import subprocess
import time

from jit_hooks.host import procfs
from jit_hooks.host.admin import enforce
from tests.e2e.test_enforce import (
    ENFORCE,
    WAIT,
    enforce_once,
    open_session,
    remote_commands,
    start_session,
    stop,
    wait_until,
)


def _monitor_of(pid: int) -> str:
    """The connection id of the sshd monitor above ``pid`` (its parent is the listener)."""
    while True:
        st = procfs.stat(pid)
        assert st is not None
        if b"[listener]" in procfs.cmdline(st.ppid):
            return f"{pid}:{procfs.start_time(pid)}"
        pid = st.ppid


def _plant(world, rid: int, login: str, conn: str) -> None:
    """What a compromised service does: list ``conn`` as a session of request ``rid``."""
    host_id = world.svc.sql("SELECT id FROM hosts WHERE name = 'web1'")[0][0]
    world.svc.sql(
        "INSERT INTO sessions (host_id, login, user_id, request_id, connection, opened_at)"
        " VALUES (?, ?, NULL, ?, ?, ?)",
        (host_id, login, rid, conn, int(time.time())),
    )


def _revoked(world, who: str = "alice") -> int:
    rid = world.request(who)
    world.approve(rid)
    world.revoke(rid)
    return rid


def _session(world, login: str, key_path, seconds: int) -> subprocess.Popen:
    """A live ssh session as ``login`` with the key at ``key_path``, running sleep ``seconds``."""
    args = world.box.ssh_args(
        login, "-i", str(key_path), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "PasswordAuthentication=no",
    )  # fmt: skip
    return subprocess.Popen(
        [*args, f"sleep {seconds}"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )


def _assert_refused(world, proc, seconds: int, *, conn: str, rid: int, reason: str) -> None:
    """An enforce pass refuses to end ``conn`` (listed under revoked ``rid``) for
    ``reason``, logs so, and the session running sleep ``seconds`` lives on."""
    result = enforce_once(world)
    assert result.returncode == 0, result.stderr
    world.box.sink.wait_for(
        rf"action=refused login={world.login} connection={conn} request={rid} "
        rf"why=revoked reason={reason}",
        ident=ENFORCE,
    )
    assert proc.poll() is None
    assert remote_commands(seconds)


def test_break_glass_session_is_never_ended(world):
    proc = _session(world, world.box.bg_login, world.box.people["breakglass"].key_path, 1431)
    try:
        pid = wait_until(lambda: remote_commands(1431), "break-glass command runs")[0]
        conn = _monitor_of(pid)
        assert enforce.session_login(conn) == world.box.bg_login
        rid = _revoked(world)
        _plant(world, rid, world.login, conn)

        _assert_refused(world, proc, 1431, conn=conn, rid=rid, reason="pid_is_break_glass")
    finally:
        stop(proc, 1431)


def test_session_of_another_login_is_never_ended(world):
    # carol holds a live session as the other login; the service lists it under
    # alice's revoked request for world.login.
    carol_rid = world.request("carol", login=world.box.other_login)
    world.approve(carol_rid)
    carol = _session(world, world.box.other_login, world.person("carol").key_path, 1432)
    alice = None
    try:
        conn = open_session(world, carol_rid, carol)
        wait_until(lambda: remote_commands(1432), "carol's command runs")
        assert enforce.session_login(conn) == world.box.other_login
        rid = _revoked(world)
        _plant(world, rid, world.login, conn)

        _assert_refused(world, carol, 1432, conn=conn, rid=rid, reason="pid_is_other_login")

        # The same run still ends a session that is really the named login's.
        alice_rid = world.request("alice")
        world.approve(alice_rid)
        alice = start_session(world, "alice", 1433)
        open_session(world, alice_rid, alice)
        world.revoke(alice_rid)
        result = enforce_once(world)
        assert result.returncode == 0, result.stderr
        alice.wait(timeout=WAIT)
        wait_until(lambda: not remote_commands(1433), "alice's remote command ended")
        assert carol.poll() is None
    finally:
        stop(carol, 1432)
        if alice is not None:
            stop(alice, 1433)
