"""The unit of work: every route's database work, one transaction, off the event loop.

A route hands :meth:`UnitOfWork.run` a plain function of a SQLAlchemy
``Connection``; the function runs inside one transaction (committed when it
returns, rolled back when it raises) on a worker thread, and the route's
coroutine awaits the result. There is one data path for both databases; what
differs per database is only how many threads run transactions and whether
several calls may share one:

* **PostgreSQL**: a thread pool as large as the engine's connection pool, one
  transaction per call. Concurrent calls run concurrently in the database; the
  event loop never waits on a socket to PostgreSQL.
* **SQLite**: one thread (a process can use one SQLite connection at a time
  anyway: every transaction takes the write lock, BEGIN IMMEDIATE). Calls that
  opt in (``batch=True``: the login-path hooks) use **group commit**: the
  calls that arrive within two turns of the event loop, and any that arrive
  while the thread is still busy, run one after the other in one transaction
  with one COMMIT (BEGIN and COMMIT were a fifth of a hook call each on their
  own, bench P3, docs/performance.md). Every caller gets its answer only after
  that COMMIT: no answer leaves before its decision is in the audit log. Each
  call runs in its own SAVEPOINT, so a call that fails (e.g. an unknown token:
  401) is rolled back alone; if the COMMIT fails, every call of the batch
  fails (503).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

T = TypeVar("T")
Work = Callable[[Connection], T]


class UnitOfWork:
    """Runs route work in transactions on worker threads; see the module docstring."""

    def __init__(self, engine: Engine, *, threads: int) -> None:
        self.engine = engine
        self.group_commit = engine.dialect.name == "sqlite"
        # SQLite: one connection, one thread. PostgreSQL: one thread per pooled
        # connection, so a thread never waits for the pool.
        self.threads = 1 if self.group_commit else threads
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="jit-db")
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
        self._pool.shutdown(wait=True)

    def _one(self, work: Work[T]) -> T:
        with self.engine.begin() as conn:
            return work(conn)

    # -- group commit (SQLite) ---------------------------------------------------

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
        fut = asyncio.get_running_loop().run_in_executor(self._pool, self._run_batch, b)
        fut.add_done_callback(b.finish)

    def _run_batch(self, b: _Batch) -> list[Any]:
        """On the DB thread: close the batch, run its calls in one transaction, COMMIT.

        Each call runs in a SAVEPOINT (issued on the sqlite3 connection itself:
        microseconds): a call that fails is rolled back alone and the others
        go on. Only a failing BEGIN, COMMIT or SAVEPOINT fails the whole batch.
        """
        with self._lock:
            b.closed = True  # from here on, new calls open the next batch
            works = list(b.works)
        outcomes: list[Any] = []
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
        except Exception as e:  # nobody's work of this batch is in the database
            return [e] * len(works)
        return outcomes


@dataclass
class _Batch:
    """One group-commit transaction of hook calls (SQLite)."""

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
