"""API behaviour over real HTTP against a real service process and SQLite file."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from tests.server.conftest import make_key

R = "/api/v1/requests"


def _raw(svc, method, path, data, token=None, headers=None):  # noqa: ANN001
    req = urllib.request.Request(svc.url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# -- errors: every client error is a 4xx with a JSON body naming what is wrong --------


@pytest.mark.parametrize(
    "change, status, field",
    [
        ({"duration_seconds": "abc"}, 422, "duration_seconds"),
        ({"duration_seconds": 0}, 422, "duration_seconds"),
        ({"duration_seconds": 99999}, 422, "duration_seconds"),  # over the policy's max
        ({"login": "Bad Login"}, 422, "login"),
        ({"reason": ""}, 422, "reason"),  # policy requires one
        ({"reason": "bell\x07"}, 422, "reason"),
        ({"start": 1}, 422, "start"),  # in the past
        ({"surprise": 1}, 422, "surprise"),
        ({"selector": {"env": "prod"}}, 422, "body"),  # both host and selector
        ({"login": "root"}, 403, None),  # policy does not allow this login
        ({"host": "nope"}, 404, None),
    ],
)
def test_bad_requests_are_refused_with_a_named_field(shared_world, change, status, field):
    code, body = shared_world.request(**change)
    assert code == status, body
    assert body["error"] and body["detail"]
    assert body["field"] == field


def test_malformed_bodies(shared_world):
    svc, token = shared_world.svc, shared_world.tokens["alice"]
    assert _raw(svc, "POST", R, b"{bad", token) == (
        400,
        {"error": "malformed_json", "detail": "request body is not valid JSON", "field": "body"},
    )
    code, body = _raw(svc, "POST", R, b"[]", token)
    assert (code, body["field"]) == (422, "body")
    code, body = _raw(svc, "POST", R, b"x" * (64 * 1024 + 1), token)
    assert (code, body["error"]) == (413, "payload_too_large")
    code, body = _raw(svc, "GET", f"{R}/99999999999999999999999", None, token)
    assert (code, body["field"]) == (422, "request_id")


def test_authentication_and_roles(shared_world):
    w = shared_world
    assert w.call(None, "GET", "/api/v1/me")[0] == 401
    status, body = w.svc.call("GET", "/api/v1/me", token="jitu_not-a-token")
    assert (status, body["error"]) == (401, "unauthorized")
    assert w.call("alice", "GET", "/api/v1/me")[1]["name"] == "alice"
    # Host tokens only reach hooks; user tokens never reach hooks.
    assert w.call("web1", "GET", "/api/v1/me")[0] == 403
    assert w.call("alice", "GET", "/api/v1/hook/ping")[0] == 403
    # Audit needs admin; scope=all needs admin.
    assert w.call("alice", "GET", "/api/v1/audit")[0] == 403
    assert w.call("alice", "GET", f"{R}?scope=all")[0] == 403
    assert w.call("root-admin", "GET", f"{R}?scope=all")[0] == 200
    assert w.call("alice", "GET", f"{R}?scope=bogus")[0] == 422
    assert w.call("alice", "GET", "/api/v1/no-such-thing")[0] == 404


def test_no_policy_means_no_access(shared_world):
    w = shared_world
    w.svc.admin("host", "add", "lonely", "--label", "env=dev")
    code, body = w.request(host="lonely")
    assert code == 403, body
    assert "no policy" in body["detail"]


def test_keys(shared_world, tmp_path):
    w = shared_world
    key = make_key(tmp_path, "carol")
    code, k = w.call("carol", "POST", "/api/v1/keys", {"public_key": key.line})
    assert code == 201
    assert (k["fingerprint"], k["comment"]) == (key.fingerprint, "carol@test")
    # The same fingerprint can't be registered again, by anyone.
    assert w.call("alice", "POST", "/api/v1/keys", {"public_key": key.line})[0] == 409
    code, body = w.call("carol", "POST", "/api/v1/keys", {"public_key": "ssh-rsa AAAAB3NzaC1yc2E="})
    assert (code, body["field"]) == (422, "public_key")
    assert [x["id"] for x in w.call("carol", "GET", "/api/v1/keys")[1]["keys"]] == [k["id"]]
    # Someone else's key id is unknown to you.
    assert w.call("alice", "DELETE", f"/api/v1/keys/{k['id']}")[0] == 404
    assert w.call("carol", "DELETE", f"/api/v1/keys/{k['id']}")[0] == 204
    assert w.call("carol", "GET", "/api/v1/keys")[1]["keys"] == []


def test_listing_show_deny_cancel(shared_world):
    w = shared_world
    _, a = w.request(reason="to be denied")
    # dave: one person has one pending request per host and login (a second is a 409).
    _, b = w.request("dave", reason="to be cancelled")
    review = [r["id"] for r in w.call("bob", "GET", f"{R}?scope=review")[1]["requests"]]
    assert a["id"] in review and b["id"] in review
    # alice can't review her own; the requester's "review" list excludes her requests
    assert a["id"] not in [
        r["id"] for r in w.call("alice", "GET", f"{R}?scope=review")[1]["requests"]
    ]
    # a non-approver, non-requester can't see it at all
    assert w.call("dave", "GET", f"{R}/{a['id']}")[0] == 404
    assert w.call("bob", "GET", f"{R}/{a['id']}")[1]["reason"] == "to be denied"

    # An admin sees everything but is not an approver under this policy.
    code, body = w.call("root-admin", "POST", f"{R}/{a['id']}/approve", {})
    assert code == 403 and "not an approver" in body["detail"]
    code, denied = w.call("carol", "POST", f"{R}/{a['id']}/deny", {"comment": "no ticket"})
    assert (code, denied["state"]) == (200, "denied")
    assert denied["reviews"][0]["reviewer"] == "carol"
    assert w.call("bob", "POST", f"{R}/{a['id']}/approve", {})[0] == 409

    assert w.call("bob", "POST", f"{R}/{b['id']}/cancel")[0] == 403
    code, cancelled = w.call("dave", "POST", f"{R}/{b['id']}/cancel")
    assert (code, cancelled["state"]) == (200, "cancelled")
    assert w.call("dave", "POST", f"{R}/{b['id']}/cancel")[0] == 409

    mine = w.call("alice", "GET", f"{R}?scope=mine&state=denied")[1]["requests"]
    assert [r["id"] for r in mine] == [a["id"]]
    assert w.call("alice", "GET", f"{R}?state=bogus")[0] == 422


def test_hooks_only_know_their_own_host(world):
    """web2's token learns nothing about an approval for web1, and vice versa."""
    w = world
    _, req = w.request()
    assert w.call("bob", "POST", f"{R}/{req['id']}/approve")[1]["state"] == "approved"
    assert len(w.akc("web1", "alice")[1]["keys"]) == 1
    assert w.akc("web2", "alice")[1]["keys"] == []
    acct = {
        "login": "deploy",
        "rhost": None,
        "service": "sshd",
        "connection": None,
        "fingerprint": None,
    }
    assert w.call("web1", "POST", "/api/v1/hook/account", acct)[1]["decision"] == "allow"
    assert w.call("web2", "POST", "/api/v1/hook/account", acct)[1]["decision"] == "deny"
    # mallory's key does not ride on alice's approval
    assert w.akc("web1", "mallory")[1]["keys"] == []
    acct["fingerprint"] = w.keys["mallory"].fingerprint
    assert w.call("web1", "POST", "/api/v1/hook/account", acct)[1]["decision"] == "deny"
    # An offered key that doesn't match its claimed fingerprint gets nothing.
    k = w.keys["alice"]
    body = {
        "login": "deploy",
        "fingerprint": w.keys["mallory"].fingerprint,
        "key_type": k.key_type,
        "key": k.blob,
    }
    assert w.call("web1", "POST", "/api/v1/hook/authorized-keys", body)[1]["keys"] == []


def test_disabled_user_and_host_token_lifecycle(world):
    w = world
    _, req = w.request()
    w.call("bob", "POST", f"{R}/{req['id']}/approve")
    assert len(w.akc("web1", "alice")[1]["keys"]) == 1

    old = w.host_tokens["web1"]
    w.host_tokens["web1"] = w.svc.admin("host", "rotate-token", "web1", "--grace", "0").strip()
    assert w.svc.call("GET", "/api/v1/hook/ping", token=old)[0] == 401
    assert w.call("web1", "GET", "/api/v1/hook/ping")[1]["host"] == "web1"

    w.svc.admin("user", "disable", "alice")
    assert w.call("alice", "GET", "/api/v1/me")[0] == 401
    assert w.akc("web1", "alice")[1]["keys"] == []  # approvals of a disabled user grant nothing

    w.svc.admin("host", "remove", "web1")
    assert w.call("web1", "GET", "/api/v1/hook/ping")[0] == 401


def test_sessions_are_recorded(world):
    w = world
    _, req = w.request()
    w.call("bob", "POST", f"{R}/{req['id']}/approve")
    k = w.keys["alice"]
    body = {
        "event": "open",
        "login": "deploy",
        "rhost": "10.0.0.9",
        "connection": "4242:99",
        "key_type": k.key_type,
        "key": k.blob,
        "fingerprint": k.fingerprint,
    }
    code, ans = w.call("web1", "POST", "/api/v1/hook/session", body)
    assert (code, ans["decision"], ans["request_id"]) == (200, "allow", req["id"])
    code, ans = w.call("web1", "POST", "/api/v1/hook/session", body | {"event": "close"})
    assert ans["decision"] == "allow"
    rows = w.svc.sqlite(
        "SELECT login, connection, request_id, opened_at IS NOT NULL, closed_at IS NOT NULL"
        " FROM sessions"
    )
    assert rows == [("deploy", "4242:99", req["id"], 1, 1)]
    # mallory's key can't open a session on alice's approval
    m = w.keys["mallory"]
    code, ans = w.call(
        "web1",
        "POST",
        "/api/v1/hook/session",
        body | {"key_type": m.key_type, "key": m.blob, "fingerprint": None},
    )
    assert ans["decision"] == "deny"
    kinds = [
        e["kind"] for e in w.call("root-admin", "GET", "/api/v1/audit?limit=1000")[1]["events"]
    ]
    assert kinds.count("hook.session") == 3


def test_racing_approvals_make_one_transition(world):
    """Two approvers at once on a one-approval request: one 200, one 409, one transition."""
    w = world

    def approve(who, rid, barrier, results):  # noqa: ANN001
        barrier.wait()
        results.append(w.call(who, "POST", f"{R}/{rid}/approve", {}))

    for _ in range(3):
        _, req = w.request()
        results: list = []
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(target=approve, args=(who, req["id"], barrier, results))
            for who in ("bob", "carol")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(code for code, _ in results) == [200, 409]
        events = w.call("root-admin", "GET", "/api/v1/audit?limit=1000")[1]["events"]
        approved = [
            e
            for e in events
            if e["kind"] == "request.approved" and e["data"]["request_id"] == req["id"]
        ]
        assert len(approved) == 1
        w.call("bob", "POST", f"{R}/{req['id']}/revoke", {})


def test_selector_and_auto_approve(world):
    w = world
    w.add_host("stg1", "env=staging")
    w.add_host("stg2", "env=staging", "team=db")
    w.policy("""
        [[policy]]
        name = "staging"
        labels = { env = "staging" }
        logins = ["deploy"]
        requesters = { roles = ["requester"] }
        auto_approve = true
        approvals_required = 0
        max_duration = 3600
        reason_required = false
    """)
    code, req = w.request(host=None, selector={"env": "staging"}, reason="")
    assert (code, req["state"], req["policy"]) == (201, "approved", "staging")
    assert req["starts_at"] == req["decided_at"]
    assert len(w.akc("stg1", "alice")[1]["keys"]) == 1
    assert len(w.akc("stg2", "alice")[1]["keys"]) == 1
    assert w.akc("web1", "alice")[1]["keys"] == []


def test_health_openapi_metrics(shared_world):
    svc = shared_world.svc
    assert svc.call("GET", "/healthz") == (200, {"status": "ok"})
    code, spec = svc.call("GET", "/openapi.json")
    assert code == 200 and "/api/v1/hook/authorized-keys" in spec["paths"]
    with urllib.request.urlopen(svc.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'jit_http_responses_total{method="GET",route="/healthz",status="200"}' in text


def _metric(svc, prefix: str) -> float:  # noqa: ANN001
    with urllib.request.urlopen(svc.url + "/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(prefix))


def test_authorized_keys_calls_are_not_counted_as_logins(shared_world):
    w = shared_world
    logins = 'jit_logins_total{decision="deny"}'
    akc = 'jit_hook_decisions_total{decision="deny",hook="authorized_keys"}'
    before_logins, before_akc = _metric(w.svc, logins), _metric(w.svc, akc)
    for _ in range(3):  # sshd asks twice per login, and once per other offered key
        assert w.akc("web2", "alice")[1]["keys"] == []
    assert _metric(w.svc, logins) == before_logins
    assert _metric(w.svc, akc) == before_akc + 3
    acct = {
        "login": "deploy",
        "rhost": None,
        "service": "sshd",
        "connection": None,
        "fingerprint": w.keys["alice"].fingerprint,
    }
    assert w.call("web2", "POST", "/api/v1/hook/account", acct)[1]["decision"] == "deny"
    assert _metric(w.svc, logins) == before_logins + 1
