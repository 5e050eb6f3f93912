"""The unit of work: every route's database work, one transaction, off the event loop.

A route hands :meth:`UnitOfWork.run` a plain function of a SQLAlchemy
``Connection``; the function runs inside one transaction (committed when it
returns, rolled back when it raises) on a worker thread, and the route's
coroutine awaits the result. There is one data path for both databases; what
differs per database is only how many threads run transactions and how
several calls share one:

* Calls that opt in (``batch=True``: the login-path hooks) use **group
  commit** on both databases: the calls that arrive within two turns of the
  event loop, and any that arrive while the batch threads are busy, run one
  after the other in one transaction with one COMMIT. Every caller gets its
  answer only after that COMMIT: no answer leaves before its decision is in
  the audit log. If the COMMIT fails, every call of the batch fails (503).
  BEGIN, COMMIT and (PostgreSQL) the pool's liveness ping were a fifth of a
  hook call each on SQLite and three of six round trips on PostgreSQL (bench
  P3 and P3pg, docs/performance.md).
* **SQLite**: one thread for everything (a process can use one SQLite
  connection at a time anyway: every transaction takes the write lock, BEGIN
  IMMEDIATE). Each call of a batch runs in its own SAVEPOINT (microseconds on
  the sqlite3 connection), so a call that fails (e.g. an unknown token: 401)
  is rolled back alone.
* **PostgreSQL**: a thread pool as large as the engine's connection pool, one
  transaction per call, for everything but batches; ``BATCH_THREADS`` more
  run batches. A SAVEPOINT would be two more round trips per call, so there
  is none: a call that fails having written nothing (sql.writes: an unknown
  token fails on its first SELECT) just fails; one that fails after writing,
  or with a database error (the transaction is then aborted), rolls the batch
  back, and every other call of it runs again in a transaction of its own.
  Nothing is committed twice: a rolled-back batch left nothing behind. The
  hooks' writes are insert-only (fold.py, audit.py), so concurrent batches on
  one or several replicas never wait for each other's row locks. A batch
  first lets each call ask its reads (token and decision lookups:
  ``queue``, Context._HostJob), which go to the database as one statement
  per kind for the whole batch (sql.Sets): one waited round trip answers
  the reads of the whole batch, and the calls then run on the answers; the
  allow/miss rows they hand to the batch go as one INSERT before the
  COMMIT. With the pipeline and no pre-ping (db.batch_engine) a batch of N
  authorized-keys calls executes 3 statements and waits two round trips:
  the reads and the COMMIT.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from jit_hooks.server import sql
from jit_hooks.server.db import BATCH_THREADS, batch_engine

T = TypeVar("T")
# PostgreSQL batches ask and write through one statement per kind for the whole
# batch (sql.Sets); False: each call its own statements, as before (bench A/B, tests).
SETS = True
Work = Callable[[Connection], T]


class UnitOfWork:
    """Runs route work in transactions on worker threads; see the module docstring."""

    def __init__(self, engine: Engine, *, threads: int) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.group_commit = True
        # SQLite: one connection, one thread. PostgreSQL: one thread per pooled
        # connection, so a thread never waits for the pool (the batch threads'
        # connections come from the pool's reserve for background work, db.py).
        self.threads = 1 if self.sqlite else threads
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="jit-db")
        self._batches = (
            self._pool
            if self.sqlite
            else ThreadPoolExecutor(BATCH_THREADS, thread_name_prefix="jit-db-batch")
        )
        # PostgreSQL: the batches' connections skip the pool's pre-ping (db.batch_engine).
        self._batch_engine = engine if self.sqlite else batch_engine(engine)
        if not self.sqlite:
            sql.instrument(engine)
            sql.instrument(self._batch_engine)
        self._lock = threading.Lock()
        self._batch: _Batch | None = None

    async def run(self, work: Work[T], *, batch: bool = False) -> T:
        """``work(conn)`` in one transaction on a worker thread; its result, or its error.

        ``batch=True``: the call may share its transaction with others (group
        commit on SQLite; elsewhere the same as without); if ``work`` raises,
        its own writes are rolled back either way.
        """
        if batch and self.group_commit:
            return await self._join(work)
        loop = asyncio.get_running_loop()
        # Shielded: a client that hangs up does not leave a transaction half-run.
        return await asyncio.shield(loop.run_in_executor(self._pool, self._one, work))

    def close(self) -> None:
        self._batches.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        if self._batch_engine is not self.engine:
            self._batch_engine.dispose()

    def _one(self, work: Work[T]) -> T:
        with self.engine.begin() as conn:
            return work(conn)

    # -- group commit ----------------------------------------------------------------

    async def _join(self, work: Work[T]) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:
            b = self._batch
            if b is None or b.closed:
                b = self._batch = _Batch(loop.create_future())
                # Nobody may be left waiting: retrieve an error even if all callers left.
                b.done.add_done_callback(lambda f: f.cancelled() or f.exception())
                # Two turns: the requests whose bytes arrive in the next turn join too.
                loop.call_soon(loop.call_soon, self._submit, b)
            index = len(b.works)
            b.works.append(work)
        outcomes = await asyncio.shield(b.done)
        out = outcomes[index]
        if isinstance(out, BaseException):
            raise out
        return out

    def _submit(self, b: _Batch) -> None:
        fut = asyncio.get_running_loop().run_in_executor(self._batches, self._run_batch, b)
        fut.add_done_callback(b.finish)

    def _run_batch(self, b: _Batch) -> list[Any]:
        """On a batch thread: close the batch, run its calls in one transaction, COMMIT."""
        with self._lock:
            b.closed = True  # from here on, new calls open the next batch
            works = list(b.works)
        if self.sqlite:
            return self._run_sqlite(works)
        return self._run_shared(works)

    def _run_sqlite(self, works: list[Work[Any]]) -> list[Any]:
        """Each call in a SAVEPOINT (issued on the sqlite3 connection itself: microseconds).

        A call that fails is rolled back alone and the others go on. Only a
        failing BEGIN, COMMIT or SAVEPOINT fails the whole batch.
        """
        outcomes: list[Any] = []
        ran = False
        try:
            with self.engine.connect() as conn:
                raw: Any = conn.connection.driver_connection
                with conn.begin():  # BEGIN IMMEDIATE (db.py); COMMIT on leaving
                    for work in works:
                        raw.execute("SAVEPOINT call")
                        try:
                            outcomes.append(work(conn))
                        except Exception as e:
                            outcomes.append(e)
                            raw.execute("ROLLBACK TO call")
                        raw.execute("RELEASE call")
                    ran = True
        except Exception as e:  # nobody's work of this batch is in the database
            return [CommitFailed(e) if ran else e] * len(works)
        return outcomes

    def _run_shared(self, works: list[Work[Any]]) -> list[Any]:
        """The calls in one pipelined transaction without savepoints (module docstring)."""
        outcomes: list[Any] = []
        spoiled: tuple[int, BaseException] | None = None
        synced = False
        try:
            with self._batch_engine.connect() as conn, conn.begin():  # COMMIT on leaving
                raw: Any = conn.connection.driver_connection
                with raw.pipeline() as pipeline:
                    sets = sql.writes.sets = sql.Sets() if SETS else None
                    sql.writes.pipeline = pipeline
                    try:
                        # Every call's reads first (Context._HostJob.queue), asked of one
                        # statement per kind for the whole batch (sql.Sets): one round
                        # trip answers them all.
                        for work in works:
                            queue = getattr(work, "queue", None)
                            if queue is not None:
                                queue(conn)
                        if sets is not None:
                            sets.read(conn)
                        spoiled = self._calls(conn, works, outcomes)
                        if sets is not None and spoiled is None:
                            # The calls' audit rows, one statement, ahead of the COMMIT.
                            sets.flush(conn)
                    finally:
                        sql.writes.pipeline = None
                        sql.writes.sets = None
                    if spoiled is not None:
                        raise _Spoiled  # ROLLBACK on leaving
                synced = True  # every statement answered; only the COMMIT is left
        except Exception as e:
            if synced:  # the COMMIT failed: nobody's work is in the database (or unknown)
                return [CommitFailed(e)] * len(works)
            fault = _database_fault(e if spoiled is None else spoiled[1])
            if fault is not None:
                # The database's fault, not a call's (a timeout, a lock it waits
                # for): alone, each call would meet it again, one after the other.
                return [fault] * len(works)
            if spoiled is None:
                # No connection (or a dead one: batches are not pre-pinged), or a queued
                # statement failed at the last sync: rolled back, so every call again,
                # alone (a fresh, pre-pinged connection each).
                return [self._alone(w) for w in works]
            i, err = spoiled
            if isinstance(err, DBAPIError):
                # The failed statement may be an earlier call's queued INSERT
                # (pipeline): every call again, alone, each meets its own fate.
                return [self._alone(w) for w in works]
            # Rolled back: every other call again, alone; the spoiler keeps its error.
            return [err if j == i else self._alone(w) for j, w in enumerate(works)]
        return outcomes

    @staticmethod
    def _calls(
        conn: Connection, works: list[Work[Any]], outcomes: list[Any]
    ) -> tuple[int, BaseException] | None:
        """Run ``works`` in order into ``outcomes``; the call that spoils the transaction."""
        for i, work in enumerate(works):
            sql.writes.n = 0
            try:
                outcomes.append(work(conn))
            except DBAPIError as e:  # the transaction is aborted
                return i, e
            except Exception as e:
                if sql.writes.n:  # its writes cannot be taken back alone
                    return i, e
                outcomes.append(e)
        return None

    def _alone(self, work: Work[Any]) -> Any:
        try:
            return self._one(work)
        except Exception as e:
            return e


# SQLSTATEs (or their two-character classes) a batch answers 503 at once: faults
# of the database that every call of the batch meets again alone.
# 57014 query_canceled (statement_timeout), 55P03 lock_not_available
# (lock_timeout), 53 insufficient resources (out of memory, disk full, too many
# connections). A lost connection (class 08, 57P01 admin_shutdown,...: SQLAlchemy
# invalidates it) is not one: batches are not pre-pinged, so the calls rerun alone
# on fresh, pre-pinged connections (a failover answers them).
_FAULTS = frozenset({"57014", "55P03", "53"})


def _database_fault(err: BaseException) -> Unavailable | None:
    """``err`` as the whole batch's 503 if it is the database's fault (_FAULTS), else None."""
    if isinstance(err, DBAPIError) and err.connection_invalidated:
        return None
    orig = getattr(err, "orig", None) or err
    state = getattr(orig, "sqlstate", None) or ""
    if state in _FAULTS or state[:2] in _FAULTS:
        return Unavailable(err)
    return None


class CommitFailed(Exception):
    """A group-commit batch's COMMIT failed: every call of it fails with this (503).

    Whatever the database raised (a deferred constraint, a serialization
    failure, a lost connection), no call's work is known to be committed, and
    no call caused it alone: the hosts deny and log the service unavailable.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"batch COMMIT failed: {getattr(cause, 'orig', None) or cause}")
        self.__cause__ = cause


class Unavailable(CommitFailed):
    """A batch met a fault of the database's (_FAULTS): every call of it fails (503)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(cause)
        self.args = (f"batch failed: {getattr(cause, 'orig', None) or cause}",)


class _Spoiled(Exception):
    """A call of a batch failed in a way that needs the whole transaction rolled back."""


@dataclass
class _Batch:
    """One group-commit transaction of hook calls."""

    done: asyncio.Future
    works: list[Callable[[Connection], Any]] = field(default_factory=list)
    closed: bool = False

    def finish(self, fut: asyncio.Future) -> None:
        if fut.cancelled():
            self.done.cancel()
        elif fut.exception() is not None:
            self.done.set_exception(fut.exception())  # type: ignore[arg-type]
        else:
            self.done.set_result(fut.result())
