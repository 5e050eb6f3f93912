"""Cancelling a pending request past its TTL that the sweep has not recorded yet.

Review L2 (session 5): such a request was cancelled (200, ``request.cancelled``)
although approve and deny already treat it as expired. Now cancel answers what
they answer (409, "expired while pending") and records the expiry as the
leader's sweep would (state ``pending_expired``, ``request.pending_expired`` in
the audit chain), in the one transaction. Real service over HTTP, real `jit`.

The services here run no notification worker, so nothing sweeps: the request
stays ``pending`` in the database until the cancel (each test checks that).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.server.conftest import World

R = "/api/v1/requests"
EXPIRED = "expired while pending"


def _aged_request(w: World) -> int:
    status, req = w.request()
    assert status == 201, req
    rid = req["id"]
    # A day and a bit ago (the default pending_ttl is 24 h): the clock is the service
    # process's own, so the request's age is what moves.
    w.svc.sql("UPDATE requests SET created_at = created_at - 90000 WHERE id = ?", (rid,))
    assert w.svc.sql("SELECT state FROM requests WHERE id = ?", (rid,)) == [("pending",)]
    return rid


def _kinds(w: World, rid: int) -> list[str]:
    rows = w.svc.sql("SELECT kind, data FROM audit_events ORDER BY id")
    return [kind for kind, data in rows if json.loads(data).get("request_id") == rid]


def test_api_cancel_of_an_unswept_expired_request_is_409_and_records_the_expiry(world: World):
    w = world
    rid = _aged_request(w)
    status, out = w.call("alice", "POST", f"{R}/{rid}/cancel")
    assert status == 409, out
    assert out["error"] == "conflict" and f"request {rid} {EXPIRED}" in out["detail"]
    # Recorded as the sweep records it, and committed although the answer is an error.
    [(state, closed_at)] = w.svc.sql("SELECT state, closed_at FROM requests WHERE id = ?", (rid,))
    assert state == "pending_expired" and closed_at is not None
    assert _kinds(w, rid) == ["request.created", "request.pending_expired"]
    actor = w.svc.sql("SELECT actor FROM audit_events WHERE kind = 'request.pending_expired'")
    assert actor == [(None,)]  # the sweep's record: nobody did it
    status, shown = w.call("alice", "GET", f"{R}/{rid}")
    assert (status, shown["state"]) == (200, "pending_expired")
    # Asked again (now swept): the same answer, nothing more recorded.
    status, out = w.call("alice", "POST", f"{R}/{rid}/cancel")
    assert status == 409 and f"request {rid} {EXPIRED}" in out["detail"]
    status, out = w.call("bob", "POST", f"{R}/{rid}/approve", {"comment": "late"})
    assert status == 409 and f"request {rid} {EXPIRED}" in out["detail"]
    assert _kinds(w, rid) == ["request.created", "request.pending_expired"]
    assert w.svc.sql("SELECT count(*) FROM reviews") == [(0,)]
    # The chain still verifies, and the requester may ask again (nothing pending).
    w.svc.admin("audit", "verify")
    assert w.request()[0] == 201


def test_cancel_by_someone_else_is_refused_before_anything_is_recorded(world: World):
    w = world
    rid = _aged_request(w)
    assert w.call("bob", "POST", f"{R}/{rid}/cancel")[0] == 403
    assert w.svc.sql("SELECT state FROM requests WHERE id = ?", (rid,)) == [("pending",)]
    assert _kinds(w, rid) == ["request.created"]


def test_jit_cancel_of_an_unswept_expired_request_fails_in_one_line(world: World, tmp_path: Path):
    w = world
    rid = _aged_request(w)
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}

    def jit(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "jit_hooks.cli.jit", *args]
        return subprocess.run(cmd, capture_output=True, text=True, input=input, env=env, timeout=60)

    r = jit("login", "--url", w.svc.url, "--token-stdin", input=w.tokens["alice"] + "\n")
    assert r.returncode == 0, r.stderr
    r = jit("cancel", str(rid))
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("jit: error: ") and "409" in lines[0] and EXPIRED in lines[0]
    assert w.svc.sql("SELECT state FROM requests WHERE id = ?", (rid,)) == [("pending_expired",)]
    assert _kinds(w, rid) == ["request.created", "request.pending_expired"]


def test_web_page_cancel_of_an_unswept_expired_request_shows_the_409(world: World):
    from tests.ui.conftest import Browserless

    w = world
    rid = _aged_request(w)
    alice = Browserless(w.svc)
    alice.sign_in(w.tokens["alice"])
    r = alice.post(f"/ui/requests/{rid}/cancel", {"csrf": alice.csrf()})
    assert r.status_code == 409 and EXPIRED in r.text
    assert w.svc.sql("SELECT state FROM requests WHERE id = ?", (rid,)) == [("pending_expired",)]
    assert _kinds(w, rid) == ["request.created", "request.pending_expired"]


def test_the_expiry_is_announced_once_whether_cancel_or_the_sweep_records_it(tmp_path: Path):
    """With notifications on, the leader's sweep runs too: whichever of the two records
    the expiry first, there is one request.pending_expired record and one notice to the
    requester, and the cancel is a 409 either way."""
    from jit_hooks.testing.receivers import WebhookReceiver
    from tests.server.test_notify import SECRET, _config, _notified_world

    hook = WebhookReceiver(secret=SECRET).start()
    w = _notified_world(tmp_path, _config(webhook=hook.url))
    try:
        rid = _aged_request(w)
        status, out = w.call("alice", "POST", f"{R}/{rid}/cancel")
        assert status == 409 and f"request {rid} {EXPIRED}" in out["detail"]
        got = hook.wait_for(lambda g: any(d.json["event"] == "request.pending_expired" for d in g))
        notes = [d.json for d in got if d.json["event"] == "request.pending_expired"]
        assert len(notes) == 1 and notes[0]["recipients"] == ["alice"], notes
        # Queued once (one channel), in the transaction that stored the state.
        queued = w.svc.sql(
            "SELECT count(*) FROM notify_outbox WHERE request_id = ? AND event = ?",
            (rid, "request.pending_expired"),
        )
        assert queued == [(1,)]
        assert _kinds(w, rid) == ["request.created", "request.pending_expired"]
        assert "request.cancelled" not in _kinds(w, rid)
    finally:
        w.svc.stop()
        hook.stop()
