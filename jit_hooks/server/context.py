"""Per-app context: engine, settings, metrics, and the unit of work the routes run in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine

from jit_hooks.server import auth
from jit_hooks.server.errors import Unauthorized
from jit_hooks.server.metrics import Metrics
from jit_hooks.server.settings import Settings
from jit_hooks.server.unit import UnitOfWork

bearer_scheme = HTTPBearer(auto_error=False, description="user (jitu_) or host (jith_) token")
# Row ids are 32-bit on PostgreSQL (INTEGER): a larger id in a path or query is
# refused as invalid (422) instead of reaching the database ("out of range": 500).
MAX_ID = 2**31 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]  # a row id in a route's path
T = TypeVar("T")


@dataclass
class Context:
    """What every route needs. All database work goes through :attr:`unit` (unit.py)."""

    settings: Settings
    engine: Engine
    metrics: Metrics
    unit: UnitOfWork = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.unit = UnitOfWork(self.engine, threads=self.settings.db_pool_size)

    def now(self) -> int:
        return self.settings.clock()

    async def run(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in one transaction, no caller identity (login, health)."""
        return await self.unit.run(work)

    async def as_user(
        self,
        creds: HTTPAuthorizationCredentials | None,
        work: Callable[[Connection, auth.UserPrincipal], T],
    ) -> T:
        """``work(conn, user)`` in one transaction with the token's (enabled) user."""
        token = _token(creds)
        now = self.now()

        def job(conn: Connection) -> T:
            user = auth.require_user(auth.authenticate(conn, token, now))
            # User calls are off the hook path: one small write in the same transaction.
            auth.touch(conn, user, now)
            return work(conn, user)

        return await self.unit.run(job)

    async def as_host(
        self,
        creds: HTTPAuthorizationCredentials | None,
        # (conn, host), or (conn, host, prefetched) with a prefetch.
        work: Callable[..., T],
        *,
        batch: bool = False,
        prefetch: Callable[[Connection, str], Any] | None = None,
    ) -> T:
        """``work(conn, host)`` in one transaction with the token's (present) host.

        ``batch=True`` for the login-path hooks: they may share a group-committed
        transaction on SQLite (unit.py); ``work`` must then not fail after writing
        unless the whole batch should fail. ``prefetch(conn, token_hash)`` runs
        before the token is looked up and ``work`` is then called as
        ``work(conn, host, prefetched)`` (decisions.Prefetch: one round trip).
        """
        job = _HostJob(_token(creds), self.now(), work, prefetch)
        return await self.unit.run(job, batch=batch)

    def close(self) -> None:
        self.unit.close()
        self.engine.dispose()


class _HostJob:
    """A host call's transaction work (Context.as_host), in two steps when batched.

    In a pipelined PostgreSQL batch the unit of work first calls :meth:`queue`
    on every call of the batch: each asks its token lookup and its decision
    lookups (reads only; one statement per kind for the whole batch,
    sql.Sets), and one round trip brings the answers of the whole batch; then
    it runs each call, which reads its own (unit.py). Run any other way
    (SQLite, alone) a call sends and reads as it goes.
    """

    def __init__(
        self,
        token: str,
        now: int,
        work: Callable[..., Any],
        prefetch: Callable[[Connection, str], Any] | None,
    ) -> None:
        self.token, self.now, self.work, self.prefetch = token, now, work, prefetch
        self.digest = auth.token_hash(token)
        self._queued: tuple[Connection, Any, Any] | None = None

    def _prefetch(self, conn: Connection) -> Any:
        return None if self.prefetch is None else self.prefetch(conn, self.digest)

    def queue(self, conn: Connection) -> None:
        pre = self._prefetch(conn)
        self._queued = (conn, pre, auth.queue_lookup(conn, self.token, digest=self.digest))

    def __call__(self, conn: Connection) -> Any:
        queued, self._queued = self._queued, None
        if queued is not None and queued[0] is conn:  # sent in this transaction
            pre, lookup = queued[1], queued[2]
        else:
            pre, lookup = self._prefetch(conn), None
        principal = auth.authenticate(conn, self.token, self.now, queued=lookup, digest=self.digest)
        host = auth.require_host(principal)
        return self.work(conn, host) if self.prefetch is None else self.work(conn, host, pre)


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
