"""Append-only, hash-chained audit log.

Each event stores ``prev_hash`` (the previous event's hash, or GENESIS) and
``hash`` = sha256 over the canonical JSON of its fields plus ``prev_hash``. An
``audit_head`` row remembers the newest event, so edits, deletions, reorders
and a cut-off tail are all detected by :func:`verify`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, select

from jit_hooks.server.sql import Prepared
from jit_hooks.server.tables import audit_events, audit_head

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


# The append's three statements, prepared once (jit_hooks/server/sql.py): every
# hook call appends an event. FOR UPDATE serialises appends on PostgreSQL;
# SQLite already holds the write lock (BEGIN IMMEDIATE) and omits the clause.
_HEAD = Prepared(select(audit_head.c.last_id, audit_head.c.hash).with_for_update())
_INSERT = Prepared(
    audit_events.insert().values(
        {
            c: bindparam(c)
            for c in ("id", "at", "kind", "actor", "host", "data", "prev_hash", "hash")
        }
    )
)
_MOVE_HEAD = Prepared(
    audit_head.update()
    .where(audit_head.c.id == 1)
    .values(last_id=bindparam("new_id"), hash=bindparam("digest"))
)
_NEW_HEAD = Prepared(
    audit_head.insert().values(id=1, last_id=bindparam("new_id"), hash=bindparam("digest"))
)


class HeadCache:
    """The chain head of one group-commit batch (Context.hook_tx) and its unwritten events.

    Inside one write transaction that nobody else can write to, the head need
    not be read and moved per event: the batch reads it once, chains its events
    in order in Python, and :meth:`flush` writes them with one ``executemany``
    and moves the head once, in the same transaction, before its COMMIT.
    """

    __slots__ = ("loaded", "existed", "last_id", "hash", "pending")

    def __init__(self) -> None:
        self.loaded = False
        self.existed = False
        self.last_id = 0
        self.hash = GENESIS
        self.pending: list[dict[str, Any]] = []

    def mark(self) -> tuple[bool, int, str, int]:
        """A point to go back to if the current call fails (see :meth:`undo`)."""
        return self.loaded, self.last_id, self.hash, len(self.pending)

    def undo(self, mark: tuple[bool, int, str, int]) -> None:
        """Forget the events appended since ``mark`` (their call failed before writing).

        ``loaded`` goes back too: a call that read the head first and then failed
        must not leave the next call chaining from the unloaded (0, GENESIS).
        """
        self.loaded, self.last_id, self.hash, n = mark
        del self.pending[n:]

    def flush(self, conn: Any) -> None:
        """Write the pending events and move the head (in the batch's transaction)."""
        if not self.pending:
            return
        _INSERT.executemany(conn, self.pending)
        (_MOVE_HEAD if self.existed else _NEW_HEAD).execute(
            conn, new_id=self.last_id, digest=self.hash
        )
        self.pending = []
        self.existed = True


def append(
    conn: Connection,
    *,
    at: int,
    kind: str,
    actor: str | None = None,
    host: str | None = None,
    data: dict | None = None,
) -> int:
    """Append one event inside the caller's (write) transaction; return its id.

    In a hook batch (``conn.audit`` is a :class:`HeadCache`) the event is chained
    now and written by the batch's flush before its COMMIT.
    """
    cache: HeadCache | None = getattr(conn, "audit", None)
    if cache is not None and cache.loaded:
        head = None
        prev_id, prev_hash = cache.last_id, cache.hash
    else:
        head = _HEAD.first(conn)
        prev_id, prev_hash = (head.last_id, head.hash) if head else (0, GENESIS)
        if cache is not None:
            cache.loaded, cache.existed = True, head is not None
    new_id = prev_id + 1
    text = canonical(data or {})
    digest = event_hash(
        id=new_id, at=at, kind=kind, actor=actor, host=host, data=text, prev_hash=prev_hash
    )
    row = {
        "id": new_id,
        "at": at,
        "kind": kind,
        "actor": actor,
        "host": host,
        "data": text,
        "prev_hash": prev_hash,
        "hash": digest,
    }
    if cache is not None:
        cache.pending.append(row)
        cache.last_id, cache.hash = new_id, digest
        return new_id
    _INSERT.execute(conn, **row)
    (_MOVE_HEAD if head else _NEW_HEAD).execute(conn, new_id=new_id, digest=digest)
    return new_id


def event_dict(row: Any) -> dict:
    """An audit row as the API's event object."""
    return {
        "id": row.id,
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


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    problem: str | None = None
    event_id: int | None = None


def verify(conn: Connection) -> VerifyResult:
    """Walk the whole chain; report the first event that breaks it."""
    prev_hash = GENESIS
    expected_id = 1
    count = 0
    for row in iter_events(conn):
        if row.id != expected_id:
            return VerifyResult(
                False, count, f"event {expected_id} is missing (next is {row.id})", expected_id
            )
        if row.prev_hash != prev_hash:
            return VerifyResult(
                False, count, f"event {row.id}: prev_hash does not match event {row.id - 1}", row.id
            )
        digest = event_hash(
            id=row.id,
            at=row.at,
            kind=row.kind,
            actor=row.actor,
            host=row.host,
            data=row.data,
            prev_hash=row.prev_hash,
        )
        if digest != row.hash:
            return VerifyResult(
                False, count, f"event {row.id}: contents do not match its hash", row.id
            )
        prev_hash = row.hash
        expected_id += 1
        count += 1
    head = conn.execute(select(audit_head.c.last_id, audit_head.c.hash)).first()
    if head is None:
        if count:
            return VerifyResult(False, count, "chain head record is missing", None)
    elif head.last_id != count or head.hash != prev_hash:
        return VerifyResult(
            False,
            count,
            f"chain ends at event {count} but the head records event {head.last_id}",
            head.last_id,
        )
    return VerifyResult(True, count)
