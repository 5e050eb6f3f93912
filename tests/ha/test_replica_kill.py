"""kill -9 of one of three replicas mid-burst (requests, approvals, revokes, hook checks).

Clients spread over all three replicas; one is SIGKILLed while they run. The
others keep answering; on the database every write any replica acknowledged
is there, no row is half-written, and the audit chain (whose fold leader may
have been the killed one) verifies with every event folded.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest

from tests.ha.conftest import Acks, Writer, akc, seed

pytestmark = pytest.mark.slow
BEFORE, AFTER = 1.5, 1.5  # seconds of traffic before and after the kill
MAX_OPS = 300  # per thread, whatever the speed


def test_kill_9_of_a_replica_loses_no_acknowledged_write(pg, replicas_on, tmp_path):
    svcs = replicas_on(pg.create_database("jit"), 3)
    w = seed(svcs[0], tmp_path / "keys", approvers=1, approvals=1, requesters=4)
    w.approve("bob", w.request("alice", "web1")["id"])  # every check of alice's is an allow
    acks = Acks()
    served_after: Counter = Counter()  # replica -> full cycles answered after the kill
    killed = threading.Event()
    stop = threading.Event()

    def client(i: int) -> None:
        writer = Writer(w, f"rq{i}", "web1")
        for n in range(MAX_OPS):
            if stop.is_set():
                return
            k = (i + n) % 3
            try:
                if not writer.step(svcs[k], revoke=bool(n % 2), log=acks):
                    continue
                status, body = akc(svcs[k], w)
                assert status == 200 and len(body["keys"]) == 1, body
                if killed.is_set():
                    with acks.lock:
                        served_after[k] += 1
            except OSError as e:  # the killed replica's connections
                acks.errors[f"{k}:{type(e).__name__}"] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(BEFORE)
        svcs[0].proc.send_signal(signal.SIGKILL)
        svcs[0].proc.wait(10)
        killed.set()
        time.sleep(AFTER)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    created, approved, revoked, errors = acks.created, acks.approved, acks.revoked, acks.errors
    print(f"\nreplica kill: acknowledged created {len(created)} approved {len(approved)} "
          f"revoked {len(revoked)}; served after the kill {dict(served_after)}; "
          f"client errors {dict(errors)}")  # fmt: skip
    assert served_after[1] and served_after[2], served_after
    assert not [e for e in errors if e.endswith(" 500")], errors

    rows = dict(svcs[1].sql("SELECT id, state FROM requests"))
    assert created <= rows.keys()
    assert all(rows[r] in ("approved", "revoked") for r in approved)
    assert all(rows[r] == "revoked" for r in revoked)
    # Nothing half-written: every approved request has its review, hosts and events.
    half = svcs[1].sql(
        "SELECT r.id FROM requests r WHERE r.state IN ('approved', 'revoked') AND ("
        " NOT EXISTS (SELECT 1 FROM reviews v WHERE v.request_id = r.id)"
        " OR NOT EXISTS (SELECT 1 FROM request_hosts h WHERE h.request_id = r.id))"
    )
    assert half == []
    kinds = Counter(k for (k,) in svcs[2].sql("SELECT kind FROM audit_events"))
    assert kinds["request.created"] == len(rows)
    assert kinds["request.approved"] >= len(approved)
    assert kinds["request.revoked"] >= len(revoked)
    deadline = time.monotonic() + 30
    while svcs[1].sql("SELECT count(*) FROM audit_events WHERE seq IS NULL") != [(0,)]:
        assert time.monotonic() < deadline, "events left unfolded after the kill"
        time.sleep(0.2)
    assert "audit chain OK" in svcs[2].admin("audit", "verify")
