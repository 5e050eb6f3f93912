"""One leader for background work that must run once across replicas (audit fold, sweeps).

PostgreSQL: a transaction-scoped advisory lock, tried without waiting
(``pg_try_advisory_xact_lock``): the replica that gets it does the work in that
transaction; the others skip this round. The lock goes with the transaction
(COMMIT, ROLLBACK, or the connection dying), so a replica that crashes hands
over at once and no lock outlives its holder. SQLite: the transaction already
holds the database's only write lock (BEGIN IMMEDIATE, db.py), so whoever is
in a write transaction leads.

Usage, inside a write transaction::

    with engine.begin() as conn:
        if leader.try_lead(conn, "audit.fold"):
            ...  # runs on one replica at a time
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import text


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name`` (same on every replica)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def try_lead(conn: Any, name: str, *, wait: bool = False) -> bool:
    """Take the leader lock ``name`` for the rest of ``conn``'s transaction; False if taken.

    ``wait=True`` blocks until the current leader's transaction ends (for on-demand
    work such as ``audit verify``, which must not skip the fold).
    """
    if conn.dialect.name != "postgresql":
        return True
    if wait:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})
        return True
    return bool(
        conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(name)}).scalar()
    )
