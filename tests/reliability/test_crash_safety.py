"""Crash safety: kill -9 the service in the middle of a burst, restart it on the same SQLite file.

A few client threads create requests, approve them, add keys and make hook
checks against the real service process while it is killed with SIGKILL. After
a restart on the same database: every call that got a 2xx is there, the audit
chain verifies, and no row is half-written (an approved request without its
reviews, a request without its hosts or its audit event, ...). Every loop is
bounded in count and time.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jit_hooks.testing.seed import World, make_key
from jit_hooks.testing.service import start_service
from tests.utils.audit_counts import hook_decisions
from tests.utils.report import record

CYCLES = 3  # kill -9 / restart rounds
BURST_SECONDS = 1.5  # traffic before the kill
HOOK_OPS_CAP = 100_000  # the hook thread's bound; it stops at the kill long before
MAX_OPS_PER_THREAD = 400  # bound per thread and cycle, whatever the speed


@dataclass
class Acked:
    """What the service acknowledged with a 2xx before it died."""

    requests: dict[int, str] = field(default_factory=dict)  # id -> reason
    approved: set[int] = field(default_factory=set)
    denied: set[int] = field(default_factory=set)
    revoked: set[int] = field(default_factory=set)
    revoke_sent: set[int] = field(default_factory=set)  # acknowledged or not
    keys: dict[int, str] = field(default_factory=dict)  # id -> fingerprint
    hook_calls: int = 0
    errors: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def crash_world(tmp_path) -> World:
    svc = start_service(tmp_path / "server")
    try:
        w = World(svc)
        w.user("alice", "requester")
        w.user("bob", "approver")
        w.host("web1", "env=prod")
        w.policy()
        (tmp_path / "keys").mkdir()
        w.add_key("alice", tmp_path / "keys")
        yield w
    finally:
        svc.stop()
    assert w.leaked_secrets() == [], "token in the service log"


def _safe(acked: Acked, fn) -> object:  # noqa: ANN001
    try:
        return fn()
    except Exception as e:  # the service dies mid-call: that is the point
        with acked.lock:
            acked.errors[type(e).__name__] += 1
        return None


def burst(w: World, acked: Acked, stop: threading.Event, cycle: int, keydir: Path) -> None:
    alice, bob, host = w.tokens["alice"], w.tokens["bob"], w.host_tokens["web1"]
    pending: list[int] = []
    plock = threading.Lock()

    def requester() -> None:
        for i in range(MAX_OPS_PER_THREAD):
            if stop.is_set():
                return
            reason = f"crash-{cycle}-{i}"
            body = {"host": "web1", "login": "deploy", "reason": reason, "duration_seconds": 600}
            r = _safe(acked, lambda b=body: w.call(alice, "POST", "/api/v1/requests", b))
            if r and r[0] == 201:
                with acked.lock:
                    acked.requests[r[1]["id"]] = reason
                with plock:
                    pending.append(r[1]["id"])

    def approver() -> None:
        for i in range(MAX_OPS_PER_THREAD):
            if stop.is_set():
                return
            with plock:
                rid = pending.pop(0) if pending else None
            if rid is None:
                time.sleep(0.005)
                continue
            verb = "deny" if i % 5 == 4 else "approve"
            path = f"/api/v1/requests/{rid}/{verb}"
            r = _safe(acked, lambda p=path: w.call(bob, "POST", p, {"comment": "ok"}))
            if not r or r[0] != 200:
                continue
            with acked.lock:
                (acked.approved if verb == "approve" else acked.denied).add(rid)
            if verb == "approve" and i % 3 == 0:  # and revoke some right away
                with acked.lock:
                    acked.revoke_sent.add(rid)
                path = f"/api/v1/requests/{rid}/revoke"
                r = _safe(acked, lambda p=path: w.call(bob, "POST", p, {"comment": "done"}))
                if r and r[0] == 200:
                    with acked.lock:
                        acked.revoked.add(rid)

    def hooks() -> None:
        q = w.akc_query("alice")
        acct = {"login": "deploy", "fingerprint": q["fingerprint"], "connection": "1:2"}
        # Hook checks go on until the kill (bounded): on a fast service the other threads
        # can run out of work first, and the kill must land on traffic in flight.
        for i in range(HOOK_OPS_CAP):
            if stop.is_set():
                return
            path, body = (
                ("/api/v1/hook/authorized-keys", q) if i % 2 else ("/api/v1/hook/account", acct)
            )
            r = _safe(acked, lambda p=path, b=body: w.call(host, "POST", p, b))
            if r and r[0] == 200:
                with acked.lock:
                    acked.hook_calls += 1

    def keys() -> None:
        made = [make_key(keydir, f"k{cycle}-{i}") for i in range(8)]  # before the clock runs
        for key in made:
            if stop.is_set():
                return
            body = {"public_key": key.line}
            r = _safe(acked, lambda b=body: w.call(alice, "POST", "/api/v1/keys", b))
            if r and r[0] == 201:
                with acked.lock:
                    acked.keys[r[1]["id"]] = key.fingerprint
            time.sleep(0.05)

    threads = [threading.Thread(target=t) for t in (requester, approver, hooks, keys)]
    for t in threads:
        t.start()
    time.sleep(BURST_SECONDS)
    w.svc.proc.send_signal(signal.SIGKILL)  # mid-burst, no warning
    w.svc.proc.wait(10)
    time.sleep(0.3)  # let in-flight calls fail against the dead port
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive()


def test_kill_9_mid_burst_loses_nothing_acknowledged(crash_world: World, tmp_path: Path):
    w = crash_world
    acked = Acked()
    keydir = tmp_path / "burst-keys"
    keydir.mkdir()
    for cycle in range(CYCLES):
        burst(w, acked, threading.Event(), cycle, keydir)
        w.svc.start()  # same data dir, same port, same SQLite file
    record(
        crash_kills=CYCLES,
        crash_acked_requests=len(acked.requests),
        crash_acked_approvals=len(acked.approved),
        crash_acked_denials=len(acked.denied),
        crash_acked_revokes=len(acked.revoked),
        crash_acked_hook_calls=acked.hook_calls,
        crash_acked_keys=len(acked.keys),
        crash_failed_calls=sum(acked.errors.values()),
    )
    # The kill really landed mid-traffic, and traffic really happened.
    assert acked.errors, "no call failed: the kill did not interrupt the burst"
    assert len(acked.requests) >= 10 and acked.approved and acked.hook_calls >= 10, acked

    # Every acknowledged request is there, as acknowledged.
    db = w.svc.sqlite
    rows = dict(db("SELECT id, reason FROM requests"))
    missing = {rid for rid in acked.requests if rows.get(rid) != acked.requests[rid]}
    assert missing == set(), f"acknowledged requests lost: {sorted(missing)[:10]}"
    states = dict(db("SELECT id, state FROM requests"))
    for rid in acked.approved:
        allowed = ("approved", "revoked") if rid in acked.revoke_sent else ("approved",)
        assert states[rid] in allowed, (rid, states[rid])
    assert all(states[rid] == "revoked" for rid in acked.revoked)
    assert all(states[rid] == "denied" for rid in acked.denied)
    fps = dict(db("SELECT id, fingerprint FROM keys"))
    assert all(fps.get(kid) == fp for kid, fp in acked.keys.items())
    # Repeated authorized-keys denials (alice before her approval) and allows (after it)
    # are counted, not written one by one: an aggregate event per window, or a count
    # still open (tests/utils/audit_counts.py).
    assert hook_decisions(db) >= acked.hook_calls

    # The audit chain verifies after three kills.
    assert "audit chain OK" in w.svc.admin("audit", "verify")

    # Nothing half-written.
    assert (
        db(
            "SELECT r.id FROM requests r WHERE r.state IN ('approved', 'revoked') AND ("
            " r.starts_at IS NULL OR r.ends_at IS NULL OR r.decided_at IS NULL OR"
            " (SELECT count(*) FROM reviews v WHERE v.request_id = r.id"
            "  AND v.decision = 'approve') < r.approvals_required)"
        )
        == []
    ), "approved request without its approvals or window"
    assert (
        db(
            "SELECT r.id FROM requests r WHERE NOT EXISTS"
            " (SELECT 1 FROM request_hosts h WHERE h.request_id = r.id)"
        )
        == []
    ), "request without its hosts"
    denied_without_review = db(
        "SELECT r.id FROM requests r WHERE r.state = 'denied' AND NOT EXISTS"
        " (SELECT 1 FROM reviews v WHERE v.request_id = r.id AND v.decision = 'deny')"
    )
    assert denied_without_review == [], "denied request without its denial"

    def request_ids(kind: str) -> set[int]:
        # Parsed here, not with json_extract: the same query on both backends.
        rows = db("SELECT data FROM audit_events WHERE kind = ?", (kind,))
        return {int(json.loads(d)["request_id"]) for (d,) in rows}

    created = request_ids("request.created")
    assert set(rows) - created == set(), "request without its audit event"
    approved_events = request_ids("request.approved")
    assert {rid for rid, s in states.items() if s in ("approved", "revoked")} <= approved_events
    for kind, state in (("request.revoked", "revoked"), ("request.denied", "denied")):
        events = request_ids(kind)
        assert {rid for rid, s in states.items() if s == state} == events, kind
    reviews = db("SELECT request_id FROM reviews")
    review_events = db("SELECT count(*) FROM audit_events WHERE kind LIKE 'review.%'")[0][0]
    assert review_events == len(reviews), "review row and its audit event disagree"
    key_events = db("SELECT count(*) FROM audit_events WHERE kind = 'key.added'")[0][0]
    assert key_events == len(fps), "key row and its audit event disagree"
    head = db("SELECT last_id FROM audit_head")[0][0]
    assert head == db("SELECT max(seq) FROM audit_events")[0][0]
    if w.svc.database_url is None:  # SQLite's own check of the file after the kills
        assert db("PRAGMA integrity_check") == [("ok",)]

    # And the restarted service serves: the acknowledged approvals grant access.
    status, body = w.call(
        w.host_tokens["web1"], "POST", "/api/v1/hook/authorized-keys", w.akc_query("alice")
    )
    assert status == 200 and len(body["keys"]) == 1
