"""Per-app context: engine, settings, metrics, and transaction helpers for routes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from jit_hooks.server import audit, auth
from jit_hooks.server.errors import Unauthorized
from jit_hooks.server.metrics import Metrics
from jit_hooks.server.settings import Settings

bearer_scheme = HTTPBearer(auto_error=False, description="user (jitu_) or host (jith_) token")


@dataclass
class Context:
    settings: Settings
    engine: Engine
    metrics: Metrics
    _batch: _Batch | None = field(default=None, init=False, repr=False)

    def now(self) -> int:
        return self.settings.clock()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """One write transaction: committed on success, rolled back on any error."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def user_tx(
        self, creds: HTTPAuthorizationCredentials | None
    ) -> Iterator[tuple[Connection, auth.UserPrincipal]]:
        token = _token(creds)
        with self.engine.begin() as conn:
            user = auth.require_user(auth.authenticate(conn, token))
            # User calls are off the hook path: one small write in the same transaction.
            auth.touch(conn, user, self.now())
            yield conn, user

    @contextmanager
    def host_tx(
        self, creds: HTTPAuthorizationCredentials | None
    ) -> Iterator[tuple[Connection, auth.HostPrincipal]]:
        token = _token(creds)
        with self.engine.begin() as conn:
            yield conn, auth.require_host(auth.authenticate(conn, token))

    @asynccontextmanager
    async def hook_tx(
        self, creds: HTTPAuthorizationCredentials | None
    ) -> AsyncIterator[tuple[Any, auth.HostPrincipal]]:
        """host_tx for the login-path hooks (async routes), whose statements are all ``Prepared``.

        On SQLite, **group commit**: the hook calls that run in one turn of the
        event loop share one write transaction (BEGIN IMMEDIATE on the pooled
        sqlite3 connection, committed by a callback two loop turns later, so that
        the requests whose bytes arrive in the next turn join too: +5% checks/s).
        Their audit events are chained in order in Python and written by one
        ``executemany`` plus one head update just before the COMMIT
        (audit.HeadCache). Every caller waits for that COMMIT before it answers:
        no answer leaves before its decision is in the audit log; if the commit
        fails, every call of the batch fails (503). A call that fails without
        having written anything (e.g. an unknown token: 401) forgets its own
        unwritten events and leaves the batch alone; a call that fails after a
        write to the database fails the whole batch at once (rolled back, 503
        to the others, nothing of it committed), so no per-call SAVEPOINT is
        needed. BEGIN and COMMIT were a fifth of a hook call each on their own
        (bench P3, docs/performance.md). The body of the ``async with`` must
        not await (it runs inside the shared transaction). Other databases keep
        host_tx, one transaction per call.
        """
        if self.engine.dialect.name != "sqlite":
            with self.host_tx(creds) as pair:
                yield pair
            return
        token = _token(creds)
        batch = self._batch or self._open_batch()
        raw, tx = batch.raw, batch.tx
        changes, mark = raw.total_changes, tx.audit.mark()
        try:
            yield tx, auth.require_host(auth.authenticate(tx, token))
        except BaseException:
            if raw.total_changes != changes or not raw.in_transaction:
                self._fail(batch)  # it wrote: the whole batch goes
            else:
                tx.audit.undo(mark)
            raise
        # Committed (or the commit's error raised); shielded: a client that
        # hangs up does not cancel the batch.
        await asyncio.shield(batch.committed)

    def _fail(self, batch: _Batch) -> None:
        """Roll the batch back now and fail its waiting callers (503)."""
        if self._batch is batch:
            self._batch = None
        if batch.committed.done():
            return
        try:
            if batch.raw.in_transaction:
                batch.raw.rollback()
        except sqlite3.Error:
            pass  # the pool's reset on return rolls back again, or discards it
        finally:
            batch.committed.set_exception(
                OperationalError("group commit", None, Exception("a call of the batch failed"))
            )
            batch.fairy.close()

    def _open_batch(self) -> _Batch:
        loop = asyncio.get_running_loop()
        fairy = self.engine.raw_connection()  # the pool's FIFO hand-over, PoolTimeout -> 503
        try:
            _raw(fairy.driver_connection, "BEGIN IMMEDIATE")
        except BaseException:
            fairy.close()
            raise
        tx = RawTx(self.engine.dialect, fairy, audit.HeadCache())
        batch = _Batch(fairy, fairy.driver_connection, loop.create_future(), tx)
        # Nobody may be left waiting: retrieve the error even if all callers failed first.
        batch.committed.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._batch = batch
        # Two turns: the requests whose bytes arrive in the next turn join too.
        loop.call_soon(loop.call_soon, self._commit, batch)
        return batch

    def _commit(self, batch: _Batch) -> None:
        """Two loop turns on: commit the batch's transaction and wake its callers."""
        if self._batch is batch:
            self._batch = None
        if batch.committed.done():  # failed already (_fail)
            return
        try:
            batch.tx.audit.flush(batch.tx)
            _raw(batch.raw, "COMMIT")
        except BaseException as e:
            if batch.raw.in_transaction:
                batch.raw.rollback()
            batch.committed.set_exception(e)
        else:
            batch.committed.set_result(None)
        finally:
            batch.fairy.close()  # back to the pool


@dataclass
class _Batch:
    """One group-commit transaction of hook calls."""

    fairy: Any  # the pooled connection
    raw: sqlite3.Connection
    committed: asyncio.Future
    tx: RawTx


@dataclass(frozen=True)
class RawTx:
    """What ``Prepared`` needs of a Connection: the dialect and the pooled DBAPI connection."""

    dialect: Any
    connection: Any
    audit: Any = None  # the batch's audit.HeadCache


def _raw(raw: sqlite3.Connection, sql: str) -> None:
    try:
        raw.execute(sql)
    except sqlite3.Error as e:
        raise DBAPIError.instance(sql, None, e, sqlite3.Error) from e


def _token(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None or not creds.credentials:
        raise Unauthorized("missing bearer token")
    if len(creds.credentials) > auth.MAX_TOKEN_LEN:
        raise Unauthorized("unknown or revoked token")
    return creds.credentials


async def get_context(request: Request) -> Context:
    # async: FastAPI runs a plain ``def`` dependency in the thread pool, a thread
    # hand-off per request just to read an attribute.
    return request.app.state.ctx


CtxDep = Annotated[Context, Depends(get_context)]
Creds = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
