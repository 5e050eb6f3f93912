"""Append-only, hash-chained audit log (design: docs/server.md, "Audit log").

Each folded event stores its chain position ``seq``, ``prev_hash`` (the
previous event's hash, or GENESIS) and ``hash`` = sha256 over the canonical
JSON of its fields (with ``seq`` as "id") plus ``prev_hash``. The
``audit_head`` row remembers the newest folded event, so edits, deletions,
reorders and a cut-off tail are detected by :func:`verify`; signed checkpoints
outside the database (server/checkpoints.py) catch a rewritten head or a wipe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from jit_hooks.errors import JitError
from jit_hooks.server.sql import Prepared
from jit_hooks.server.tables import (
    audit_archives,
    audit_events,
    audit_head,
    hosts,
    requests,
    users,
)

GENESIS = "0" * 64


# One encoder, built once: json.dumps with options builds a JSONEncoder per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_ascii = json.encoder.encode_basestring_ascii


def _str(value: str | None) -> str:
    return "null" if value is None else _ascii(value)


def canonical(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, ASCII only."""
    return _CANONICAL.encode(obj)


def event_hash(
    *, id: int, at: int, kind: str, actor: str | None, host: str | None, data: str, prev_hash: str
) -> str:
    """The hash of one event; ``data`` is its canonical JSON text as stored."""
    if (
        type(id) is int
        and type(at) is int
        and type(kind) is str
        and type(data) is str
        and type(prev_hash) is str
        and (actor is None or type(actor) is str)
        and (host is None or type(host) is str)
    ):
        # The common case, written out: the same bytes as canonical() (tested).
        body = (
            f'{{"actor":{_str(actor)},"at":{at},"data":{_str(data)},"host":{_str(host)},'
            f'"id":{id},"kind":{_str(kind)},"prev_hash":{_str(prev_hash)}}}'
        )
        return hashlib.sha256(body.encode()).hexdigest()
    body = canonical(
        {
            "id": id,
            "at": at,
            "kind": kind,
            "actor": actor,
            "host": host,
            "data": data,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(body.encode()).hexdigest()


# The append's statements, prepared once (jit_hooks/server/sql.py): every hook
# call appends an event. The head is read and moved only where one writer holds
# the whole database anyway (SQLite, BEGIN IMMEDIATE): there the event is
# chained at once. Elsewhere (PostgreSQL, several replicas) the login path only
# INSERTs; the fold (server/fold.py) chains later, on one leader.
_HEAD = Prepared(
    select(audit_head.c.last_id, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
)
_COLUMNS = ("at", "kind", "actor", "host", "data", "seq", "prev_hash", "hash")
_INSERT = Prepared(audit_events.insert().values({c: bindparam(c) for c in _COLUMNS}))
_MOVE_HEAD = Prepared(
    audit_head.update()
    .where(audit_head.c.id == 1)
    .values(last_id=bindparam("new_seq"), hash=bindparam("digest"))
)


class ChainError(JitError):
    """Raised when the chain head row is missing: the log was tampered with (fail closed)."""


def chains_inline(conn: Any) -> bool:
    """True where an append may chain at once: SQLite, whose write lock serialises writers."""
    return conn.dialect.name == "sqlite"


def read_head(conn: Any) -> tuple[int, str]:
    """(last folded seq, its hash), locking the head row where the database can."""
    head = _HEAD.first(conn)
    if head is None:
        raise ChainError("audit chain head record is missing: run `jit-server audit verify`")
    return head.last_id, head.hash


def move_head(conn: Any, seq: int, digest: str) -> None:
    _MOVE_HEAD.execute(conn, new_seq=seq, digest=digest)


def chain(prev_seq: int, prev_hash: str, row: dict[str, Any]) -> tuple[int, str]:
    """Give ``row`` (at, kind, actor, host, data) the next chain position; return the new head."""
    seq = prev_seq + 1
    # The hashed field is called "id" (events before migration 0004 had seq == id).
    digest = event_hash(
        id=seq,
        at=row["at"],
        kind=row["kind"],
        actor=row["actor"],
        host=row["host"],
        data=row["data"],
        prev_hash=prev_hash,
    )
    row["seq"], row["prev_hash"], row["hash"] = seq, prev_hash, digest
    return seq, digest


def append(
    conn: Connection,
    *,
    at: int,
    kind: str,
    actor: str | None = None,
    host: str | None = None,
    data: dict | None = None,
) -> None:
    """Append one event inside the caller's (write) transaction.

    It commits or rolls back with the caller's transaction: no answer leaves
    without its event. On SQLite it is chained now; elsewhere it is inserted
    unchained and the fold gives it its place.
    """
    row: dict[str, Any] = {
        "at": at,
        "kind": kind,
        "actor": actor,
        "host": host,
        "data": canonical(data or {}),
        "seq": None,
        "prev_hash": None,
        "hash": None,
    }
    if not chains_inline(conn):
        # Pipelined in a batch of hook calls (unit.py): no round trip of its own; it
        # still commits, or fails the batch, with the decision.
        _INSERT.send(conn, **row)
        return
    seq, digest = chain(*read_head(conn), row)
    _INSERT.execute(conn, **row)
    move_head(conn, seq, digest)


def event_dict(row: Any) -> dict:
    """An audit row as the API's event object (seq, prev_hash, hash: null until folded)."""
    return {
        "id": row.id,
        "seq": row.seq,
        "at": row.at,
        "kind": row.kind,
        "actor": row.actor,
        "host": row.host,
        "data": json.loads(row.data),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


def iter_events(conn: Connection, *, after_id: int = 0, limit: int | None = None) -> Iterator[Any]:
    q = select(audit_events).where(audit_events.c.id > after_id).order_by(audit_events.c.id)
    if limit is not None:
        q = q.limit(limit)
    yield from conn.execute(q)


def iter_chain(conn: Connection, *, after_seq: int = 0) -> Iterator[Any]:
    """Folded events in chain order."""
    q = (
        select(audit_events)
        .where(audit_events.c.seq > after_seq)
        .order_by(audit_events.c.seq)
        .execution_options(yield_per=2000)
    )
    yield from conn.execute(q)


def row_hash(row: Any) -> str:
    """The hash an event row should carry, from its stored fields."""
    return event_hash(
        id=row.seq,
        at=row.at,
        kind=row.kind,
        actor=row.actor,
        host=row.host,
        data=row.data,
        prev_hash=row.prev_hash,
    )


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int  # events checked in the database
    problem: str | None = None
    event_id: int | None = None  # the seq where it broke
    first_seq: int = 1  # where the database's chain starts (after the newest archive)
    start_hash: str = GENESIS  # the prev_hash of first_seq
    last_seq: int = 0
    last_hash: str = GENESIS


# Events not folded after this long mean the fold is not running (or rows were
# slipped in behind it): a verify failure.
FOLD_GRACE_SECONDS = 10


def chain_start(conn: Connection) -> tuple[int, str]:
    """(first seq, its prev_hash) of the database's chain: after the newest archive marker."""
    m = conn.execute(
        select(audit_archives.c.last_seq, audit_archives.c.last_hash)
        .order_by(audit_archives.c.last_seq.desc())
        .limit(1)
    ).first()
    return (1, GENESIS) if m is None else (m.last_seq + 1, m.last_hash)


def open_rows(conn: Connection) -> dict[str, tuple[int, int]]:
    """Per counted-row table: (rows, calls they count) not yet folded into the chain.

    Evidence the chain does not cover yet (docs/server.md, audit design): the
    fold turns them into events when their window closes.
    """
    from jit_hooks.server.tables import audit_key_allows, audit_miss_rows

    found = {}
    for t in (audit_key_allows, audit_miss_rows):
        n, total = conn.execute(select(func.count(), func.coalesce(func.sum(t.c.count), 0))).one()
        found[t.name] = (int(n), int(total))
    return found


def verify(conn: Connection, *, now: int | None = None) -> VerifyResult:
    """Walk the database's chain; report the first event that breaks it.

    Detects edited, deleted and reordered events, a tail cut without moving the
    head, events left unfolded, and an empty or short chain in a database that
    holds users, hosts or requests (each of which was audited when made). A cut
    tail *with* a rewritten head, or a wipe, needs the signed checkpoints
    (server/checkpoints.py).
    """
    first, prev_hash = chain_start(conn)
    start_hash = prev_hash
    expected = first
    count = 0
    bad = None
    for row in iter_chain(conn, after_seq=-1):
        if row.seq != expected:
            bad = (f"event {expected} is missing (next is {row.seq})", expected)
            if row.seq < first:
                bad = (f"event {row.seq} lies before the chain start {first}", row.seq)
            break
        if row.prev_hash != prev_hash:
            bad = (f"event {row.seq}: prev_hash does not match event {row.seq - 1}", row.seq)
            break
        if row_hash(row) != row.hash:
            bad = (f"event {row.seq}: contents do not match its hash", row.seq)
            break
        prev_hash = row.hash
        expected += 1
        count += 1
    last = expected - 1

    def result(problem: str | None, at: int | None = None) -> VerifyResult:
        return VerifyResult(problem is None, count, problem, at, first, start_hash, last, prev_hash)

    if bad is not None:
        return result(*bad)
    head = conn.execute(
        select(audit_head.c.last_id, audit_head.c.hash).where(audit_head.c.id == 1)
    ).first()
    if head is None:
        return result("chain head record is missing")
    if head.last_id != last or head.hash != prev_hash:
        return result(f"chain ends at event {last} but the head records event {head.last_id}",
                      head.last_id)  # fmt: skip
    if now is not None:
        stale = conn.execute(
            select(func.count(), func.min(audit_events.c.id)).where(
                audit_events.c.seq.is_(None), audit_events.c.at < now - FOLD_GRACE_SECONDS
            )
        ).first()
        if stale is not None and stale[0]:
            return result(
                f"{stale[0]} events not folded into the chain (first id {stale[1]}): "
                "is the service's fold running?"
            )
    implied = sum(
        conn.execute(select(func.count()).select_from(t)).scalar() or 0
        for t in (users, hosts, requests)
    )
    if last < implied:
        return result(
            f"the chain holds {last} events but the database has {implied} users, hosts "
            "and requests, each audited when made: events were deleted"
        )
    return result(None)
