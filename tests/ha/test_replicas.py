"""Three `jit-server serve` replicas on one PostgreSQL database give the answers of one.

Approvals racing on different replicas (threads released together) never
double-count or lose a review; a revoke written through one replica is seen
by the next hook call on another; a policy change is seen by all; the audit
fold (background work, one leader by advisory lock) chains every event
exactly once while all three run.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from jit_hooks.testing.service import start_service
from tests.ha.conftest import akc, seed, start_cluster

pytestmark = pytest.mark.slow
ROUNDS = 12
R = "/api/v1/requests"


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """One cluster and three replicas for the module (the policy test runs last)."""
    tmp = tmp_path_factory.mktemp("three")
    cluster = start_cluster()
    svcs = []
    try:
        url = cluster.create_database("jit")
        svcs = [start_service(tmp / f"replica{i}", database_url=url) for i in range(3)]
        yield svcs, seed(svcs[0], tmp / "keys", approvers=3, approvals=2)
    finally:
        for svc in svcs:
            svc.stop()
        cluster.destroy()


def race(calls):  # noqa: ANN001
    """Run the zero-argument callables in threads released together; their results in order."""
    barrier = threading.Barrier(len(calls))
    out = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        out[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_two_of_three_approvals_racing_on_three_replicas(three):
    svcs, w = three
    approvers = ["bob", "carol", "dave"]
    for n in range(ROUNDS):
        rid = w.request("alice", "web1", reason=f"INC-{n} race")["id"]
        # Each approver on their own replica, rotating so every pairing races.
        calls = [
            (
                lambda s=svcs[(i + n) % 3], a=a, p=f"{R}/{rid}/approve": s.call(
                    "POST", p, w.tokens[a], {}
                )
            )
            for i, a in enumerate(approvers)
        ]
        answers = race(calls)
        codes = sorted(c for c, _ in answers)
        # The first two approve (the second one's answer says approved); the third
        # finds it no longer pending. Never three reviews, never stuck at pending.
        assert codes == [200, 200, 409], answers
        assert sorted(b["state"] for c, b in answers if c == 200) == ["approved", "pending"]
        reviews = svcs[0].sql("SELECT count(*) FROM reviews WHERE request_id = ?", (rid,))
        assert reviews == [(2,)]
        assert svcs[1].sql("SELECT state FROM requests WHERE id = ?", (rid,)) == [("approved",)]
        events = svcs[2].sql(
            "SELECT data FROM audit_events WHERE kind = 'request.approved' "
            "AND data LIKE ?", (f'%"request_id":{rid}%',),
        )  # fmt: skip
        assert [json.loads(d)["approvals"] for (d,) in events] == [2]
    assert "audit chain OK" in svcs[1].admin("audit", "verify")


def test_a_revoke_on_one_replica_is_seen_by_the_next_hook_call_on_another(three):
    svcs, w = three  # web2: the race test left approvals on web1
    for a, b in ((0, 1), (1, 2), (2, 0)):
        rid = w.request("alice", "web2")["id"]
        for approver in ("bob", "carol"):
            assert svcs[a].call("POST", f"{R}/{rid}/approve", w.tokens[approver], {})[0] == 200
        status, body = akc(svcs[b], w, "web2")
        assert status == 200 and len(body["keys"]) == 1, body
        status, _ = svcs[a].call("POST", f"{R}/{rid}/revoke", w.tokens["bob"], {})
        assert status == 200
        status, body = akc(svcs[b], w, "web2")
        assert status == 200 and body["keys"] == [], body


def test_the_fold_chains_every_event_once_while_three_replicas_run(three):
    svcs, w = three
    rid = w.request("alice", "web1")["id"]
    w.approve("bob", rid)
    w.approve("carol", rid)  # alice is let in: every account check is an audited allow
    # The account hook, not the AKC: its decisions are audited call by call (repeated
    # AKC allows are counted and folded per window, server/fold.py).
    q = w.akc_query("alice")
    acct = {"login": q["login"], "fingerprint": q["fingerprint"]}
    hook_events = "SELECT count(*) FROM audit_events WHERE kind = 'hook.account'"
    before = svcs[0].sql(hook_events)[0][0]
    stop = time.monotonic() + 3
    counts = [0, 0, 0]

    def traffic(i: int) -> None:
        while time.monotonic() < stop:
            status, body = svcs[i].call("POST", "/api/v1/hook/account", w.host_tokens["web1"], acct)
            assert status == 200 and body["decision"] == "allow", body
            counts[i] += 1

    threads = [threading.Thread(target=traffic, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(counts), counts
    # Wait (bounded) for the leader to fold everything the three wrote.
    deadline = time.monotonic() + 30
    while svcs[0].sql("SELECT count(*) FROM audit_events WHERE seq IS NULL") != [(0,)]:
        assert time.monotonic() < deadline, "events left unfolded"
        time.sleep(0.2)
    n, low, high, distinct = svcs[0].sql(
        "SELECT count(*), min(seq), max(seq), count(DISTINCT seq) FROM audit_events"
    )[0]
    assert (low, high, distinct) == (1, n, n)  # every event has exactly one place
    assert svcs[0].sql(hook_events)[0][0] - before == sum(counts)  # each answer audited once
    assert "audit chain OK" in svcs[2].admin("audit", "verify")


def test_a_policy_change_is_seen_by_every_replica(three, tmp_path):
    svcs, w = three
    for s in svcs:
        w.svc = s  # World.request goes through this replica
        req = w.request("alice", "web2")
        assert req["approvals_required"] == 2
        assert s.call("POST", f"{R}/{req['id']}/cancel", w.tokens["alice"])[0] == 200
    one = tmp_path / "one.toml"
    one.write_text(
        (svcs[0].data_dir / "policy.toml").read_text().replace("approvals_required = 2",
                                                               "approvals_required = 1")
    )  # fmt: skip
    svcs[0].admin("policy", "add", str(one))
    for s in svcs:
        w.svc = s
        req = w.request("alice", "web2")
        assert req["approvals_required"] == 1
        assert s.call("POST", f"{R}/{req['id']}/cancel", w.tokens["alice"])[0] == 200
    svcs[1].admin("policy", "remove", "prod")
    for s in svcs:
        status, body = s.call(
            "POST", R, w.tokens["alice"],
            {"host": "web2", "login": "deploy", "reason": "INC-9 gone", "duration_seconds": 600},
        )  # fmt: skip
        assert status in (403, 404, 422), body
    w.svc = svcs[0]
