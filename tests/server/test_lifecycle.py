"""The whole lifecycle on a real service: request, self-approval refused, N=2 approvals,
active, expiry, revoke; then the audit chain verifies, and fails once tampered with."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.server.conftest import build_world

R = "/api/v1/requests"


def _state(w, rid: int) -> str:  # noqa: ANN001
    return w.call("alice", "GET", f"{R}/{rid}")[1]["state"]


def _verify(svc):  # noqa: ANN001, ANN202
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "jit_hooks.server.cli",
            "--data-dir",
            str(svc.data_dir),
            *svc.db_args(),
            "audit",
            "verify",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_whole_lifecycle_then_tamper(service, tmp_path):
    w = build_world(service, tmp_path, approvals=2)
    acct = {
        "login": "deploy",
        "rhost": "127.0.0.1",
        "service": "sshd",
        "connection": "7:7",
        "fingerprint": w.keys["alice"].fingerprint,
    }

    code, req = w.request(duration_seconds=3)
    assert (code, req["state"], req["approvals_required"]) == (201, "pending", 2)
    rid = req["id"]

    # The requester never approves her own request, even holding the approver role.
    code, body = w.call("alice", "POST", f"{R}/{rid}/approve", {})
    assert code == 403 and "own request" in body["detail"]
    _, mreq = w.request(who="mallory", duration_seconds=3)
    assert w.call("mallory", "POST", f"{R}/{mreq['id']}/approve", {})[0] == 403
    # Someone who is not an eligible approver does not count (and can't even see it).
    assert w.call("dave", "POST", f"{R}/{rid}/approve", {})[0] == 404

    # One approval is not enough; the same approver twice is not two approvals.
    code, req = w.call("bob", "POST", f"{R}/{rid}/approve", {"comment": "ok"})
    assert (code, req["state"]) == (200, "pending")
    assert w.call("bob", "POST", f"{R}/{rid}/approve", {})[0] == 409
    assert w.akc("web1", "alice")[1]["keys"] == []

    code, req = w.call("carol", "POST", f"{R}/{rid}/approve", {})
    assert (code, req["state"]) == (200, "approved")
    assert [r["reviewer"] for r in req["reviews"]] == ["bob", "carol"]
    # The window opens at approval, not at request time.
    assert req["starts_at"] == req["decided_at"] >= req["created_at"]
    assert req["ends_at"] == req["starts_at"] + 3

    [key] = w.akc("web1", "alice")[1]["keys"]
    assert key["request_id"] == rid and key["expires_at"] == req["ends_at"]
    assert w.call("web1", "POST", "/api/v1/hook/account", acct)[1]["decision"] == "allow"

    # Expiry: poll (no wall-clock assertions) until the service reports it expired.
    deadline = time.monotonic() + 20
    while _state(w, rid) != "expired":
        assert time.monotonic() < deadline, "request never expired"
        time.sleep(0.3)
    assert w.akc("web1", "alice")[1]["keys"] == []
    ans = w.call("web1", "POST", "/api/v1/hook/account", acct)[1]
    assert ans["decision"] == "deny" and ans["request_id"] is None
    assert w.call("bob", "POST", f"{R}/{rid}/revoke", {})[0] == 409  # nothing left to revoke
    expired = w.call("alice", "GET", f"{R}?scope=mine&state=expired")[1]["requests"]
    assert [r["id"] for r in expired] == [rid]

    # Revoke: a second approval, then revoked by the requester herself.
    _, req2 = w.request(duration_seconds=600)
    w.call("bob", "POST", f"{R}/{req2['id']}/approve", {})
    w.call("carol", "POST", f"{R}/{req2['id']}/approve", {})
    assert len(w.akc("web1", "alice")[1]["keys"]) == 1
    code, req2 = w.call("alice", "POST", f"{R}/{req2['id']}/revoke", {"comment": "done"})
    assert (code, req2["state"]) == (200, "revoked")
    assert w.akc("web1", "alice")[1]["keys"] == []
    assert w.call("web1", "POST", "/api/v1/hook/account", acct)[1]["decision"] == "deny"

    # A requested start later than approval: the window starts there.
    start = int(time.time()) + 3600
    _, req3 = w.request(duration_seconds=60, start=start)
    w.call("bob", "POST", f"{R}/{req3['id']}/approve", {})
    _, req3 = w.call("carol", "POST", f"{R}/{req3['id']}/approve", {})
    assert (req3["state"], req3["starts_at"], req3["ends_at"]) == ("approved", start, start + 60)
    assert w.akc("web1", "alice")[1]["keys"] == []  # not yet

    # Every step is in the audit chain, and the chain verifies.
    events = w.call("root-admin", "GET", "/api/v1/audit?limit=1000")[1]["events"]
    kinds = [e["kind"] for e in events]
    for kind in (
        "request.created",
        "review.approve",
        "request.approved",
        "request.revoked",
        "hook.authorized_keys",
        "hook.account",
    ):
        assert kind in kinds
    r = _verify(service)
    assert r.returncode == 0, r.stderr
    assert f"{len(events)} events" in r.stdout

    # Tamper with one event in the SQLite file: verify fails and names it.
    [(victim,)] = service.sqlite("SELECT id FROM audit_events WHERE kind = 'request.revoked'")
    service.sqlite(
        "UPDATE audit_events SET data = replace(data, 'done', 'oops') WHERE id = ?", (victim,)
    )
    r = _verify(service)
    assert r.returncode == 1
    assert f"event {victim}" in r.stderr
