"""POST /api/v1/hook/account with open_session (the wiring without a session-open hook):
an allow records the session, bound to the approval and its owner; a deny records none."""

from __future__ import annotations

import json

from jit_hooks.testing.seed import basic_world

PATH = "/api/v1/hook/account"


def account(w, host: str, conn: str | None, *, fingerprint=None, open_session=True, login="deploy"):
    body = {"login": login, "connection": conn, "fingerprint": fingerprint}
    if open_session is not None:
        body["open_session"] = open_session
    return w.call(w.host_tokens[host], "POST", PATH, body)


def test_allow_opens_the_session_of_the_key_owner_and_enforce_lists_it(service, tmp_path):
    w = basic_world(service, tmp_path)
    rid = service.sqlite("SELECT id FROM requests WHERE state = 'approved'")[0][0]
    alice = w.keys["alice"].fingerprint
    status, answer = account(w, "web1", "100:1", fingerprint=alice)
    assert status == 200 and answer["decision"] == "allow", answer
    rows = service.sqlite(
        "SELECT s.connection, s.login, s.request_id, u.name, s.closed_at FROM sessions s "
        "JOIN users u ON u.id = s.user_id"
    )
    assert rows == [("100:1", "deploy", rid, "alice", None)]
    data = json.loads(
        service.sqlite("SELECT data FROM audit_events WHERE kind = 'hook.account'")[0][0]
    )
    assert data["session"] == "open" and data["connection"] == "100:1"
    # enforce sees it like a session the session hook opened, and ends it on revoke.
    status, listed = w.call(w.host_tokens["web1"], "GET", "/api/v1/hook/sessions")
    assert status == 200 and [s["connection"] for s in listed["active"]] == ["100:1"]
    # The close hook closes it.
    status, _ = w.call(
        w.host_tokens["web1"], "POST", "/api/v1/hook/session",
        {"event": "close", "login": "deploy", "connection": "100:1"},
    )  # fmt: skip
    assert status == 200
    assert service.sqlite("SELECT closed_at IS NOT NULL FROM sessions")[0][0] == 1


def test_deny_and_plain_account_calls_record_no_session(service, tmp_path):
    w = basic_world(service, tmp_path)
    alice = w.keys["alice"].fingerprint
    status, answer = account(w, "web2", "200:1", fingerprint=alice)  # no approval on web2
    assert status == 200 and answer["decision"] == "deny"
    status, answer = account(w, "web1", "201:1", fingerprint=alice, open_session=None)
    assert status == 200 and answer["decision"] == "allow"  # old hooks: no session
    status, answer = account(w, "web1", "202:1", fingerprint=alice, open_session=False)
    assert status == 200 and answer["decision"] == "allow"
    assert service.sqlite("SELECT COUNT(*) FROM sessions")[0][0] == 0


def test_open_session_needs_a_connection_and_a_boolean(service, tmp_path):
    w = basic_world(service, tmp_path)
    status, answer = account(w, "web1", None)
    assert status == 422 and "open_session needs a connection id" in json.dumps(answer)
    status, answer = account(w, "web1", "1:1", open_session="yes")
    assert status == 422 and "open_session" in json.dumps(answer)
    assert service.sqlite("SELECT COUNT(*) FROM sessions")[0][0] == 0
