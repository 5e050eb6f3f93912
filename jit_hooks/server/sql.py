"""Prepared Core statements for the hook path: compiled once, run on the DBAPI connection.

A hook call runs a handful of small indexed statements. Through SQLAlchemy's
execution machinery (statement construction, cache key, execution context,
result metadata) each one cost ~100-200 µs of Python; the same statements on
the sqlite3 connection itself take ~10 µs, and on the psycopg connection
(where psycopg prepares them server-side after a few uses) a round trip plus
a few µs (bench P3 and P3pg, docs/performance.md).

A :class:`Prepared` wraps a Core statement whose values are all named
``bindparam()`` s. It is compiled once per dialect and executed on the raw
DBAPI connection of the caller's SQLAlchemy ``Connection``, in the caller's
transaction (BEGIN, commit and rollback stay SQLAlchemy's). Errors are
wrapped exactly as SQLAlchemy wraps them (OperationalError -> 503,
IntegrityError -> 409 in the app's handlers). Any other database goes
through ``Connection.execute`` as usual, so there is one statement, written
once, for all.

Only use it for statements whose bind values need no type processing
(integers, strings, booleans): result rows come back as named tuples of the
raw values (a Boolean column reads as 0/1 on SQLite, which the callers only
test for truth).

:data:`writes` counts, per thread, the statements that may have written
(anything but a plain SELECT), Prepared or not (``instrument`` hooks the
engine): the unit of work uses it to tell a failed call that wrote nothing
from one that must be rolled back (unit.py, group commit on PostgreSQL).
There a batch also runs in psycopg's pipeline mode: :meth:`Prepared.send`
queues a statement whose result nobody reads instead of waiting a round trip
for it.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections import namedtuple
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Executable

# The dialects whose DBAPI connection a Prepared uses directly.
_RAW = {"sqlite", "postgresql"}


class _Writes(threading.local):
    n = 0
    # The psycopg Pipeline this thread's batch runs in (unit.py), or None.
    pipeline: Any = None
    # That batch's set-oriented statements (:class:`Sets`), or None.
    sets: Sets | None = None


writes = _Writes()


def _may_write(sql: str) -> bool:
    return not sql.lstrip()[:6].upper() == "SELECT" or " FOR UPDATE" in sql.upper()


def _before_write(conn: Connection) -> None:
    """Count a statement that may write; in a batch, send the earlier calls' rows first
    (Sets.flush), so the batch's audit events keep the calls' order."""
    writes.n += 1
    if writes.sets is not None and writes.sets.pending:
        writes.sets.flush(conn)


def instrument(engine: Engine) -> None:
    """Count the engine's statements that may write in :data:`writes` (this thread's).

    And in a pipelined batch, make every statement SQLAlchemy runs complete before
    it returns (its rowcount, its errors are its own): only :meth:`Prepared.send`
    and :meth:`Prepared.first` are pipelined.
    """

    @event.listens_for(engine, "before_cursor_execute")
    def _count(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ARG001
        if _may_write(statement):
            _before_write(conn)  # as Prepared._run: whatever runs the write

    @event.listens_for(engine, "after_cursor_execute")
    def _sync(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ARG001
        if writes.pipeline is not None:
            writes.pipeline.sync()


def _wrapped(conn: Connection, sql: str, args: Any, e: Exception) -> Exception:
    """A DBAPI error as SQLAlchemy would raise it (the app maps those to 503/409)."""
    base = conn.dialect.loaded_dbapi.Error
    return DBAPIError.instance(sql, args, e, base) if isinstance(e, base) else e


class Prepared:
    """One Core statement with named bind parameters, ready to run fast on its DBAPI."""

    def __init__(self, stmt: Executable, *, binary: bool = False) -> None:
        assert isinstance(stmt, ClauseElement)
        self.stmt = stmt
        # PostgreSQL: send the values in binary (a text array of JSON texts is
        # escaped character by character in Python otherwise).
        self._binary = binary
        self._clause: ClauseElement = stmt
        # Per dialect name: (sql, positional bind names, defaults, row type, may write).
        self._compiled_for: dict[str, tuple[str, tuple[str, ...], dict[str, Any], Any, bool]] = {}

    def _compiled(self, conn: Connection) -> tuple[str, tuple[str, ...], dict[str, Any], Any, bool]:
        name = conn.dialect.name
        found = self._compiled_for.get(name)
        if found is None:
            compiled = self._clause.compile(dialect=conn.dialect)
            # SQLite's paramstyle is positional ("qmark"): the bind names in order.
            # psycopg's is "pyformat" (%(name)s): named, no positions.
            names = tuple(getattr(compiled, "positiontup", None) or ())
            columns = [c[0] for c in getattr(compiled, "_result_columns", [])]
            row = namedtuple("Row", columns, rename=True) if columns else None  # noqa: PYI024
            sql = str(compiled)
            if self._binary and name == "postgresql":
                sql = re.sub(r"%\((\w+)\)s", r"%(\1)b", sql)  # psycopg: %b = send binary
            # Defaults: values the statement carries itself (e.g. LIMIT 1).
            found = (sql, names, dict(compiled.params), row, _may_write(sql))
            self._compiled_for[name] = found
        return found

    def _run(self, conn: Connection, params: dict[str, Any]) -> tuple[Any, Any]:
        sql, names, defaults, row, may_write = self._compiled(conn)
        raw: Any = conn.connection.driver_connection
        if may_write:
            _before_write(conn)
        if conn.dialect.name == "sqlite":
            args: Any = [params[n] if n in params else defaults[n] for n in names]
            try:
                return raw.execute(sql, args), row
            except sqlite3.Error as e:
                raise DBAPIError.instance(sql, args, e, sqlite3.Error) from e
        args = defaults | params
        try:
            return raw.execute(sql, args), row
        except Exception as e:
            raise _wrapped(conn, sql, args, e) from e

    def first(self, conn: Connection, **params: Any) -> Any:
        """The first result row (attribute access by column label), or None."""
        if conn.dialect.name not in _RAW:
            return conn.execute(self.stmt, params).first()
        cur, row = self._run(conn, params)
        try:
            # In a pipeline the statement's outcome (and an error of a statement
            # queued before it, e.g. a deadlock) arrives here.
            found = cur.fetchone()
        except Exception as e:
            raise _wrapped(conn, self._compiled(conn)[0], params, e) from e
        return None if found is None else row._make(found)

    def queue(self, conn: Connection, **params: Any) -> Queued | None:
        """Send a SELECT now and read its rows later; None outside a pipelined batch.

        In a pipelined batch on PostgreSQL (unit.py) the statement travels with
        the next one that is waited for: a lookup queued before the token
        lookup costs no round trip of its own (decisions.Prefetch).
        """
        if writes.pipeline is None or conn.dialect.name != "postgresql":
            return None
        cur, row = self._run(conn, params)
        return Queued(conn, cur, row, self._compiled(conn)[0], params)

    def executemany(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Run a statement without result rows once per parameter set, in order."""
        if conn.dialect.name != "sqlite":
            writes.n += 1
            conn.execute(self.stmt, rows)
            return
        sql, names, defaults, _, _ = self._compiled(conn)
        args = [[p[n] if n in p else defaults[n] for n in names] for p in rows]
        raw = conn.connection.driver_connection
        writes.n += 1
        try:
            raw.executemany(sql, args)  # type: ignore[union-attr]
        except sqlite3.Error as e:
            raise DBAPIError.instance(sql, args, e, sqlite3.Error) from e

    def execute(self, conn: Connection, **params: Any) -> int:
        """Run a statement without result rows; returns the affected row count."""
        if conn.dialect.name not in _RAW:
            return conn.execute(self.stmt, params).rowcount
        cur, _ = self._run(conn, params)
        if writes.pipeline is not None:
            try:
                writes.pipeline.sync()  # the row count arrives with the result
            except Exception as e:
                raise _wrapped(conn, self._compiled(conn)[0], params, e) from e
        return cur.rowcount

    def send(self, conn: Connection, **params: Any) -> None:
        """Run a statement whose outcome the caller does not read (e.g. an audit INSERT).

        In a pipelined batch on PostgreSQL (unit.py) it is queued, not waited for:
        it travels with the next statement that is, and an error it raises
        surfaces there or at the batch's COMMIT (which then fails as a whole).
        """
        if conn.dialect.name not in _RAW:
            conn.execute(self.stmt, params)
            return
        self._run(conn, params)


class Queued:
    """The rows of a statement sent by :meth:`Prepared.queue`, read when needed."""

    def __init__(self, conn: Connection, cur: Any, row: Any, sql: str, params: Any) -> None:
        self._conn, self._cur, self._row, self._sql, self._params = conn, cur, row, sql, params

    def _fetch(self, fetch: Callable[[], Any]) -> Any:
        try:
            # The answer (and an error of a statement queued before it) arrives here.
            return fetch()
        except Exception as e:
            raise _wrapped(self._conn, self._sql, self._params, e) from e

    def first(self) -> Any:
        """The first row (attribute access by column label), or None: as Prepared.first."""
        found = self._fetch(self._cur.fetchone)
        return None if found is None else self._row._make(found)

    def scalars(self) -> list[Any]:
        """The first column of every row."""
        return [r[0] for r in self._fetch(self._cur.fetchall)]

    def rows(self) -> list[Any]:
        """Every row (attribute access by column label)."""
        return [self._row._make(r) for r in self._fetch(self._cur.fetchall)]


# Reads many calls' items with one statement: sends it now, and returns the function
# that fetches the answers, one per item, in order (Sets.read).
Reader = Callable[[Connection, list[Any]], Callable[[], list[Any]]]
# Sends one statement that writes many calls' items (Sets.flush).
Writer = Callable[[Connection, list[Any]], None]
_UNREAD = object()


class Answer:
    """One call's share of a set-oriented read (:meth:`Sets.ask`): read as Queued.first."""

    __slots__ = ("row",)

    def __init__(self) -> None:
        self.row: Any = _UNREAD

    def first(self) -> Any:
        if self.row is _UNREAD:
            raise RuntimeError("a batch's set-oriented read was not run")
        return self.row


class Sets:
    """A pipelined PostgreSQL batch's set-oriented statements (unit.py).

    Per hook call, psycopg's Python layer (cursor, parameter conversion,
    pipeline bookkeeping) cost more than the statement itself (perf, bench
    P3pg): a batch of N calls ran ~3N statements. Here the calls of a batch
    hand their lookups (:meth:`ask`, before any call runs) and their
    insert-only audit rows (:meth:`add`, while they run) to one statement per
    kind, for the whole batch: :meth:`read` sends the reads together (one
    round trip) and hands each call its answer; :meth:`flush` queues the
    writes ahead of the COMMIT. A write added counts in :data:`writes` as the
    call's own, so a call that fails after adding one spoils the batch
    (unit.py reruns its calls alone) exactly as an executed write would.
    """

    def __init__(self) -> None:
        self.asking = True  # until read(): asks are taken; afterwards calls query as usual
        self._reads: dict[Reader, list[tuple[Any, Answer]]] = {}
        self._writes: dict[Writer, list[Any]] = {}

    def ask(self, reader: Reader, item: Any) -> Answer:
        answer = Answer()
        self._reads.setdefault(reader, []).append((item, answer))
        return answer

    def add(self, writer: Writer, item: Any) -> None:
        writes.n += 1
        self._writes.setdefault(writer, []).append(item)

    def read(self, conn: Connection) -> None:
        """Send every read statement, then hand each ask its answer (one round trip)."""
        self.asking = False
        sent = [
            (asked, reader(conn, [i for i, _ in asked])) for reader, asked in self._reads.items()
        ]
        self._reads = {}
        for asked, fetch in sent:
            for (_, answer), row in zip(asked, fetch(), strict=True):
                answer.row = row

    @property
    def pending(self) -> bool:
        """True while writes are waiting for :meth:`flush`."""
        return bool(self._writes)

    def flush(self, conn: Connection) -> None:
        """Send every write statement (queued in the pipeline: the COMMIT waits for them).

        Also before any other statement that may write (Prepared): a batch's
        audit events are inserted in the order of its calls.
        """
        pending, self._writes = self._writes, {}
        for writer, items in pending.items():
            writer(conn, items)
