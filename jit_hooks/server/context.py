"""Per-app context: engine, settings, metrics, and transaction helpers for routes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from jit_hooks.server import auth
from jit_hooks.server.errors import Unauthorized
from jit_hooks.server.metrics import Metrics
from jit_hooks.server.settings import Settings

bearer_scheme = HTTPBearer(auto_error=False, description="user (jitu_) or host (jith_) token")


@dataclass
class Context:
    settings: Settings
    engine: Engine
    metrics: Metrics

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

    @contextmanager
    def hook_tx(
        self, creds: HTTPAuthorizationCredentials | None
    ) -> Iterator[tuple[Any, auth.HostPrincipal]]:
        """host_tx for the login-path hooks, whose statements are all ``Prepared``.

        On SQLite the transaction is driven on the pooled sqlite3 connection
        itself (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error): SQLAlchemy's
        Connection and transaction objects around it were a fifth of a hook
        call (bench P3). Same pool, same lock, same atomicity; errors are
        wrapped as SQLAlchemy wraps them (503 on a busy or broken database).
        """
        if self.engine.dialect.name != "sqlite":
            with self.host_tx(creds) as pair:
                yield pair
            return
        token = _token(creds)
        fairy = self.engine.raw_connection()  # the pool's FIFO hand-over, PoolTimeout -> 503
        try:
            raw = fairy.driver_connection
            _raw(raw, "BEGIN IMMEDIATE")
            try:
                tx = RawTx(self.engine.dialect, fairy)
                yield tx, auth.require_host(auth.authenticate(tx, token))
                _raw(raw, "COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.rollback()
                raise
        finally:
            fairy.close()  # back to the pool


@dataclass(frozen=True)
class RawTx:
    """What ``Prepared`` needs of a Connection: the dialect and the pooled DBAPI connection."""

    dialect: Any
    connection: Any


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
