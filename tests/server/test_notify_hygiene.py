"""Request hygiene on a real service: one pending request per target, pending requests expire."""

from __future__ import annotations

from pathlib import Path

import pytest

from jit_hooks.server.errors import InvalidInput
from jit_hooks.server.policy import parse_policy
from jit_hooks.testing.receivers import WebhookReceiver
from tests.server.conftest import World
from tests.server.test_notify import SECRET, _config, _notified_world


def test_second_pending_request_is_refused_naming_the_first(world: World) -> None:
    status, first = world.request()
    assert status == 201, first
    status, out = world.request(reason="again")
    assert status == 409, out
    assert out["error"] == "conflict"
    assert f"request {first['id']} for host 'web1' as 'deploy' is already pending" in out["detail"]
    # Nothing half-written: still one request.
    assert world.svc.sql("SELECT count(*) FROM requests") == [(1,)]
    # Another person asking for the same target is another request.
    assert world.request(who="dave")[0] == 201
    # Once decided (here: cancelled) the same request may be made again.
    assert world.call("alice", "POST", f"/api/v1/requests/{first['id']}/cancel")[0] == 200
    assert world.request()[0] == 201


def test_pending_request_past_its_ttl_cannot_be_approved_and_is_swept(
    tmp_path: Path,
) -> None:
    hook = WebhookReceiver(secret=SECRET).start()
    w = _notified_world(tmp_path, _config(webhook=hook.url))
    try:
        status, req = w.request()
        assert status == 201, req
        rid = req["id"]
        hook.wait_for(lambda g: any(d.json["event"] == "request.created" for d in g))
        # A day and a bit ago (the default pending_ttl is 24 h): the clock is not ours
        # to move in a separate process, so the request's age is.
        w.svc.sql("UPDATE requests SET created_at = created_at - 90000 WHERE id = ?", (rid,))
        status, out = w.call("bob", "POST", f"/api/v1/requests/{rid}/approve", {"comment": "ok"})
        assert status == 409, out
        assert f"request {rid} expired while pending" in out["detail"]
        # The leader's sweep records it and tells the requester.
        got = hook.wait_for(lambda g: any(d.json["event"] == "request.pending_expired" for d in g))
        note = [d for d in got if d.json["event"] == "request.pending_expired"][0].json
        assert note["recipients"] == ["alice"] and note["request"]["id"] == rid
        assert w.svc.sql("SELECT state FROM requests WHERE id = ?", (rid,)) == [
            ("pending_expired",)
        ]
        kinds = [r[0] for r in w.svc.sql("SELECT kind FROM audit_events ORDER BY id")]
        assert "request.pending_expired" in kinds
        status, shown = w.call("alice", "GET", f"/api/v1/requests/{rid}")
        assert status == 200 and shown["state"] == "pending_expired"
        # No approval ever happened; a fresh request is allowed (no duplicate now).
        assert w.svc.sql("SELECT count(*) FROM reviews") == [(0,)]
        status, again = w.request()
        assert status == 201, again
        status, listed = w.call("bob", "GET", "/api/v1/requests?scope=review")
        assert [r["id"] for r in listed["requests"]] == [again["id"]]
    finally:
        w.svc.stop()
        hook.stop()


def test_pending_ttl_is_a_policy_option() -> None:
    base = {"name": "p", "hosts": ["web1"], "logins": ["deploy"]}
    assert parse_policy(base).pending_ttl == 24 * 3600
    assert parse_policy({**base, "pending_ttl": 3600}).to_dict()["pending_ttl"] == 3600
    with pytest.raises(InvalidInput, match="pending_ttl: must be between 60"):
        parse_policy({**base, "pending_ttl": 5})
