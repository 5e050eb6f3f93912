"""Grants after approval on a real service: extend (auto and reviewed), drop, pinned sources.

Each step is checked through what a host sees (the hook answers, the sessions
endpoint) and through the audit log, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import tomllib

from tests.server.conftest import POLICY, Admin, World

R = "/api/v1/requests"
ACCOUNT = "/api/v1/hook/account"
SESSION = "/api/v1/hook/session"


def set_policy(w: World, approvals: int = 1, **extra: object) -> None:
    """Replace web-prod (web1, login deploy) with ``extra`` options added."""
    from jit_hooks.server import store
    from jit_hooks.server.policy import parse_policy

    spec = tomllib.loads(POLICY.format(n=approvals))["policy"][0]
    spec.update(extra)
    admin = Admin(w.svc)
    try:
        admin(store.put_policy, policy=parse_policy(spec))
    finally:
        admin.close()


def approved(w: World, **kw: object) -> dict:
    code, req = w.request(**kw)
    assert code == 201, req
    code, req = w.call("bob", "POST", f"{R}/{req['id']}/approve", {})
    assert (code, req["state"]) == (200, "approved"), req
    return req


def kinds(w: World) -> list[str]:
    return [e["kind"] for e in w.call("root-admin", "GET", "/api/v1/audit?limit=1000")[1]["events"]]


def open_session(w: World, conn: str = "11:11") -> dict:
    k = w.keys["alice"]
    body = {
        "event": "open",
        "login": "deploy",
        "rhost": "127.0.0.1",
        "connection": conn,
        "key_type": k.key_type,
        "key": k.blob,
        "fingerprint": k.fingerprint,
    }
    code, ans = w.call("web1", "POST", SESSION, body)
    assert code == 200, ans
    return ans


def test_extend_needs_a_review_then_moves_the_same_grants_end(world):
    w = world
    set_policy(w, max_extension=1800, extension_approvals=1)
    req = approved(w)
    rid, ends = req["id"], req["ends_at"]
    open_session(w)

    # Nobody but the requester extends; beyond max_extension is refused, naming the field.
    assert w.call("dave", "POST", f"{R}/{rid}/extend", {"duration_seconds": 60})[0] == 404
    code, body = w.call("bob", "POST", f"{R}/{rid}/extend", {"duration_seconds": 60})
    assert code == 403 and "requester" in body["detail"]
    code, body = w.call(
        "alice", "POST", f"{R}/{rid}/extend", {"duration_seconds": 1801, "reason": "more"}
    )
    assert code == 422 and body["field"] == "duration_seconds"
    code, body = w.call("alice", "POST", f"{R}/{rid}/extend", {"duration_seconds": 900})
    assert code == 422 and body["field"] == "reason"  # the policy requires reasons

    code, req = w.call(
        "alice", "POST", f"{R}/{rid}/extend", {"duration_seconds": 900, "reason": "INC-1 still"}
    )
    assert code == 200 and req["state"] == "approved" and req["ends_at"] == ends
    assert req["extension"]["state"] == "pending" and req["extension"]["seconds"] == 900
    # One pending extension at a time.
    assert (
        w.call("alice", "POST", f"{R}/{rid}/extend", {"duration_seconds": 60, "reason": "x"})[0]
        == 409
    )
    # Approvers see it in their review list; the requester cannot approve it.
    review = w.call("carol", "GET", f"{R}?scope=review")[1]["requests"]
    assert [r["id"] for r in review] == [rid] and review[0]["extension"]["seconds"] == 900
    code, body = w.call("alice", "POST", f"{R}/{rid}/approve", {})
    assert code == 403 and "own request" in body["detail"]
    # The key the host prints still carries the old end until the extension is approved.
    assert w.akc("web1", "alice")[1]["keys"][0]["expires_at"] == ends

    code, req = w.call("carol", "POST", f"{R}/{rid}/approve", {"comment": "ok"})
    assert code == 200 and req["ends_at"] == ends + 900 and req["extended_seconds"] == 900
    assert req["extension"] is None and req["id"] == rid
    assert w.call("carol", "GET", f"{R}?scope=review")[1]["requests"] == []
    # Same grant: the next key line carries the new end, the live session stays active.
    [key] = w.akc("web1", "alice")[1]["keys"]
    assert (key["request_id"], key["expires_at"]) == (rid, ends + 900)
    sess = w.call("web1", "GET", "/api/v1/hook/sessions")[1]
    assert sess["end"] == [] and sess["active"][0]["expires_at"] == ends + 900

    # What is left of max_extension is all that can still be asked for.
    code, body = w.call(
        "alice", "POST", f"{R}/{rid}/extend", {"duration_seconds": 901, "reason": "x"}
    )
    assert code == 422 and "at most 900" in body["detail"]
    # A denied extension leaves the end where it is.
    w.call("alice", "POST", f"{R}/{rid}/extend", {"duration_seconds": 60, "reason": "x"})
    code, req = w.call("bob", "POST", f"{R}/{rid}/deny", {})
    assert (code, req["state"], req["ends_at"]) == (200, "approved", ends + 900)
    k = kinds(w)
    for kind in ("extension.requested", "extension_review.approve", "request.extended"):
        assert kind in k
    assert "extension.denied" in k


def test_extension_auto_approved_and_refused_without_policy(world):
    w = world
    req = approved(w)
    code, body = w.call(
        "alice", "POST", f"{R}/{req['id']}/extend", {"duration_seconds": 60, "reason": "x"}
    )
    assert code == 403 and "no extensions" in body["detail"]  # snapshot: max_extension 0

    set_policy(w, max_extension=600, extension_approvals=0)
    req = approved(w, duration_seconds=300)
    code, out = w.call(
        "alice", "POST", f"{R}/{req['id']}/extend", {"duration_seconds": 600, "reason": "x"}
    )
    assert code == 200 and out["ends_at"] == req["ends_at"] + 600 and out["extension"] is None
    assert w.akc("web1", "alice")[1]["keys"][0]["expires_at"] == req["ends_at"] + 600

    # A revoked grant is not extended.
    w.call("bob", "POST", f"{R}/{req['id']}/revoke", {})
    code, body = w.call(
        "alice", "POST", f"{R}/{req['id']}/extend", {"duration_seconds": 1, "reason": "x"}
    )
    assert code == 409 and "revoked" in body["detail"]


def test_drop_denies_the_next_login_and_ends_live_sessions(world):
    w = world
    req = approved(w)
    rid = req["id"]
    open_session(w, "12:12")
    acct = {"login": "deploy", "connection": "13:13", "fingerprint": w.keys["alice"].fingerprint}
    assert w.call("web1", "POST", ACCOUNT, acct)[1]["decision"] == "allow"

    # Only the requester drops (an approver revokes instead).
    code, body = w.call("bob", "POST", f"{R}/{rid}/drop")
    assert code == 403 and "requester" in body["detail"]
    code, req = w.call("alice", "POST", f"{R}/{rid}/drop")
    assert (code, req["state"]) == (200, "dropped")
    assert w.call("alice", "POST", f"{R}/{rid}/drop")[0] == 409
    assert w.call("alice", "GET", f"{R}?state=dropped")[1]["requests"][0]["id"] == rid

    assert w.akc("web1", "alice")[1]["keys"] == []
    assert w.call("web1", "POST", ACCOUNT, acct)[1]["decision"] == "deny"
    sess = w.call("web1", "GET", "/api/v1/hook/sessions")[1]
    assert [(s["connection"], s["reason"]) for s in sess["end"]] == [("12:12", "revoked")]
    events = w.call("root-admin", "GET", "/api/v1/audit?limit=1000")[1]["events"]
    [drop] = [e for e in events if e["kind"] == "request.dropped"]
    assert drop["actor"] == "alice" and drop["data"]["request_id"] == rid
    code, body = w.call(
        "alice", "POST", f"{R}/{rid}/extend", {"duration_seconds": 1, "reason": "x"}
    )
    assert code == 409 and "dropped" in body["detail"]


def test_pinned_grant_is_stored_canonical_and_reaches_the_host(world):
    w = world
    set_policy(w, require_from=True, allowed_from=["10.0.0.0/8", "192.0.2.0/24"])
    code, body = w.request()
    assert code == 422 and body["field"] == "from_cidrs" and "requires" in body["detail"]
    for bad, why in (
        (["0.0.0.0/0"], "every address"),
        (["10.0.0.1/8"], "not a network"),
        (["nonsense"], "not a network"),
        (["172.16.0.0/12"], "outside"),
        ([f"10.0.{i}.0/24" for i in range(17)], "at most 16"),
    ):
        code, body = w.request(from_cidrs=bad)
        assert code == 422 and body["field"] == "from_cidrs" and why in body["detail"], bad
    req = approved(w, from_cidrs=["192.0.2.7", " 10.1.0.0/16", "10.1.0.0/16"])
    assert req["from_cidrs"] == ["10.1.0.0/16", "192.0.2.7/32"]
    [key] = w.akc("web1", "alice")[1]["keys"]
    assert key["from_cidrs"] == ["10.1.0.0/16", "192.0.2.7/32"]
    acct = {"login": "deploy", "rhost": "10.1.2.3", "fingerprint": w.keys["alice"].fingerprint}
    ans = w.call("web1", "POST", ACCOUNT, acct)[1]
    assert ans["decision"] == "allow" and ans["from_cidrs"] == ["10.1.0.0/16", "192.0.2.7/32"]
    # A grant that is not pinned says so with null.
    set_policy(w)
    w.call("alice", "POST", f"{R}/{req['id']}/drop")
    approved(w)
    assert w.akc("web1", "alice")[1]["keys"][0]["from_cidrs"] is None


def test_session_records_its_key_fingerprint(world):
    w = world
    approved(w)
    open_session(w, "14:14")
    rows = w.svc.sql("SELECT rhost, fingerprint FROM sessions WHERE connection = '14:14'")
    assert rows == [("127.0.0.1", w.keys["alice"].fingerprint)]


def test_usage_report_api(world):
    w = world
    used = approved(w)
    open_session(w, "15:15")
    k = w.keys["alice"]
    close = {"event": "close", "login": "deploy", "connection": "15:15", "key_type": k.key_type,
             "key": k.blob, "fingerprint": k.fingerprint}  # fmt: skip
    assert w.call("web1", "POST", SESSION, close)[0] == 200
    # Fixed times: the report's arithmetic is under test, not the clock.
    w.svc.sql("UPDATE sessions SET opened_at = closed_at - 300 WHERE connection = '15:15'")
    w.call("alice", "POST", f"{R}/{used['id']}/drop")
    unused = approved(w)

    assert w.call("alice", "GET", "/api/v1/reports/usage")[0] == 403
    code, report = w.call("root-admin", "GET", "/api/v1/reports/usage")
    assert code == 200
    by_id = {a["request_id"]: a for a in report["approvals"]}
    u = by_id[used["id"]]
    assert (u["used"], u["sessions"], u["open_sessions"], u["sources"]) == (
        True,
        1,
        0,
        ["127.0.0.1"],
    )
    assert u["keys"] == [k.fingerprint] and u["hosts"] == ["web1"] and u["state"] == "dropped"
    assert (u["total_seconds"], u["longest_seconds"]) == (300, 300)
    assert by_id[unused["id"]]["used"] is False
    assert report["summary"]["never_used"] == [unused["id"]]
    # An approver gets the same approvals, with other people's keys counted, not named.
    code, seen = w.call("bob", "GET", "/api/v1/reports/usage")
    assert code == 200
    assert {a["request_id"]: a["keys"] for a in seen["approvals"]}[used["id"]] == ["key-1"]
    # since: only approvals whose window reached it.
    code, later = w.call(
        "root-admin", "GET", f"/api/v1/reports/usage?since={unused['ends_at'] + 1}"
    )
    assert (code, later["approvals"]) == (200, [])
    assert w.call("root-admin", "GET", "/api/v1/reports/usage?since=-1")[0] == 422
    # Past 32 bits (PostgreSQL's integer columns): a 422, not the 500 the fuzzer found.
    code, err = w.call("root-admin", "GET", "/api/v1/reports/usage?since=3310689460")
    assert (code, err["field"]) == (422, "since"), err
