"""The audit fold: chain the events the login path inserted unchained, on one leader.

Why: with several replicas on PostgreSQL, chaining at append time means every
audited call in the fleet locks the one head row (issue 11). Instead a hook's
transaction only INSERTs its event (id from the table's sequence), which still
commits with the decision, and the fold gives events their chain position
``seq`` and ``hash`` later, in one place: one replica at a time holds the
``audit.fold`` advisory lock (server/leader.py) and the head row.

Order: PostgreSQL commits sequence values out of order, so ``seq`` is given in
fold order (ascending id among the rows visible now), not taken from the id: a
row whose transaction commits after a fold simply gets a later ``seq``. The
``UPDATE ... WHERE seq IS NULL`` plus the lock mean no event is chained twice
or skipped (tests/server/test_fold.py).

Also here: AKC misses (decisions.authorized_keys) counted per (host, login,
fingerprint, window) in ``audit_misses``, and AKC allows per (host, login,
fingerprint, window, approval) in ``audit_key_allows``; when a window has
closed, the fold turns each row with repeats into one event carrying the count.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, text

from jit_hooks.server import audit, leader
from jit_hooks.server.sql import Prepared

FOLD_LOCK = "audit.fold"
BATCH = 5000  # events chained per fold transaction (bounded work per lock hold)
MISS_WINDOW = 60  # seconds; JIT_AUDIT_MISS_WINDOW (audit_settings.py)

_UNFOLDED = text(
    "SELECT id, at, kind, actor, host, data FROM audit_events "
    "WHERE seq IS NULL ORDER BY id LIMIT :n"
)
_SET_CHAIN = text(
    "UPDATE audit_events SET seq = :seq, prev_hash = :prev_hash, hash = :hash "
    "WHERE id = :id AND seq IS NULL"
)
# One statement that both SQLite (>= 3.35) and PostgreSQL run as written.
_MISS = Prepared(
    text(
        "INSERT INTO audit_misses "
        "(host, login, fingerprint, window_start, count, first_at, last_at, reason) "
        "VALUES (:host, :login, :fingerprint, :window_start, 1, :now, :now, :reason) "
        "ON CONFLICT (host, login, fingerprint, window_start) "
        "DO UPDATE SET count = audit_misses.count + 1, last_at = excluded.last_at "
        "RETURNING count"
    ).columns(count=Integer)
)
_ALLOW = Prepared(
    text(
        "INSERT INTO audit_key_allows "
        "(host, login, fingerprint, window_start, request_id, actor, count, first_at, last_at) "
        "VALUES (:host, :login, :fingerprint, :window_start, :request_id, :actor, 1, :now, :now) "
        "ON CONFLICT (host, login, fingerprint, window_start, request_id) "
        "DO UPDATE SET count = audit_key_allows.count + 1, last_at = excluded.last_at "
        "RETURNING count"
    ).columns(count=Integer)
)
# DELETE ... RETURNING reads each count and removes its row in one step: a
# concurrent bump either lands before (and is returned) or re-creates the row.
_CLOSE_WINDOWS = text(
    "DELETE FROM audit_misses WHERE window_start <= :cutoff "
    "RETURNING host, login, fingerprint, window_start, count, first_at, last_at, reason"
)
_CLOSE_ALLOWS = text(
    "DELETE FROM audit_key_allows WHERE window_start <= :cutoff "
    "RETURNING host, login, fingerprint, window_start, request_id, actor, count, first_at, last_at"
)


def count_miss(
    conn: Any, *, host: str, login: str, fingerprint: str, reason: str, now: int, window: int
) -> bool:
    """Count one unauthenticated miss; True if it is the window's first (audit it now).

    The row is keyed by host: no row is shared by the fleet.
    """
    row = _MISS.first(
        conn,
        host=host,
        login=login,
        fingerprint=fingerprint[:100],
        window_start=now - now % window,
        now=now,
        reason=reason[:200],
    )
    return row is not None and row.count == 1


def count_allow(
    conn: Any,
    *,
    host: str,
    login: str,
    fingerprint: str,
    request_id: int,
    actor: str | None,
    now: int,
    window: int,
) -> bool:
    """Count one authorized-keys allow; True if it is the window's first for this approval."""
    row = _ALLOW.first(
        conn,
        host=host,
        login=login,
        fingerprint=fingerprint[:100],
        window_start=now - now % window,
        request_id=request_id,
        actor=actor,
        now=now,
    )
    return row is not None and row.count == 1


def close_windows(conn: Any, *, now: int, window: int) -> int:
    """Turn counts of closed windows into events (repeats only; the first was audited)."""
    n = 0
    allows = conn.execute(_CLOSE_ALLOWS, {"cutoff": now - window}).all()
    for r in sorted(allows, key=lambda r: (r.window_start, r.host, r.login, r.fingerprint,
                                           r.request_id)):  # fmt: skip
        if r.count <= 1:
            continue
        audit.append(
            conn,
            at=r.last_at,
            kind="hook.authorized_keys.repeated",
            actor=r.actor,
            host=r.host,
            data={
                "login": r.login,
                "fingerprint": r.fingerprint,
                "decision": "allow",
                "reason": "active approval",
                "request_id": r.request_id,
                "repeats": r.count - 1,
                "window_start": r.window_start,
                "window_seconds": window,
                "first_at": r.first_at,
                "last_at": r.last_at,
            },
        )
        n += 1
    rows = conn.execute(_CLOSE_WINDOWS, {"cutoff": now - window}).all()
    for r in sorted(rows, key=lambda r: (r.window_start, r.host, r.login, r.fingerprint)):
        if r.count <= 1:
            continue
        audit.append(
            conn,
            at=r.last_at,
            kind="hook.authorized_keys.repeated",
            host=r.host,
            data={
                "login": r.login,
                "fingerprint": r.fingerprint,
                "decision": "deny",
                "reason": r.reason,
                "repeats": r.count - 1,
                "window_start": r.window_start,
                "window_seconds": window,
                "first_at": r.first_at,
                "last_at": r.last_at,
            },
        )
        n += 1
    return n


def fold(conn: Any, *, now: int, window: int = MISS_WINDOW, wait: bool = False) -> int | None:
    """Chain every unfolded event visible now (in this write transaction); None if not leader.

    ``wait=True`` waits for a running fold instead of skipping (on-demand: verify,
    export, archive, checkpoint).
    """
    if not leader.try_lead(conn, FOLD_LOCK, wait=wait):
        return None
    close_windows(conn, now=now, window=window)
    last_seq, last_hash = audit.read_head(conn)  # FOR UPDATE on PostgreSQL
    total = 0
    while True:
        rows = [dict(r._mapping) for r in conn.execute(_UNFOLDED, {"n": BATCH})]
        if not rows:
            break
        for row in rows:
            last_seq, last_hash = audit.chain(last_seq, last_hash, row)
        conn.execute(_SET_CHAIN, rows)
        total += len(rows)
        if len(rows) < BATCH:
            break
    if total:
        audit.move_head(conn, last_seq, last_hash)
    return total


def fold_now(engine: Any, *, now: int, window: int = MISS_WINDOW) -> int:
    """Fold in a transaction of its own, waiting for the leader if one is folding."""
    with engine.begin() as conn:
        return fold(conn, now=now, window=window, wait=True) or 0
