"""GET /api/v1/hook/sessions on the real service: which open sessions a host must end, and why."""

from __future__ import annotations

import json

from jit_hooks.testing.seed import basic_world

PATH = "/api/v1/hook/sessions"


def open_session(w, host: str, conn: str) -> None:
    alice = w.keys["alice"]
    status, answer = w.call(
        w.host_tokens[host],
        "POST",
        "/api/v1/hook/session",
        {"event": "open", "login": "deploy", "connection": conn, "key_type": alice.key_type,
         "key": alice.blob},
    )  # fmt: skip
    assert status == 200, answer
    assert answer["decision"] == ("allow" if host == "web1" else "deny")


def test_sessions_listing_reasons_and_close(service, tmp_path):
    w = basic_world(service, tmp_path)
    rid = service.sqlite("SELECT id FROM requests WHERE state = 'approved'")[0][0]
    ends_at = service.sqlite("SELECT ends_at FROM requests WHERE id = ?", (rid,))[0][0]
    open_session(w, "web1", "100:1")
    open_session(w, "web1", "101:1")
    open_session(w, "web2", "200:1")  # denied on web2 (no approval there): not recorded

    status, answer = w.call(w.host_tokens["web1"], "GET", PATH)
    assert status == 200
    assert answer["end"] == []
    assert answer["active"] == [
        {"connection": c, "login": "deploy", "request_id": rid, "expires_at": ends_at}
        for c in ("100:1", "101:1")
    ]
    status, other = w.call(w.host_tokens["web2"], "GET", PATH)
    assert status == 200 and other["end"] == [] and other["active"] == []

    service.admin("user", "disable", "alice")
    status, answer = w.call(w.host_tokens["web1"], "GET", PATH)
    assert status == 200
    assert answer["active"] == []
    fp = w.keys["alice"].fingerprint  # the session's key: the host's next-login notice
    assert answer["end"] == [
        {"connection": c, "login": "deploy", "request_id": rid, "reason": "user_disabled",
         "fingerprint": fp}
        for c in ("100:1", "101:1")
    ]  # fmt: skip
    query = "SELECT actor, host, data FROM audit_events WHERE kind = 'hook.enforce'"
    events = service.sqlite(query)
    assert [(a, h, json.loads(d)["reason"]) for a, h, d in events] == [
        ("alice", "web1", "user_disabled")
    ] * 2

    # The host reports one ended session: it leaves the list.
    status, _ = w.call(
        w.host_tokens["web1"],
        "POST",
        "/api/v1/hook/session",
        {"event": "close", "login": "deploy", "connection": "100:1"},
    )
    assert status == 200
    status, answer = w.call(w.host_tokens["web1"], "GET", PATH)
    assert [s["connection"] for s in answer["end"]] == ["101:1"]
    # Host web2 never learns about web1's sessions.
    status, other = w.call(w.host_tokens["web2"], "GET", PATH)
    assert other["end"] == [] and other["active"] == []


def test_revoked_before_expired_reasons(service, tmp_path):
    w = basic_world(service, tmp_path)
    rid = service.sqlite("SELECT id FROM requests WHERE state = 'approved'")[0][0]
    open_session(w, "web1", "300:1")
    status, _ = w.call(w.tokens["bob"], "POST", f"/api/v1/requests/{rid}/revoke", {})
    assert status == 200
    status, answer = w.call(w.host_tokens["web1"], "GET", PATH)
    assert [s["reason"] for s in answer["end"]] == ["revoked"]
    # An approval whose window has passed is "expired" (tamper the end into the past).
    rid2 = w.approve("bob", w.request("alice")["id"])["id"]
    open_session(w, "web1", "301:1")
    service.sqlite("UPDATE requests SET ends_at = 1000000000 WHERE id = ?", (rid2,))
    status, answer = w.call(w.host_tokens["web1"], "GET", PATH)
    assert {s["connection"]: s["reason"] for s in answer["end"]} == {
        "300:1": "revoked",
        "301:1": "expired",
    }


def test_user_token_and_no_token_are_refused(service, tmp_path):
    w = basic_world(service, tmp_path)
    assert w.call(w.tokens["alice"], "GET", PATH)[0] == 403
    status, body = w.call(None, "GET", PATH)
    assert status == 401 and body["error"] == "unauthorized"
