"""Authorized-keys allows on a real PostgreSQL: insert-only, no row shared by concurrent logins.

Own throwaway cluster (initdb in a temp dir, free port on 127.0.0.1). Issue 11
item 7: the per-key counter row of migration 0007 made every allow of one key
wait for the previous allow's COMMIT (bench P3pg: 1,213 lock waits). Every
allow now inserts a row of its own; the accounting (first events + folded
repeats) still covers each allow exactly once.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from jit_hooks.server import fold
from jit_hooks.server.db import make_engine, upgrade
from jit_hooks.testing import postgres

pytestmark = pytest.mark.skipif(not postgres.available(), reason="needs PostgreSQL 15")

KEY = {"host": "web1", "login": "deploy", "fingerprint": "SHA256:k", "request_id": 7}
NOW, WINDOW = 1_000_020, 60


@pytest.fixture(scope="module")
def cluster():
    with postgres.make_cluster().init().start() as c:
        yield c


@pytest.fixture
def engine(cluster, request):
    eng = make_engine(cluster.create_database("allows_" + request.node.name.lower()[5:40]))
    upgrade(eng)
    yield eng
    eng.dispose()


def _allow(conn, now: int = NOW) -> bool:  # noqa: ANN001
    return fold.count_allow(
        conn,
        **KEY,
        actor="alice",
        now=now,
        window=WINDOW,
        first_event={"login": "deploy", "decision": "allow", "request_id": 7},
    )


def _events(engine) -> list[tuple[str, dict]]:  # noqa: ANN001
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, data FROM audit_events ORDER BY id")).all()
    return [(k, json.loads(d)) for k, d in rows]


def test_an_allow_does_not_wait_for_a_concurrent_allow_of_the_same_key(engine):
    first = engine.connect()
    try:
        tx = first.begin()
        _allow(first)  # the window's first, not committed yet
        with engine.begin() as second:
            # The 0007 upsert waited here for `first` to commit (ON CONFLICT on its row).
            second.execute(text("SET LOCAL lock_timeout = '2s'"))
            _allow(second)
        tx.commit()
    finally:
        first.close()
    with engine.begin() as third:
        _allow(third)  # both earlier rows are visible now: not a first
    kinds = [k for k, _ in _events(engine)]
    # Neither of the two racing allows saw the other: each wrote a first event.
    assert kinds == ["hook.authorized_keys", "hook.authorized_keys"]
    with engine.begin() as conn:
        assert fold.close_windows(conn, now=NOW + 2 * WINDOW, window=WINDOW) == 1
        assert conn.execute(text("SELECT count(*) FROM audit_key_allows")).scalar() == 0
    events = _events(engine)
    firsts = [d for k, d in events if k == "hook.authorized_keys"]
    repeats = [d["repeats"] for k, d in events if k == "hook.authorized_keys.repeated"]
    assert len(firsts) + sum(repeats) == 3  # every allow accounted for, once
    assert firsts[0] == {"login": "deploy", "decision": "allow", "request_id": 7}


def test_allows_left_by_migration_0007_are_folded_with_their_counts(cluster):
    """Counter rows of open windows survive the upgrade: their first was audited."""
    eng = make_engine(cluster.create_database("allows_upgrade"))
    try:
        upgrade(eng, "0011_sso")
        with eng.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_key_allows (host, login, fingerprint, window_start, "
                    "request_id, actor, count, first_at, last_at) "
                    "VALUES ('web1', 'deploy', 'SHA256:k', 1000020, 7, 'alice', 5, "
                    "1000021, 1000030)"
                )
            )
        upgrade(eng)
        with eng.begin() as conn:
            assert not _allow(conn, NOW + 30)  # same window, after the upgrade
        with eng.begin() as conn:
            fold.close_windows(conn, now=NOW + 2 * WINDOW, window=WINDOW)
        events = _events(eng)
        assert [k for k, _ in events] == ["hook.authorized_keys.repeated"]
        assert events[0][1]["repeats"] == 5  # 4 counted before the upgrade + 1 after
        assert (events[0][1]["first_at"], events[0][1]["last_at"]) == (1000021, NOW + 30)
    finally:
        eng.dispose()
