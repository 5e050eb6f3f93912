"""Migration 0015 moves the miss counters to a new table: old rows carried, old code fails loudly.

A fresh database of the suite's backend (SQLite file, or an empty database on
the session's PostgreSQL cluster), migrated to 0014, given a chained audit
event and 0014-era counter rows, then upgraded to head. Before the rename the
new insert-only rows lived under the old name, where a replica still running
the 0014 code read them as counters and deleted them (review r3, rolling
upgrade); now that code's statements find no table and roll back.
"""

from __future__ import annotations

import itertools
import os

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from jit_hooks.server import audit, fold
from jit_hooks.server.db import make_engine, upgrade

NOW, WINDOW = 1_000_020, 60
_N = itertools.count(os.getpid() * 100)

# What the 0014-era fold and miss counter ran (fold.py before e90f38b).
OLD_FOLD = (
    "DELETE FROM audit_misses WHERE window_start <= :cutoff "
    "RETURNING host, login, fingerprint, window_start, count, first_at, last_at, reason"
)
OLD_COUNT = (
    "INSERT INTO audit_misses (host, login, fingerprint, window_start, count, first_at, "
    "last_at, reason) VALUES ('web1', 'deploy', 'SHA256:n', 1000020, 1, 1, 1, 'r')"
)


@pytest.fixture
def engine(db_backend, tmp_path, request):  # noqa: ANN001
    if db_backend == "postgresql":
        url = request.getfixturevalue("pg").cluster.create_database(f"miss_rows_{next(_N)}")
    else:
        url = f"sqlite:///{tmp_path / 'jit.db'}"
    eng = make_engine(url)
    upgrade(eng, "0014_sso_flow_limits")
    with eng.begin() as conn:
        audit.append(conn, at=NOW - 100, kind="test.event", actor="t", data={"n": 1})
        for fp, count in (("SHA256:k", 5), ("SHA256:j", 1)):
            conn.execute(
                text(
                    "INSERT INTO audit_misses (host, login, fingerprint, window_start, count, "
                    "first_at, last_at, reason) "
                    "VALUES ('web1', 'deploy', :fp, 1000020, :count, 1000021, 1000030, 'r0')"
                ),
                {"fp": fp, "count": count},
            )
    upgrade(eng)
    yield eng
    eng.dispose()


def test_old_counter_rows_are_carried_into_the_new_table_and_folded(engine):
    tables = set(inspect(engine).get_table_names())
    assert "audit_miss_rows" in tables
    assert "audit_misses" not in tables
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT fingerprint, count, evented FROM audit_miss_rows ORDER BY fingerprint")
        ).all()
    # Each counter row's first miss was audited before the upgrade.
    assert [tuple(r) for r in rows] == [("SHA256:j", 1, True), ("SHA256:k", 5, True)]
    # The new code counts into the new table: one more miss of k in the same window.
    with engine.begin() as conn:
        assert not fold.count_miss(
            conn, host="web1", login="deploy", fingerprint="SHA256:k", reason="r1",
            now=NOW + 30, window=WINDOW,
        )  # fmt: skip
    with engine.connect() as conn:
        n = conn.execute(
            text("SELECT sum(count) FROM audit_miss_rows WHERE fingerprint = 'SHA256:k'")
        ).scalar()
    assert n == 6
    fold.fold_now(engine, now=NOW + 2 * WINDOW, window=WINDOW)
    with engine.connect() as conn:
        repeated = conn.execute(
            text("SELECT data FROM audit_events WHERE kind = 'hook.authorized_keys.repeated'")
        ).all()
        assert conn.execute(text("SELECT count(*) FROM audit_miss_rows")).scalar() == 0
        assert audit.verify(conn).ok
    import json

    # k: 5 before the upgrade + 1 after, the first audited; j had no repeats.
    assert [(json.loads(d)["fingerprint"], json.loads(d)["repeats"]) for (d,) in repeated] == [
        ("SHA256:k", 5)
    ]


@pytest.mark.parametrize("stmt", [OLD_FOLD, OLD_COUNT], ids=["fold", "count"])
def test_a_replica_on_the_old_code_fails_instead_of_deleting_new_rows(engine, stmt):
    with engine.begin() as conn:
        fold.count_miss(
            conn, host="web1", login="deploy", fingerprint="SHA256:m", reason="r",
            now=NOW, window=WINDOW,
        )  # fmt: skip
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(text(stmt), {"cutoff": NOW + WINDOW})
    with engine.connect() as conn:
        left = conn.execute(text("SELECT sum(count) FROM audit_miss_rows")).scalar()
    assert left == 7  # 5 + 1 carried, 1 new: nothing deleted or lost
