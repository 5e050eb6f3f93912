"""Vertical slice over real HTTP: request, approve, hooks allow; revoke, hooks deny."""

from __future__ import annotations


def test_request_approve_hooks_revoke(world):
    status, req = world.request()
    assert status == 201, req
    assert req["state"] == "pending" and req["starts_at"] is None
    assert world.akc("web1", "alice")[1]["keys"] == []

    status, req = world.call(
        "bob", "POST", f"/api/v1/requests/{req['id']}/approve", {"comment": "ok"}
    )
    assert status == 200, req
    assert req["state"] == "approved"
    assert req["ends_at"] - req["starts_at"] == 600

    status, ans = world.akc("web1", "alice")
    assert status == 200
    [key] = ans["keys"]
    assert key["fingerprint"] == world.keys["alice"].fingerprint
    assert key["key"] == world.keys["alice"].blob
    assert key["expires_at"] == req["ends_at"]
    assert key["options"] == ["no-agent-forwarding", "no-port-forwarding"]
    # Another host (same labels) and another login get nothing.
    assert world.akc("web2", "alice")[1]["keys"] == []
    assert world.akc("web1", "alice", login="root")[1]["keys"] == []

    acct = {
        "login": "deploy",
        "rhost": "127.0.0.1",
        "service": "sshd",
        "connection": "12:34",
        "fingerprint": world.keys["alice"].fingerprint,
    }
    status, ans = world.call("web1", "POST", "/api/v1/hook/account", acct)
    assert (status, ans["decision"], ans["request_id"]) == (200, "allow", req["id"])
    sess = {
        "event": "open",
        "login": "deploy",
        "rhost": "127.0.0.1",
        "connection": "12:34",
        "key_type": world.keys["alice"].key_type,
        "key": world.keys["alice"].blob,
        "fingerprint": None,
    }
    assert world.call("web1", "POST", "/api/v1/hook/session", sess)[1]["decision"] == "allow"
    assert world.call("web1", "GET", "/api/v1/hook/ping")[1]["host"] == "web1"

    status, req = world.call("bob", "POST", f"/api/v1/requests/{req['id']}/revoke", {})
    assert (status, req["state"]) == (200, "revoked")
    assert world.akc("web1", "alice")[1]["keys"] == []
    status, ans = world.call("web1", "POST", "/api/v1/hook/account", acct)
    assert ans["decision"] == "deny" and ans["reason"].isascii()
    status, ans = world.call(
        "web1",
        "POST",
        "/api/v1/hook/break-glass",
        {"login": "root", "rhost": None, "connection": None, "stage": "account"},
    )
    assert (status, ans["recorded"], ans["host"], ans["login"]) == (200, True, "web1", "root")
