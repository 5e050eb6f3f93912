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

Also here: AKC misses (decisions.authorized_keys) recorded in
``audit_miss_rows`` (``audit_misses`` before 0015) and AKC allows in
``audit_key_allows``: on PostgreSQL one row per miss or allow, or per key and
window for a group-commit batch's calls with their count (insert-only,
migrations 0012 and 0015: no row shared by concurrent asks, so neither a login
burst nor a deny storm waits on a row lock or deadlocks), on SQLite (one
writer at a time) one per window; when a window has closed, the fold turns
each (host, login, fingerprint, window[, approval]) with repeats into one
event carrying their count.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Boolean, text

from jit_hooks.server import audit, leader, sql
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
# Misses as allows (migration 0015): on PostgreSQL insert-only, one row per miss
# saying whether it is the window's first as far as this transaction can see
# (no row shared by a storm of denied asks: no lock waits, no deadlocks).
_MISS = Prepared(
    text(
        "INSERT INTO audit_miss_rows (host, login, fingerprint, window_start, count, "
        "first_at, last_at, reason, evented) "
        # CAST: PostgreSQL must deduce one type per parameter, here and in the WHERE.
        "SELECT CAST(:host AS VARCHAR), CAST(:login AS VARCHAR), "
        "CAST(:fingerprint AS VARCHAR), :window_start, 1, :now, :now, "
        "CAST(:reason AS VARCHAR), "
        "NOT EXISTS (SELECT 1 FROM audit_miss_rows WHERE host = :host AND login = :login "
        "AND fingerprint = :fingerprint AND window_start = :window_start) "
        "RETURNING evented"
    ).columns(evented=Boolean)
)
# SQLite: one writer at a time, so a window keeps one row whose count is bumped.
_BUMP_MISS = Prepared(
    text(
        "UPDATE audit_miss_rows SET count = count + 1, last_at = :now "
        "WHERE id = (SELECT id FROM audit_miss_rows WHERE host = :host AND login = :login "
        "AND fingerprint = :fingerprint AND window_start = :window_start LIMIT 1)"
    )
)
# Insert-only (migration 0012): concurrent allows of one key share no row, so they
# never wait for each other's COMMIT. The row says whether it is the window's
# first for its approval, as far as this transaction can see: two that commit at
# the same moment may both be first and both write an event (more evidence, not
# less); the fold subtracts every evented row from the repeats.
_ALLOW = Prepared(
    text(
        "INSERT INTO audit_key_allows (host, login, fingerprint, window_start, request_id, "
        "actor, count, first_at, last_at, evented) "
        # CAST: PostgreSQL must deduce one type per parameter, here and in the WHERE.
        "SELECT CAST(:host AS VARCHAR), CAST(:login AS VARCHAR), CAST(:fingerprint AS VARCHAR), "
        ":window_start, :request_id, CAST(:actor AS VARCHAR), 1, :now, :now, "
        "NOT EXISTS (SELECT 1 FROM audit_key_allows WHERE host = :host AND login = :login "
        "AND fingerprint = :fingerprint AND window_start = :window_start "
        "AND request_id = :request_id) "
        "RETURNING evented"
    ).columns(evented=Boolean)
)
# SQLite: one writer at a time (BEGIN IMMEDIATE), so no allow ever waits for a row
# lock there: repeats bump the window's row instead, as before migration 0012
# (one row per key and window, not one per allow for the fold to delete).
_BUMP = Prepared(
    text(
        "UPDATE audit_key_allows SET count = count + 1, last_at = :now "
        "WHERE id = (SELECT id FROM audit_key_allows WHERE host = :host AND login = :login "
        "AND fingerprint = :fingerprint AND window_start = :window_start "
        "AND request_id = :request_id LIMIT 1)"
    )
)
# PostgreSQL: the same INSERT, and the window's first event written by the database
# in the same statement, so the caller needs no answer from it: in a pipelined
# batch (unit.py) it costs no round trip of its own.
_ALLOW_AND_EVENT = Prepared(
    text(
        "WITH a AS ("
        + str(_ALLOW.stmt)
        + ") INSERT INTO audit_events (at, kind, actor, host, data) "
        "SELECT :now, 'hook.authorized_keys', CAST(:actor AS VARCHAR), CAST(:host AS VARCHAR), "
        "CAST(:data AS TEXT) FROM a WHERE a.evented"
    )
)
# PostgreSQL: a miss and, if it is the window's first, its event, in one statement.
_MISS_AND_EVENT = Prepared(
    text(
        "WITH m AS ("
        + str(_MISS.stmt)
        + ") INSERT INTO audit_events (at, kind, actor, host, data) "
        "SELECT :now, 'hook.authorized_keys', NULL, CAST(:host AS VARCHAR), "
        "CAST(:data AS TEXT) FROM m WHERE m.evented"
    )
)
# PostgreSQL, a whole batch (sql.Sets): the calls' allow and miss rows and each
# window's first event in one statement. ``evented`` is what the calls' own
# statements, run one after the other, would have said: no row of the window
# committed or written earlier in this transaction, and the first of the batch's
# own (row_number by the calls' order; the CTE ``e`` is computed once). Still
# insert-only: concurrent batches share no row.
_COUNTS_AND_EVENTS = Prepared(
    text(
        # The calls' rows travel as one JSON text (psycopg's Python array dumpers cost
        # more than the statement): an array of [allow, host, ..., data] per call.
        "WITH i AS (SELECT (r->>0)::boolean AS allow, r->>1 AS host, r->>2 AS login, "
        "r->>3 AS fingerprint, (r->>4)::integer AS window_start, "
        "(r->>5)::integer AS request_id, r->>6 AS actor, (r->>7)::integer AS now, "
        "r->>8 AS reason, r->>9 AS data, ord "
        "FROM json_array_elements(CAST(:rows AS JSON)) WITH ORDINALITY AS j(r, ord)), "
        # One row per key (and approval, or reason) and window for the whole batch,
        # counting its calls: the fold sums counts and evented rows as before.
        "g AS (SELECT allow, host, login, fingerprint, window_start, request_id, actor, "
        "reason, min(ord) AS ord, count(*) AS n, min(now) AS first_at, max(now) AS last_at, "
        "(array_agg(now ORDER BY ord))[1] AS at, (array_agg(data ORDER BY ord))[1] AS data "
        "FROM i GROUP BY allow, host, login, fingerprint, window_start, request_id, actor, "
        "reason), "
        # LATERAL ... LIMIT 1: one index probe per row (a NOT EXISTS here was planned
        # as a hashed scan of the whole table, growing until the fold empties it).
        "e AS (SELECT g.*, row_number() OVER (PARTITION BY allow, host, login, fingerprint, "
        "window_start, request_id ORDER BY ord) = 1 AND seen.hit IS NULL AS evented FROM g "
        "LEFT JOIN LATERAL (SELECT 1 AS hit FROM audit_key_allows a WHERE g.allow "
        "AND a.host = g.host AND a.login = g.login AND a.fingerprint = g.fingerprint "
        "AND a.window_start = g.window_start AND a.request_id = g.request_id "
        "UNION ALL SELECT 1 FROM audit_miss_rows m WHERE NOT g.allow AND m.host = g.host "
        "AND m.login = g.login AND m.fingerprint = g.fingerprint "
        "AND m.window_start = g.window_start LIMIT 1) seen ON true), "
        "a AS (INSERT INTO audit_key_allows (host, login, fingerprint, window_start, "
        "request_id, actor, count, first_at, last_at, evented) SELECT host, login, "
        "fingerprint, window_start, request_id, actor, n, first_at, last_at, evented FROM e "
        "WHERE allow), "
        "m AS (INSERT INTO audit_miss_rows (host, login, fingerprint, window_start, count, "
        "first_at, last_at, reason, evented) SELECT host, login, fingerprint, window_start, "
        "n, first_at, last_at, reason, evented FROM e WHERE NOT allow) "
        "INSERT INTO audit_events (at, kind, actor, host, data) "
        "SELECT at, 'hook.authorized_keys', actor, host, data FROM e WHERE evented "
        "ORDER BY ord"
    ),
    binary=True,
)
_COUNT_FIELDS = (
    "allow",
    "host",
    "login",
    "fingerprint",
    "window_start",
    "request_id",
    "actor",
    "now",
    "reason",
    "data",
)


def _write_counts(conn: Any, items: list[dict[str, Any]]) -> None:
    """sql.Writer: the batch's allows and misses (and first events), in the calls' order."""
    rows = json.dumps([[i.get(f) for f in _COUNT_FIELDS] for i in items])
    _COUNTS_AND_EVENTS.send(conn, rows=rows)


# DELETE ... RETURNING reads each count and removes its row in one step: a
# concurrent bump either lands before (and is returned) or re-creates the row.
_CLOSE_WINDOWS = text(
    "DELETE FROM audit_miss_rows WHERE window_start <= :cutoff "
    "RETURNING host, login, fingerprint, window_start, count, first_at, last_at, reason, "
    "evented"
)
_CLOSE_ALLOWS = text(
    "DELETE FROM audit_key_allows WHERE window_start <= :cutoff "
    "RETURNING host, login, fingerprint, window_start, request_id, actor, count, first_at, "
    "last_at, evented"
)


def count_miss(
    conn: Any,
    *,
    host: str,
    login: str,
    fingerprint: str,
    reason: str,
    now: int,
    window: int,
    first_event: dict | None = None,
) -> bool:
    """Count one unauthenticated miss; True if it is the window's first (audit it now).

    ``first_event``: the data of the ``hook.authorized_keys`` event the caller
    writes for a first (at ``now``, no actor, on ``host``). On PostgreSQL it is
    written here, by the same statement, and the answer is False. Rows are
    keyed by host: no row is shared by the fleet, and on PostgreSQL none by
    two misses.
    """
    params = {
        "host": host,
        "login": login,
        "fingerprint": fingerprint[:100],
        "window_start": now - now % window,
        "now": now,
        "reason": reason[:200],
    }
    return _count(conn, params, first_event, _MISS_AND_EVENT, _BUMP_MISS, _MISS, allow=False)


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
    first_event: dict | None = None,
) -> bool:
    """Record one authorized-keys allow; True if it is the window's first for this approval.

    ``first_event``: the data of the ``hook.authorized_keys`` event the caller
    writes for a first (at ``now``, by ``actor``, on ``host``). On PostgreSQL it
    is written here, by the same statement, and the answer is False: nothing is
    left for the caller to write.
    """
    params = {
        "host": host,
        "login": login,
        "fingerprint": fingerprint[:100],
        "window_start": now - now % window,
        "request_id": request_id,
        "actor": actor,
        "now": now,
    }
    return _count(conn, params, first_event, _ALLOW_AND_EVENT, _BUMP, _ALLOW, allow=True)


def _count(
    conn: Any,
    params: dict,
    first_event: dict | None,
    with_event: Any,
    bump: Any,
    row: Any,
    *,
    allow: bool,
) -> bool:
    """One allow or miss, per dialect: PostgreSQL writes the row and the window's
    first event in one statement (in a batch with sql.Sets: one for the whole
    batch); SQLite bumps the window's counter row when it exists; otherwise the
    row is written and its ``evented`` says if it is a first."""
    if first_event is not None and conn.dialect.name == "postgresql":
        data = audit.canonical(first_event)
        sets = sql.writes.sets
        if sets is not None:
            sets.add(_write_counts, params | {"allow": allow, "data": data})
            return False
        with_event.send(conn, data=data, **params)
        return False
    if conn.dialect.name == "sqlite" and bump.execute(conn, **params):
        return False
    written = row.first(conn, **params)
    return written is not None and bool(written.evented)


def _allow_totals(rows: list[Any]) -> list[dict[str, Any]]:
    """The deleted allow rows summed per (window, host, login, key, approval), in that order."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r.window_start, r.host, r.login, r.fingerprint, r.request_id)
        g = groups.get(key)
        if g is None:
            groups[key] = {
                "actor": r.actor,
                "count": r.count,
                "evented": int(bool(r.evented)),
                "first_at": r.first_at,
                "last_at": r.last_at,
            }
            continue
        g["count"] += r.count
        g["evented"] += int(bool(r.evented))
        g["first_at"] = min(g["first_at"], r.first_at)
        g["last_at"] = max(g["last_at"], r.last_at)
        g["actor"] = g["actor"] or r.actor
    return [
        dict(zip(("window_start", "host", "login", "fingerprint", "request_id"), k, strict=True))
        | g
        for k, g in sorted(groups.items())
    ]


def close_windows(conn: Any, *, now: int, window: int) -> int:
    """Turn counts of closed windows into events (repeats only; the first was audited)."""
    n = 0
    allows = conn.execute(_CLOSE_ALLOWS, {"cutoff": now - window}).all()
    for g in _allow_totals(allows):
        # Each evented row's allow is already an event of its own.
        repeats = g["count"] - g["evented"]
        if repeats <= 0:
            continue
        audit.append(
            conn,
            at=g["last_at"],
            kind="hook.authorized_keys.repeated",
            actor=g["actor"],
            host=g["host"],
            data={
                "login": g["login"],
                "fingerprint": g["fingerprint"],
                "decision": "allow",
                "reason": "active approval",
                "request_id": g["request_id"],
                "repeats": repeats,
                "window_start": g["window_start"],
                "window_seconds": window,
                "first_at": g["first_at"],
                "last_at": g["last_at"],
            },
        )
        n += 1
    misses = conn.execute(_CLOSE_WINDOWS, {"cutoff": now - window}).all()
    for g in _miss_totals(misses):
        repeats = g["count"] - g["evented"]
        if repeats <= 0:
            continue
        audit.append(
            conn,
            at=g["last_at"],
            kind="hook.authorized_keys.repeated",
            host=g["host"],
            data={
                "login": g["login"],
                "fingerprint": g["fingerprint"],
                "decision": "deny",
                "reason": g["reason"],
                "repeats": repeats,
                "window_start": g["window_start"],
                "window_seconds": window,
                "first_at": g["first_at"],
                "last_at": g["last_at"],
            },
        )
        n += 1
    return n


def _miss_totals(rows: list[Any]) -> list[dict[str, Any]]:
    """The deleted miss rows summed per (window, host, login, key), in that order.

    The reason is the earliest miss's (what the window's first event said).
    """
    groups: dict[tuple, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r.first_at):
        key = (r.window_start, r.host, r.login, r.fingerprint)
        g = groups.get(key)
        if g is None:
            groups[key] = {
                "count": r.count,
                "evented": int(bool(r.evented)),
                "first_at": r.first_at,
                "last_at": r.last_at,
                "reason": r.reason,
            }
            continue
        g["count"] += r.count
        g["evented"] += int(bool(r.evented))
        g["last_at"] = max(g["last_at"], r.last_at)
    return [
        dict(zip(("window_start", "host", "login", "fingerprint"), k, strict=True)) | g
        for k, g in sorted(groups.items())
    ]


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
