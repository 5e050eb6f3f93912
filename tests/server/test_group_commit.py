"""Group commit of the login-path hooks (unit.py, batch=True) under concurrent calls, one process.

Many hook calls in flight at once share write transactions (SQLite: each call
in its own SAVEPOINT; PostgreSQL: pipelined, no savepoints), on both backends.
Observable outcomes: every call gets its own right answer; every
answered decision is in the audit log exactly once; calls refused before a
decision (wrong token) leave nothing behind and do not disturb the others'
events; the hash chain verifies; a revocation is seen by the very next call.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.utils.audit_counts import hook_decisions

CALLS = 90
R = "/api/v1/requests"


def _hook_events(svc) -> int:  # noqa: ANN001
    """Hook decisions audited: events, plus the repeats of authorized-keys misses and allows
    (counted, then folded into one event when the window closes: tests/utils/audit_counts.py)."""
    return hook_decisions(svc.sqlite)


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
    assert w.akc("web1", "alice")[1]["keys"] == []


def test_a_failing_call_is_rolled_back_alone_in_its_batch(world):
    """In-process, on the service's own database: hook calls in one loop turn.

    The failures are injected inside the call bodies (an audit event, maybe a
    real write or a failing statement, then an exception): no real hook fails
    that way on demand. A failing call is rolled back alone (its event and its
    write are gone), the others of its batch commit; the chain verifies. SQLite:
    each call in its own SAVEPOINT. PostgreSQL: the batch is rolled back and the
    other calls run again alone (unit.py).
    """
    import asyncio
    import time

    from fastapi.security import HTTPAuthorizationCredentials
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from jit_hooks.server import audit, fold
    from jit_hooks.server.context import Context
    from jit_hooks.server.db import make_engine
    from jit_hooks.server.metrics import Metrics
    from jit_hooks.server.settings import Settings

    url = world.svc.database_url or f"sqlite:///{world.svc.data_dir / 'jit.db'}"
    engine = make_engine(url)
    ctx = Context(Settings(database_url=url), engine, Metrics())
    creds = HTTPAuthorizationCredentials(scheme="Bearer", credentials=world.host_tokens["web1"])

    def events() -> int:
        return world.svc.sqlite("SELECT count(*) FROM audit_events WHERE kind = 'test.batch'")[0][0]

    def work(conn, host, fail: str) -> str:  # noqa: ANN001
        if fail == "early":  # fails before writing anything (like an unknown token)
            raise RuntimeError(fail)
        audit.append(conn, at=1, kind="test.batch", host=host.name, data={"f": fail})
        if fail == "write":
            conn.execute(text("UPDATE hosts SET name = name"))
        if fail == "db":  # a database error: PostgreSQL aborts the whole transaction
            conn.execute(text("INSERT INTO hosts (id) VALUES (NULL)"))
        if fail:
            raise RuntimeError(fail)
        return "ok"

    async def call(fail: str) -> str:
        return await ctx.as_host(creds, lambda conn, host: work(conn, host, fail), batch=True)

    async def batch(*fails: str) -> list:
        return await asyncio.gather(*(call(f) for f in fails), return_exceptions=True)

    try:
        out = asyncio.run(batch("", "quiet", ""))
        assert out[0] == out[2] == "ok" and str(out[1]) == "quiet"
        assert events() == 2  # the quiet failure's event is gone, the others committed
        out = asyncio.run(batch("", "write", ""))
        assert out[0] == out[2] == "ok" and str(out[1]) == "write"
        assert events() == 4  # nothing of the failed call
        out = asyncio.run(batch("", "early", "", "db", ""))
        assert out[0] == out[2] == out[4] == "ok" and str(out[1]) == "early"
        assert isinstance(out[3], DBAPIError)
        assert events() == 7  # the three good calls, nothing of the two failed ones
        # PostgreSQL: the events are chained by the fold (the service's runs on a timer).
        fold.fold_now(engine, now=int(time.time()))
        with engine.connect() as conn:
            assert audit.verify(conn).ok
    finally:
        ctx.close()
