"""Prepared Core statements for the hook path: compiled once, run on the DBAPI cursor on SQLite.

A hook call runs a handful of small indexed statements. Through SQLAlchemy's
execution machinery (statement construction, cache key, execution context,
result metadata) each one cost ~100-200 µs of Python; the same statements on
the sqlite3 connection itself take ~10 µs (bench P3, docs/performance.md).

A :class:`Prepared` wraps a Core statement whose values are all named
``bindparam()`` s. On SQLite it is compiled once for the dialect and executed
on the raw ``sqlite3`` connection of the caller's SQLAlchemy ``Connection``, in
the caller's transaction (BEGIN IMMEDIATE, commit and rollback stay
SQLAlchemy's). Errors are wrapped exactly as SQLAlchemy wraps them
(OperationalError -> 503, IntegrityError -> 409 in the app's handlers). On any
other database the statement goes through ``Connection.execute`` as usual, so
there is one statement, written once, for both.

Only use it for statements whose bind values need no type processing on SQLite
(integers, strings, booleans): result rows come back as named tuples of the raw
values (a Boolean column reads as 0/1, which the callers only test for truth).
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Executable


class Prepared:
    """One Core statement with named bind parameters, ready to run fast on SQLite."""

    def __init__(self, stmt: Executable) -> None:
        assert isinstance(stmt, ClauseElement)
        self.stmt = stmt
        self._clause: ClauseElement = stmt
        self._sqlite: tuple[str, tuple[str, ...], dict[str, Any], Any] | None = None

    def _compiled(self, conn: Connection) -> tuple[str, tuple[str, ...], dict[str, Any], Any]:
        if self._sqlite is None:
            compiled = self._clause.compile(dialect=conn.dialect)
            # SQLite's paramstyle is positional ("qmark"): the bind names in order.
            names = tuple(getattr(compiled, "positiontup", None) or ())
            columns = [c[0] for c in getattr(compiled, "_result_columns", [])]
            row = namedtuple("Row", columns, rename=True) if columns else None  # noqa: PYI024
            # Defaults: values the statement carries itself (e.g. LIMIT 1).
            self._sqlite = (str(compiled), names, dict(compiled.params), row)
        return self._sqlite

    def _run(self, conn: Connection, params: dict[str, Any]) -> tuple[sqlite3.Cursor, Any]:
        sql, names, defaults, row = self._compiled(conn)
        args = [params[n] if n in params else defaults[n] for n in names]
        raw = conn.connection.driver_connection
        try:
            return raw.execute(sql, args), row  # type: ignore[union-attr]
        except sqlite3.Error as e:
            raise DBAPIError.instance(sql, args, e, sqlite3.Error) from e

    def first(self, conn: Connection, **params: Any) -> Any:
        """The first result row (attribute access by column label), or None."""
        if conn.dialect.name != "sqlite":
            return conn.execute(self.stmt, params).first()
        cur, row = self._run(conn, params)
        found = cur.fetchone()
        return None if found is None else row._make(found)

    def executemany(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Run a statement without result rows once per parameter set, in order."""
        if conn.dialect.name != "sqlite":
            conn.execute(self.stmt, rows)
            return
        sql, names, defaults, _ = self._compiled(conn)
        args = [[p[n] if n in p else defaults[n] for n in names] for p in rows]
        raw = conn.connection.driver_connection
        try:
            raw.executemany(sql, args)  # type: ignore[union-attr]
        except sqlite3.Error as e:
            raise DBAPIError.instance(sql, args, e, sqlite3.Error) from e

    def execute(self, conn: Connection, **params: Any) -> int:
        """Run a statement without result rows; returns the affected row count."""
        if conn.dialect.name != "sqlite":
            return conn.execute(self.stmt, params).rowcount
        cur, _ = self._run(conn, params)
        return cur.rowcount
