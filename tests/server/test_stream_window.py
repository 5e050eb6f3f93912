"""The stream hub's poll re-reads a bounded window, not the last 100,000 ids (review L4).

A real app context on a real SQLite database made by a real service; the hub's
clock is the test's so "30 s later" needs no sleep. What is checked is the id
bound of the SQL the hub sends (captured at the engine) and what it delivers.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import event, insert

from jit_hooks.server.app import create_app
from jit_hooks.server.settings import Settings
from jit_hooks.server.stream import ID_SLACK, SETTLE_SECONDS, Hub
from jit_hooks.server.tables import audit_events
from jit_hooks.testing.service import start_service

pytestmark = pytest.mark.sqlite_only("the window's bounds are the same SQL on both backends")


def _events(conn, ids) -> None:  # noqa: ANN001
    conn.execute(
        insert(audit_events),
        [
            {"id": i, "at": 1, "kind": "request.revoked", "actor": "bob", "host": "web1",
             "data": json.dumps({"request_id": i})}
            for i in ids
        ],
    )  # fmt: skip


def test_poll_window_is_the_last_settle_period(tmp_path):
    svc = start_service(tmp_path / "server")
    svc.stop()  # only its database: the hub below runs in this process
    app = create_app(Settings(database_url=f"sqlite:///{svc.data_dir / 'jit.db'}"))
    ctx = app.state.ctx
    lows: list[int] = []

    def capture(conn, cursor, statement, params, context, many):  # noqa: ANN001
        if "FROM audit_events" in statement and "ORDER BY audit_events.id" in statement:
            lows.append(params[-1])  # the id bound: the last parameter

    event.listen(ctx.engine, "before_cursor_execute", capture)
    # 3,000 session-changing events already in the log, then a gap an uncommitted
    # transaction might still fill (ids 3001-3099), then more.
    with ctx.engine.begin() as conn:
        _events(conn, range(1, 3001))
        _events(conn, range(3100, 3201))
    clock = [1000.0]

    async def scenario() -> None:
        hub = Hub(ctx)
        hub.clock = lambda: clock[0]
        await hub.subscribe(1)
        hub.close()  # the test polls by hand
        top = hub.cursor
        assert top == 3200

        # A late commit inside the settle period is still delivered.
        with ctx.engine.begin() as conn:
            _events(conn, [3050])
        clock[0] += 5
        lows.clear()
        await hub.poll_once()
        assert lows and lows[-1] >= top - ID_SLACK
        assert 3050 in hub._seen

        # Once the settle period has passed with no new events, a poll reads
        # nothing below the cursor: the 3,000 old events are not re-read 4x/s.
        for _ in range(3):
            clock[0] += SETTLE_SECONDS
            await hub.poll_once()
        lows.clear()
        await hub.poll_once()
        assert lows == [hub.cursor], lows

    try:
        asyncio.run(scenario())
    finally:
        ctx.close()
