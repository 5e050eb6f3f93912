"""Authorized-keys misses on a real PostgreSQL: insert-only, no row shared by a deny storm.

Own throwaway cluster (initdb in a temp dir, free port on 127.0.0.1). Issue 11:
the per-(host, login, key, window) counter row of migration 0004 made every
denied ask of one key wait for the previous deny's COMMIT, and two batches
bumping the same rows in opposite orders deadlocked. Every miss now inserts a
row of its own (migration 0015); the accounting (first events + folded
repeats) still covers each miss exactly once.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from jit_hooks.server import audit, fold
from jit_hooks.server.db import make_engine, upgrade
from jit_hooks.testing import postgres

pytestmark = pytest.mark.skipif(not postgres.available(), reason="needs PostgreSQL 15")

KEY = {"host": "web1", "login": "deploy", "fingerprint": "SHA256:k"}
NOW, WINDOW = 1_000_020, 60
EVENT = {
    "login": "deploy",
    "fingerprint": "SHA256:k",
    "decision": "deny",
    "reason": "no active approval",
    "request_id": None,
}


@pytest.fixture(autouse=True)
def _postgresql_only(db_backend: str) -> None:
    # About PostgreSQL's row locks: the suite's SQLite variant has nothing to run.
    if db_backend != "postgresql":
        pytest.skip("PostgreSQL only (own cluster)")


@pytest.fixture(scope="module")
def cluster():
    with postgres.make_cluster().init().start() as c:
        yield c


@pytest.fixture
def engine(cluster, request):
    eng = make_engine(cluster.create_database("misses_" + request.node.name.lower()[5:40]))
    upgrade(eng)
    yield eng
    eng.dispose()


def _miss(conn, now: int = NOW, reason: str = "no active approval") -> bool:  # noqa: ANN001
    return fold.count_miss(
        conn, **KEY, reason=reason, now=now, window=WINDOW, first_event=EVENT | {"reason": reason}
    )


def _events(engine) -> list[tuple[str, dict]]:  # noqa: ANN001
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, data FROM audit_events ORDER BY id")).all()
    return [(k, json.loads(d)) for k, d in rows]


def test_a_miss_does_not_wait_for_a_concurrent_miss_of_the_same_key(engine):
    first = engine.connect()
    try:
        tx = first.begin()
        _miss(first)  # the window's first, not committed yet
        with engine.begin() as second:
            # The 0004 upsert waited here for `first` to commit (ON CONFLICT on its row).
            second.execute(text("SET LOCAL lock_timeout = '2s'"))
            _miss(second)
        tx.commit()
    finally:
        first.close()
    with engine.begin() as third:
        _miss(third, NOW + 5, reason="offered key differs")  # both earlier rows visible now
    kinds = [k for k, _ in _events(engine)]
    # Neither of the two racing misses saw the other: each wrote a first event.
    assert kinds == ["hook.authorized_keys", "hook.authorized_keys"]
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_miss_rows")).scalar() == 3
        assert fold.close_windows(conn, now=NOW + 2 * WINDOW, window=WINDOW) == 1
        assert conn.execute(text("SELECT count(*) FROM audit_miss_rows")).scalar() == 0
    events = _events(engine)
    firsts = [d for k, d in events if k == "hook.authorized_keys"]
    repeated = [d for k, d in events if k == "hook.authorized_keys.repeated"]
    assert len(firsts) + sum(d["repeats"] for d in repeated) == 3  # every miss, once
    assert firsts[0] == EVENT
    # The folded event keeps the window's first reason and its whole time span.
    assert repeated[0]["reason"] == "no active approval"
    assert (repeated[0]["first_at"], repeated[0]["last_at"]) == (NOW, NOW + 5)
    with engine.begin() as conn:
        fold.fold(conn, now=NOW + 2 * WINDOW)
    with engine.begin() as conn:
        assert audit.verify(conn).ok


def test_two_batches_asking_about_two_keys_in_opposite_orders_do_not_deadlock(engine):
    """Old rows: batch A bumps k1 then k2, batch B k2 then k1: a deadlock, one aborted."""
    keys = ("SHA256:k1", "SHA256:k2")
    with engine.begin() as conn:  # both windows already have their first miss
        for fp in keys:
            fold.count_miss(conn, **(KEY | {"fingerprint": fp}), reason="r", now=NOW, window=WINDOW)
    a, b = engine.connect(), engine.connect()
    try:
        ta, tb = a.begin(), b.begin()
        for conn in (a, b):
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))
        fold.count_miss(a, **(KEY | {"fingerprint": keys[0]}), reason="r", now=NOW, window=WINDOW)
        fold.count_miss(b, **(KEY | {"fingerprint": keys[1]}), reason="r", now=NOW, window=WINDOW)
        fold.count_miss(a, **(KEY | {"fingerprint": keys[1]}), reason="r", now=NOW, window=WINDOW)
        fold.count_miss(b, **(KEY | {"fingerprint": keys[0]}), reason="r", now=NOW, window=WINDOW)
        ta.commit()
        tb.commit()
    finally:
        a.close()
        b.close()
    with engine.begin() as conn:
        total = conn.execute(text("SELECT sum(count) FROM audit_miss_rows")).scalar()
    assert total == 6


def test_misses_left_by_migration_0004_are_folded_with_their_counts(cluster):
    """Counter rows of open windows survive the upgrade: their first was audited."""
    eng = make_engine(cluster.create_database("misses_upgrade"))
    try:
        upgrade(eng, "0014_sso_flow_limits")
        with eng.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_misses (host, login, fingerprint, window_start, count, "
                    "first_at, last_at, reason) "
                    "VALUES ('web1', 'deploy', 'SHA256:k', 1000020, 5, 1000021, 1000030, 'r0')"
                )
            )
        upgrade(eng)
        with eng.begin() as conn:
            assert not _miss(conn, NOW + 30)  # same window, after the upgrade: no new first
        with eng.begin() as conn:
            fold.close_windows(conn, now=NOW + 2 * WINDOW, window=WINDOW)
        events = _events(eng)
        assert [k for k, _ in events] == ["hook.authorized_keys.repeated"]
        assert events[0][1]["repeats"] == 5  # 4 counted before the upgrade + 1 after
        assert events[0][1]["reason"] == "r0"
        assert (events[0][1]["first_at"], events[0][1]["last_at"]) == (1000021, NOW + 30)
    finally:
        eng.dispose()


def test_autovacuum_never_truncates_the_insert_only_tables(engine):
    """Truncating the fold's emptied pages takes ACCESS EXCLUSIVE: every hook INSERT waits."""
    with engine.connect() as conn:
        opts = dict(
            conn.execute(
                text(
                    "SELECT relname, reloptions FROM pg_class "
                    "WHERE relname IN ('audit_miss_rows', 'audit_key_allows')"
                )
            ).all()
        )
    assert opts == {
        "audit_miss_rows": ["vacuum_truncate=off"],
        "audit_key_allows": ["vacuum_truncate=off"],
    }
