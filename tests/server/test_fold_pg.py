"""The audit fold on a real PostgreSQL, where ids commit out of order and replicas race.

Own throwaway cluster (initdb in a temp dir, free port on 127.0.0.1). The login
path's appends are plain INSERTs here; the fold must chain every committed
event exactly once, whatever order the transactions commit in and however
many replicas try to fold at the same time.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from jit_hooks.server import audit, fold
from jit_hooks.server.db import make_engine, upgrade
from jit_hooks.testing import postgres

pytestmark = pytest.mark.skipif(not postgres.available(), reason="needs PostgreSQL 15")


@pytest.fixture(scope="module")
def cluster():
    with postgres.make_cluster().init().start() as c:
        yield c


@pytest.fixture
def engine(cluster, request):
    name = "fold_" + request.node.name.lower()[:40]
    eng = make_engine(cluster.create_database(name))
    upgrade(eng)
    yield eng
    eng.dispose()


def _chain(engine) -> list[tuple[int, int]]:  # noqa: ANN001
    with engine.connect() as conn:
        return [
            tuple(r) for r in conn.execute(text("SELECT id, seq FROM audit_events ORDER BY seq"))
        ]


def test_a_lower_id_committed_after_a_fold_is_chained_next(engine):
    slow = engine.connect()
    try:
        tx = slow.begin()
        audit.append(slow, at=1, kind="test.slow", data={})  # takes id 1, commits last
        with engine.begin() as conn:
            audit.append(conn, at=2, kind="test.fast", data={})  # id 2
        assert fold.fold_now(engine, now=10) == 1
        assert _chain(engine) == [(2, 1)]
        tx.commit()
    finally:
        slow.close()
    assert fold.fold_now(engine, now=10) == 1
    assert _chain(engine) == [(2, 1), (1, 2)]
    with engine.begin() as conn:
        assert audit.verify(conn, now=10**6).ok


def test_racing_writers_and_folders_chain_every_event_once(engine):
    writers, per_writer, folders = 6, 150, 3
    stop = threading.Event()
    errors: list[BaseException] = []
    folded = [0] * folders

    def write(w: int) -> None:
        try:
            for i in range(per_writer):
                with engine.begin() as conn:
                    audit.append(conn, at=i, kind="test.race", host=f"h{w}", data={"i": i})
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    def fold_loop(f: int) -> None:
        try:
            while not stop.is_set():
                with engine.begin() as conn:
                    folded[f] += fold.fold(conn, now=10**6) or 0
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=fold_loop, args=(f,)) for f in range(folders)]
    threads += [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads[folders:]:
        t.join()
    stop.set()
    for t in threads[:folders]:
        t.join()
    assert errors == []
    rest = fold.fold_now(engine, now=10**6)
    total = writers * per_writer
    assert sum(folded) + rest == total  # each event folded by exactly one fold
    chain = _chain(engine)
    assert [seq for _, seq in chain] == list(range(1, total + 1))
    assert len({i for i, _ in chain}) == total
    with engine.begin() as conn:
        result = audit.verify(conn, now=10**6)
    assert (result.ok, result.last_seq) == (True, total), result.problem
