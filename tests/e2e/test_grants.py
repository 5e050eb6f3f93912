"""Extend and drop through a real sshd, PAM, service and `jit-hooks enforce`.

An extension moves the same grant's end: a live session survives an enforce
pass past the old end's approval state, and the next login's key line carries
the new expiry. A dropped grant refuses the next login, and enforce ends its
live session like a revoked one.
"""

from __future__ import annotations

import pytest

from tests.e2e.test_enforce import (
    enforce_once,
    open_session,
    remote_commands,
    session_closed,
    start_session,
    stop,
    wait_until,
)
from tests.e2e.test_login import AKC, assert_denied, assert_in

R = "/api/v1/requests"


@pytest.fixture
def extendable(world):
    world.put_policy("max_extension = 3600\nextension_approvals = 1\n")
    try:
        yield world
    finally:
        world.put_policy()


def test_extension_keeps_the_live_session_and_moves_the_key_expiry(extendable):
    world = extendable
    rid = world.request("alice", duration=600)
    ends = world.approve(rid)["ends_at"]
    proc = start_session(world, "alice", 1211)
    try:
        conn = open_session(world, rid, proc)
        ext = {"duration_seconds": 1800, "reason": "still fixing"}
        req = world.api("POST", f"{R}/{rid}/extend", "alice", ext)
        assert req["extension"]["state"] == "pending" and req["ends_at"] == ends
        req = world.approve(rid)  # bob approves the extension with the usual command
        assert (req["id"], req["ends_at"]) == (rid, ends + 1800)

        # The session lives on: enforce finds nothing to end, the command still runs.
        result = enforce_once(world)
        assert result.returncode == 0 and "ended 0," in result.stdout, result
        assert proc.poll() is None and remote_commands(1211)
        assert not session_closed(world, conn)
        # A new login: the key line the AKC prints carries the new end.
        world.box.sink.clear()
        assert_in(world.ssh("alice", "echo ran-ok $(id -un)"), world.login)
        world.box.sink.wait_for(rf"decision=allow .*request={rid} expires={ends + 1800}", ident=AKC)
    finally:
        stop(proc, 1211)


def test_drop_refuses_the_next_login_and_enforce_ends_the_session(world):
    rid = world.request("alice")
    world.approve(rid)
    proc = start_session(world, "alice", 1212)
    try:
        conn = open_session(world, rid, proc)
        wait_until(lambda: remote_commands(1212), "alice's remote command runs")
        assert world.api("POST", f"{R}/{rid}/drop", "alice")["state"] == "dropped"
        assert_denied(world.ssh("alice", "echo ran-ok $(id -un)"))

        result = enforce_once(world)
        assert result.returncode == 0 and "ended 1," in result.stdout, result
        proc.wait(timeout=30)
        wait_until(lambda: not remote_commands(1212), "alice's remote command ended")
        wait_until(lambda: session_closed(world, conn), "session closed in the service")
        [drop] = world.events("request.dropped")
        assert drop["actor"] == "alice" and drop["data"]["request_id"] == rid
        ends = [e["data"] for e in world.events("hook.enforce") if e["data"]["request_id"] == rid]
        assert [(e["connection"], e["reason"]) for e in ends] == [(conn, "revoked")]
    finally:
        stop(proc, 1212)
