"""Engine creation (SQLite pragmas, file modes) and programmatic Alembic upgrades."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# How long a writer waits for the SQLite write lock before giving up (ms);
# hook calls are short, so a few seconds is plenty and still fails closed.
BUSY_TIMEOUT_MS = 5000
# Every transaction takes SQLite's write lock up front (BEGIN IMMEDIATE, below),
# so a process can use only one connection at a time anyway. Waiting for that
# one connection in the pool is a FIFO hand-over; waiting in SQLite's busy
# handler is sleep-and-poll (naps of up to 100 ms): with 16 concurrent hook
# callers the hook's p99 was 1.25 s with a 5+10 pool and 0.12 s with one
# connection, at the same throughput (bench P3, docs/performance.md).
SQLITE_POOL = {"pool_size": 1, "max_overflow": 0, "pool_timeout": BUSY_TIMEOUT_MS / 1000}


def _prepare_sqlite_file(url: str) -> None:
    """Create the data dir (0700) and the database file (0600) before SQLite does."""
    path = make_url(url).database
    if not path or path == ":memory:":
        return
    db = Path(path)
    db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if db.exists():
        # Never open+close an fd on a database SQLite may already have open in
        # this process: closing any fd drops the process's POSIX locks on the
        # file, and another process could then checkpoint and delete the WAL
        # under our feet (we would read stale data).
        return
    try:
        fd = os.open(db, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


# Connections the leader's own threads may hold at once besides the unit of work:
# the audit fold/checkpoint worker (1, server/audit_worker.py), the notification
# round (1) and its delivery threads settling attempts (notify/worker.py THREADS, 8).
BACKGROUND_CONNECTIONS = 10
# PostgreSQL: group-commit batches of hook calls in flight at once (unit.py), each
# on a connection of its own. One would leave the database idle while its thread
# is in Python between round trips; with two, one batch's statements run while
# the other's calls are computed (bench P3pg).
BATCH_THREADS = 2


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine; for SQLite: WAL, busy timeout, foreign keys, BEGIN IMMEDIATE.

    PostgreSQL: ``pool_size`` connections for the unit of work (it runs exactly
    that many transactions at once, unit.py; its group-commit batches of hook
    calls have ``BATCH_THREADS`` more, :func:`batch_engine`), plus
    ``BACKGROUND_CONNECTIONS`` for
    the leader's own threads (audit fold, notification worker), so background
    work never makes a hook call wait for a connection; READ COMMITTED, the
    server's default, with row locks where a decision depends on rows another
    replica may change at the same time (lifecycle.py); a connection found
    dead is replaced before use (pre-ping: one round trip per transaction, so
    per batch of hook calls), so a restarted or failed-over server is picked up
    without restarting the service.
    """
    if not url.startswith("sqlite"):
        return create_engine(
            url,
            pool_size=pool_size + BACKGROUND_CONNECTIONS,
            max_overflow=0,
            pool_timeout=BUSY_TIMEOUT_MS / 1000,
            pool_pre_ping=True,
            # Fail closed in time: a server that does not answer the connect is down.
            connect_args={"connect_timeout": 5} if url.startswith("postgresql") else {},
        )
    _prepare_sqlite_file(url)
    in_memory = make_url(url).database in (None, "", ":memory:")
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 5},
        **({} if in_memory else SQLITE_POOL),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        # Let SQLAlchemy's begin() below own transactions instead of pysqlite.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        # Nearly every call writes (hook decisions are audited), so take the
        # write lock up front: racing transactions serialise instead of failing
        # on lock upgrade, and the audit chain's "read head, append" is atomic.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def batch_engine(engine: Engine) -> Engine:
    """The ``BATCH_THREADS`` connections of the group-commit batches (unit.py), unpinged.

    PostgreSQL only. The pool's pre-ping was one waited round trip per batch
    of hook calls (a sixth of a batch's time in bench P3pg). A batch needs no
    ping: a connection found dead by its first statement fails the batch,
    whose calls then run again alone on :func:`make_engine`'s pre-pinged pool
    (unit.py), and the dead connection is dropped when it is returned (its
    ROLLBACK fails). So a failover costs each batch connection one retried
    batch, not a wrong answer (tests/ha).
    """
    batches = create_engine(
        engine.url,
        pool_size=BATCH_THREADS,
        max_overflow=0,
        pool_timeout=BUSY_TIMEOUT_MS / 1000,
        pool_pre_ping=False,
        connect_args={"connect_timeout": 5},
    )

    @event.listens_for(batches, "connect")
    def _generic_plans(dbapi_conn, record):  # noqa: ANN001, ANN202, ARG001
        # A batch's key lookup (decisions._FOR_KEYS_BY_TOKENS) unnests arrays whose
        # length a custom plan knows and a generic one guesses, so PostgreSQL planned
        # it afresh for every batch (0.4 ms of its CPU each, pg_stat_statements in
        # bench P3pg). Every batch statement is an indexed lookup or an insert,
        # planned the same whatever the values.
        with dbapi_conn.cursor() as cur:
            cur.execute("SET plan_cache_mode = force_generic_plan")
        dbapi_conn.commit()

    return batches


def alembic_config(engine: Engine):  # noqa: ANN201
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


# The PostgreSQL advisory lock `db upgrade` holds while Alembic runs (leader.lock_key
# of this name: the same key on every replica).
UPGRADE_LOCK = "db.upgrade"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision``, one process at a time.

    Replicas started together each run ``db upgrade``: on PostgreSQL the second
    would race the first's CREATE TABLEs and fail on the catalog's unique keys,
    or apply a step twice. So the run holds a session-level advisory lock on a
    connection of its own; a waiting process reads the version table only once
    the first one has committed, and finds nothing left to do. SQLite needs no
    advisory lock: every migration transaction takes the file's write lock
    (BEGIN IMMEDIATE), so the processes' steps serialise (tests/server/
    test_upgrade_lock.py starts four on a fresh file).
    """
    from alembic import command

    if engine.dialect.name != "postgresql":
        command.upgrade(alembic_config(engine), revision)
        return
    from sqlalchemy import text

    from jit_hooks.server.leader import lock_key

    key = {"k": lock_key(UPGRADE_LOCK)}
    with engine.connect() as lock:
        lock.execute(text("SELECT pg_advisory_lock(:k)"), key)
        lock.commit()  # the session lock outlives the transaction; no snapshot is held
        try:
            command.upgrade(alembic_config(engine), revision)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), key)
            lock.commit()


def missing_tables(engine: Engine) -> list[str]:
    """The tables the code uses (tables.metadata) that the database lacks; one query.

    A database stamped at the head revision by a build whose migration of the
    same id made other tables (0015 was once an empty placeholder) passes
    schema_is_current but would answer 500 on every call that needs them.
    """
    from sqlalchemy import inspect

    from jit_hooks.server.tables import metadata

    with engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
    return sorted(set(metadata.tables) - present)


def schema_is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current == heads
