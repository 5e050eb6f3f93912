"""`jit-server db copy`: move an installation between databases (SQLite -> PostgreSQL).

Every table of the schema is copied row by row with its ids, so the audit
chain (whose hashes cover the events' positions) is carried over unchanged.
The source is read from one snapshot; the target is written in ONE transaction
that also resets PostgreSQL's sequences past the copied ids and runs
`audit verify` before its COMMIT: a copy either lands whole and verifying, or
not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, select, text

from jit_hooks.errors import JitError

# Rows the migrations themselves write into an empty database (the audit head,
# migration 0004): a freshly upgraded target holds them and still counts as empty.
MIGRATION_SEEDED = frozenset({"audit_head"})
BATCH = 1000


class CopyError(JitError):
    """Raised when a copy cannot start or would not be faithful; nothing was written."""


@dataclass
class CopyResult:
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    sequences: list[str] = field(default_factory=list)  # sequences moved past the copied ids
    audit_events: int = 0  # events `audit verify` checked on the target


def _engine_for_reading(url: str) -> Engine:
    """An engine that reads one consistent snapshot without taking any write lock."""
    if not url.startswith("sqlite"):
        return create_engine(url, isolation_level="REPEATABLE READ")
    engine = create_engine(url, connect_args={"timeout": 5})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # our BEGIN below, not pysqlite's

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        # A deferred read transaction: in WAL mode a live service keeps writing
        # while we read the snapshot taken at our first SELECT.
        conn.exec_driver_sql("BEGIN")

    return engine


def _check_source(url: str) -> None:
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        path = make_url(url).database
        if not path or path == ":memory:":
            raise CopyError("--from: an SQLite URL needs a file path (sqlite:///PATH)")
        from pathlib import Path

        if not Path(path).is_file():
            raise CopyError(f"--from: no such SQLite file: {path}")


def _count(conn: Connection, table) -> int:  # noqa: ANN001
    return conn.execute(select(func.count()).select_from(table)).scalar_one()


def target_rows(conn: Connection) -> dict[str, int]:
    """Tables of the target holding rows the migrations did not put there."""
    from jit_hooks.server.tables import metadata

    out = {}
    for table in metadata.sorted_tables:
        if table.name in MIGRATION_SEEDED:
            continue
        n = _count(conn, table)
        if n:
            out[table.name] = n
    return out


def _reset_sequences(conn: Connection) -> list[str]:
    """Move every column-owned sequence (serial / identity) past the largest copied id."""
    rows = conn.execute(
        text(
            "SELECT s.relname, t.relname, a.attname FROM pg_class s"
            " JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid"
            " JOIN pg_class t ON t.oid = d.refobjid"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid"
            " JOIN pg_namespace n ON n.oid = s.relnamespace"
            " WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i')"
            " AND n.nspname = current_schema()"
        )
    ).all()
    moved = []
    for seq, table, column in rows:
        # setval(seq, max, true): the next value is max + 1; on an empty table
        # setval(seq, 1, false): the next value is 1.
        conn.execute(
            text(
                f'SELECT setval(\'"{seq}"\', coalesce((SELECT max("{column}") FROM "{table}"), 1),'
                f' (SELECT max("{column}") FROM "{table}") IS NOT NULL)'
            )
        )
        moved.append(f"{seq} ({table}.{column})")
    return sorted(moved)


def copy_database(
    source_url: str,
    target_url: str,
    *,
    replace: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> CopyResult:
    """Copy every table from ``source_url`` into ``target_url`` (migrated to the newest schema).

    Refuses (CopyError, nothing written) when the source's schema is not current,
    when the target holds data and ``replace`` is false, or when the copied audit
    chain does not verify on the target.
    """
    from jit_hooks.server import audit
    from jit_hooks.server.db import make_engine, schema_is_current, upgrade
    from jit_hooks.server.tables import metadata

    if source_url == target_url:
        raise CopyError("--from and --to are the same database")
    _check_source(source_url)
    src = _engine_for_reading(source_url)
    dst = make_engine(target_url)
    try:
        if not schema_is_current(src):
            raise CopyError(
                "the source's schema is not current: run `jit-server --database-url SOURCE "
                "db upgrade` first (with the same jit-server version)"
            )
        # Alembic's DDL commits on its own; a target that then fails below is left
        # with the empty schema only, which the next attempt reuses.
        upgrade(dst)
        result = CopyResult()
        with src.begin() as s, dst.begin() as d:
            unknown = set(inspect(s).get_table_names()) - set(metadata.tables) - {"alembic_version"}
            if unknown:
                # A table this copy does not know would be left behind silently.
                raise CopyError(f"the source has tables this jit-server does not know: "
                                f"{', '.join(sorted(unknown))}")  # fmt: skip
            found = target_rows(d)
            if found and not replace:
                listed = ", ".join(f"{t} ({n})" for t, n in sorted(found.items()))
                raise CopyError(
                    f"the target already holds data: {listed}; "
                    "give --replace to overwrite it (its rows are deleted first)"
                )
            for table in reversed(metadata.sorted_tables):
                d.execute(table.delete())
            for table in metadata.sorted_tables:
                n = 0
                batch: list[dict] = []
                rows = s.execution_options(yield_per=BATCH).execute(select(table))
                for row in rows:
                    batch.append(dict(row._mapping))
                    if len(batch) >= BATCH:
                        d.execute(table.insert(), batch)
                        n += len(batch)
                        batch = []
                if batch:
                    d.execute(table.insert(), batch)
                    n += len(batch)
                result.rows[table.name] = n
                if progress is not None:
                    progress(table.name, n)
            if d.dialect.name == "postgresql":
                result.sequences = _reset_sequences(d)
            verdict = audit.verify(d)
            if not verdict.ok:
                # Leaving the with-block by an exception rolls the target back.
                raise CopyError(
                    f"the copied audit chain does not verify on the target: {verdict.problem};"
                    " nothing was written (run `jit-server audit verify` on the source)"
                )
            result.audit_events = verdict.count
        return result
    finally:
        src.dispose()
        dst.dispose()
