"""Group commit of the login-path hooks (Context.hook_tx) under concurrent calls, one process.

Many hook calls in flight at once share write transactions, each in its own
SAVEPOINT. Observable outcomes: every call gets its own right answer; every
answered decision is in the audit log exactly once; calls refused before a
decision (wrong token) leave nothing behind and do not disturb the others'
events; the hash chain verifies; a revocation is seen by the very next call.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

CALLS = 90
R = "/api/v1/requests"


def _hook_events(svc) -> int:  # noqa: ANN001
    return svc.sqlite("SELECT count(*) FROM audit_events WHERE kind LIKE 'hook.%'")[0][0]


def test_concurrent_hook_calls_are_answered_and_audited_once(world):
    w = world
    _, req = w.request("alice")
    assert w.call("bob", "POST", f"{R}/{req['id']}/approve")[1]["state"] == "approved"
    w.host_tokens["bad"] = "jith_" + "x" * 43
    before = _hook_events(w.svc)

    def call(i: int) -> tuple[int, int, int]:
        host, who = [("web1", "alice"), ("web1", "mallory"), ("web2", "alice")][i % 3]
        if i % 10 == 9:
            host = "bad"  # refused before any decision: 401, nothing audited
        code, body = w.akc(host, who)
        return i, code, len(body["keys"]) if code == 200 else -1

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(CALLS)))
    refused = [i for i in range(CALLS) if i % 10 == 9]
    assert [(i, c) for i, c, _ in results if c != 200] == [(i, 401) for i in refused]
    # Only alice's key on web1 is let in; mallory's key and web2 get nothing.
    assert all(n == (1 if i % 3 == 0 else 0) for i, c, n in results if c == 200), results
    assert _hook_events(w.svc) - before == CALLS - len(refused)
    assert "audit chain OK" in w.svc.admin("audit", "verify")

    # No cached decision: the revocation holds on the next call.
    assert w.call("bob", "POST", f"{R}/{req['id']}/revoke", {})[0] == 200
    assert w.akc("web1", "alice")[1] == {"keys": []}
