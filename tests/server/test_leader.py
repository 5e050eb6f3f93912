"""leader.try_lead on a real PostgreSQL: one holder per name at a time, released at COMMIT."""

from __future__ import annotations

import pytest

from jit_hooks.server import leader
from jit_hooks.testing import postgres

pytestmark = pytest.mark.skipif(not postgres.available(), reason="needs PostgreSQL 15")


@pytest.fixture(scope="module")
def pg_engine():
    from sqlalchemy import create_engine

    with postgres.make_cluster().init().start() as cluster:
        eng = create_engine(cluster.create_database("leader"))
        yield eng
        eng.dispose()


def test_one_leader_at_a_time_and_handover_at_commit(pg_engine):
    a, b = pg_engine.connect(), pg_engine.connect()
    try:
        ta = a.begin()
        assert leader.try_lead(a, "audit.fold")
        tb = b.begin()
        assert not leader.try_lead(b, "audit.fold")  # A holds it
        assert leader.try_lead(b, "sweep")  # another name is independent
        tb.rollback()
        ta.commit()  # A's transaction ends: the lock goes with it
        with b.begin():
            assert leader.try_lead(b, "audit.fold")
    finally:
        a.close()
        b.close()


def test_lock_key_is_stable_and_signed_64_bit():
    k = leader.lock_key("audit.fold")
    assert k == leader.lock_key("audit.fold") and -(2**63) <= k < 2**63
    assert k != leader.lock_key("sweep")
