"""The audit hash chain on a real SQLite file: edits, deletions, reorders, cut tails."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from jit_hooks.server import audit
from jit_hooks.server.db import make_engine, upgrade


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'jit.db'}")
    upgrade(eng)
    with eng.begin() as conn:
        for i in range(5):
            audit.append(conn, at=1000 + i, kind="test.event", actor="t", data={"n": i})
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
        conn.exec_driver_sql(
            "UPDATE audit_events SET data = ?, hash = ? WHERE id = 2", ('{"n":99}', forged)
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


def test_undo_of_a_batch_first_call_keeps_the_chain(engine):
    """Group commit (Context.hook_tx): the batch's first call reads the head, appends,
    then fails before any database write; the next call must still chain from the
    real head, not from (0, GENESIS)."""
    from jit_hooks.server.context import RawTx

    fairy = engine.raw_connection()
    try:
        raw = fairy.driver_connection
        raw.execute("BEGIN IMMEDIATE")
        tx = RawTx(engine.dialect, fairy, audit.HeadCache())
        mark = tx.audit.mark()
        audit.append(tx, at=2000, kind="test.failed", actor="t")
        tx.audit.undo(mark)
        audit.append(tx, at=2001, kind="test.kept", actor="t")
        tx.audit.flush(tx)
        raw.execute("COMMIT")
    finally:
        fairy.close()
    result = _verify(engine)
    assert (result.ok, result.count) == (True, 6)
    with engine.begin() as conn:
        kinds = [row.kind for row in audit.iter_events(conn)]
    assert kinds[-1] == "test.kept" and "test.failed" not in kinds
