"""The audit hash chain on a real database: edits, deletions, reorders, cut tails, the fold.

A fresh database of the suite's backend (SQLite file, or a PostgreSQL database
when tests/utils/backends.py sets the harness's database_factory).
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from jit_hooks.server import audit, fold
from jit_hooks.server.db import make_engine, upgrade


def _database_url(tmp_path, name: str = "jit.db") -> str:  # noqa: ANN001
    from jit_hooks.testing import service

    factory = getattr(service, "database_factory", None)
    return factory() if factory else f"sqlite:///{tmp_path / name}"


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(_database_url(tmp_path))
    upgrade(eng)
    with eng.begin() as conn:
        for i in range(5):
            audit.append(conn, at=1000 + i, kind="test.event", actor="t", data={"n": i})
    fold.fold_now(eng, now=2000)  # PostgreSQL: the appends were inserted unchained
    yield eng
    eng.dispose()


def _verify(engine):  # noqa: ANN001, ANN202
    with engine.begin() as conn:
        return audit.verify(conn)


def _sql(engine, stmt: str) -> None:  # noqa: ANN001
    with engine.begin() as conn:
        conn.exec_driver_sql(stmt)


def test_intact_chain_verifies(engine):
    result = _verify(engine)
    assert (result.ok, result.count) == (True, 5)


def test_chain_links(engine):
    with engine.begin() as conn:
        rows = list(audit.iter_events(conn))
    assert rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False))


@pytest.mark.parametrize(
    "stmt, bad_id",
    [
        ("UPDATE audit_events SET data = '{\"n\":42}' WHERE id = 3", 3),
        ("UPDATE audit_events SET actor = 'someone-else' WHERE id = 2", 2),
        ("UPDATE audit_events SET at = at + 1 WHERE id = 4", 4),
        ("DELETE FROM audit_events WHERE id = 3", 3),
        # Swap the contents of events 2 and 3 (a reorder).
        (
            "UPDATE audit_events SET data = CASE id WHEN 2 THEN '{\"n\":2}' "
            "ELSE '{\"n\":1}' END WHERE id IN (2, 3)",
            2,
        ),
        # Cut off the newest event.
        ("DELETE FROM audit_events WHERE id = 5", 5),
    ],
)
def test_tampering_is_detected(engine, stmt, bad_id):
    _sql(engine, stmt)
    result = _verify(engine)
    assert not result.ok
    assert result.event_id == bad_id
    assert f"event {bad_id}" in result.problem


def test_recomputed_hash_still_breaks_the_next_link(engine):
    """Editing an event and fixing its own hash is caught at the following event."""
    with engine.begin() as conn:
        row = conn.execute(text("SELECT * FROM audit_events WHERE id = 2")).one()
        forged = audit.event_hash(
            id=2,
            at=row.at,
            kind=row.kind,
            actor=row.actor,
            host=row.host,
            data='{"n":99}',
            prev_hash=row.prev_hash,
        )
        conn.execute(
            text("UPDATE audit_events SET data = :d, hash = :h WHERE id = 2"),
            {"d": '{"n":99}', "h": forged},
        )
    result = _verify(engine)
    assert (result.ok, result.event_id) == (False, 3)


def test_event_hash_fast_path_is_byte_identical_to_canonical_json():
    """event_hash writes the common case out by hand; it must hash what canonical() would."""
    import hashlib

    from jit_hooks.server.audit import GENESIS, canonical, event_hash

    cases = [
        dict(id=1, at=0, kind="hook.x", actor=None, host=None, data="{}", prev_hash=GENESIS),
        dict(
            id=2**40,
            at=1_700_000_000,
            kind='k"\\\n\u00e9\U0001f600',
            actor="al\tice\x00",
            host="web-1",
            data=canonical({"reason": 'quote " back \\ é', "n": [1, None]}),
            prev_hash="f" * 64,
        ),
    ]
    for c in cases:
        slow = hashlib.sha256(canonical(c).encode()).hexdigest()
        assert event_hash(**c) == slow


# -- unfolded events (the PostgreSQL login path inserts them; the fold chains) ----


def _insert_unfolded(engine, n: int, at: int = 3000) -> None:  # noqa: ANN001
    with engine.begin() as conn:
        for i in range(n):
            conn.execute(
                text("INSERT INTO audit_events (at, kind, host, data) VALUES (:at, :k, :h, :d)"),
                {"at": at + i, "k": "test.unfolded", "h": "web1", "d": f'{{"i":{i}}}'},
            )


def test_fold_chains_unfolded_events_once_in_id_order(engine):
    _insert_unfolded(engine, 4)
    stale = _verify_at(engine, now=10**6)
    assert not stale.ok and "4 events not folded" in stale.problem
    assert fold.fold_now(engine, now=4000) == 4
    assert fold.fold_now(engine, now=4000) == 0  # nothing is chained twice
    result = _verify_at(engine, now=10**6)
    assert (result.ok, result.count, result.last_seq) == (True, 9, 9)
    rows = engine.connect().execute(text("SELECT id, seq FROM audit_events ORDER BY seq")).all()
    assert [r.seq for r in rows] == list(range(1, 10))
    assert [r.id for r in rows] == sorted(r.id for r in rows)


def test_fresh_unfolded_events_are_not_yet_a_failure(engine):
    _insert_unfolded(engine, 1, at=5000)
    assert _verify_at(engine, now=5000 + audit.FOLD_GRACE_SECONDS - 1).ok


def _verify_at(engine, now: int):  # noqa: ANN001, ANN202
    with engine.begin() as conn:
        return audit.verify(conn, now=now)


# -- the reviewer's attacks on the database alone (issue 15 item 2) -----------------


@pytest.fixture
def world_db(tmp_path):
    """A database with users and a host made the normal way (each audited)."""
    from jit_hooks.server import store

    eng = make_engine(_database_url(tmp_path))
    upgrade(eng)
    with eng.begin() as conn:
        for name in ("alice", "bob"):
            store.add_user(conn, name=name, roles=["requester"], actor="t", now=1000)
        store.add_host(conn, name="web1", labels={}, actor="t", now=1001)
    fold.fold_now(eng, now=2000)
    yield eng
    eng.dispose()


def test_wiped_chain_fails_while_users_and_hosts_exist(world_db):
    _sql(world_db, "DELETE FROM audit_events")
    _sql(world_db, f"UPDATE audit_head SET last_id = 0, hash = '{audit.GENESIS}'")
    result = _verify(world_db)
    assert not result.ok
    assert "holds 0 events" in result.problem and "3 users, hosts and requests" in result.problem


def test_wiped_head_fails(world_db):
    _sql(world_db, "DELETE FROM audit_events")
    _sql(world_db, "DELETE FROM audit_head")
    result = _verify(world_db)
    assert not result.ok and "head record is missing" in result.problem


def test_head_row_is_made_by_the_migration(tmp_path):
    eng = make_engine(_database_url(tmp_path, "fresh.db"))
    upgrade(eng)
    with eng.begin() as conn:
        assert conn.exec_driver_sql("SELECT id, last_id, hash FROM audit_head").all() == [
            (1, 0, audit.GENESIS)
        ]
    eng.dispose()


# -- miss aggregation (issue 15 item 3) -------------------------------------------


def test_misses_count_per_window_and_fold_into_one_event(engine):
    def miss(fp: str, now: int) -> bool:
        with engine.begin() as conn:
            return fold.count_miss(
                conn, host="web1", login="deploy", fingerprint=fp, reason="r", now=now, window=60
            )

    firsts = [miss(fp, 6000 + i) for i in range(10) for fp in ("SHA256:a", "SHA256:b")]
    assert firsts.count(True) == 2  # one audited miss per fingerprint and window
    assert miss("SHA256:a", 6060)  # the next window starts afresh
    assert fold.fold_now(engine, now=6059) == 0  # window 6000-6059 still open
    with engine.begin() as conn:
        # Three (key, window)s, 21 misses: SQLite one row each, PostgreSQL one per miss.
        counted = conn.exec_driver_sql(
            "SELECT count(DISTINCT fingerprint || ':' || window_start), sum(count) "
            "FROM audit_miss_rows"
        ).one()
        assert tuple(counted) == (3, 21)
    fold.fold_now(engine, now=6060)
    with engine.begin() as conn:
        rows = conn.exec_driver_sql(
            "SELECT host, data FROM audit_events WHERE kind = 'hook.authorized_keys.repeated'"
        ).all()
        left = conn.exec_driver_sql("SELECT fingerprint, count FROM audit_miss_rows").all()
    import json

    repeats = {json.loads(d)["fingerprint"]: json.loads(d)["repeats"] for _, d in rows}
    assert repeats == {"SHA256:a": 9, "SHA256:b": 9}  # + the first of each = 10 each
    assert left == [("SHA256:a", 1)]  # the open window stays
    assert _verify(engine).ok
