"""The FastAPI application, built by create_app(settings); nothing happens at import."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from jit_hooks.server.context import Context
from jit_hooks.server.db import make_engine
from jit_hooks.server.errors import ServiceDomainError
from jit_hooks.server.metrics import Metrics
from jit_hooks.server.schemas import ErrorOut
from jit_hooks.server.settings import Settings
from jit_hooks.server.unit import CommitFailed

log = logging.getLogger(__name__)


def _error(
    status: int, code: str, detail: str, field: str | None = None, headers=None
) -> JSONResponse:  # noqa: ANN001
    return JSONResponse(
        {"error": code, "detail": detail, "field": field}, status_code=status, headers=headers
    )


class BodyLimit:
    """ASGI middleware: buffer the request body, answer 413 if it exceeds the limit."""

    def __init__(self, app, limit: int) -> None:  # noqa: ANN001
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.limit:
                        await self._too_big(scope, receive, send)
                        return
                except ValueError:
                    await _error(400, "bad_request", "invalid Content-Length")(scope, receive, send)
                    return
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if len(body) > self.limit:
                await self._too_big(scope, receive, send)
                return
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay():  # noqa: ANN202
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_big(self, scope, receive, send) -> None:  # noqa: ANN001
        # Built only when needed: a JSONResponse per request was ~1% of a hook call.
        too_big = _error(413, "payload_too_large", f"request body over {self.limit} bytes")
        await too_big(scope, receive, send)


class CountResponses:
    """ASGI middleware: count responses by method, route and status for /metrics.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's
    BaseHTTPMiddleware costs a task and a memory stream per request, which was
    a fifth of a hook call's time (bench P3: 428 -> 536 hook calls/s without it).
    """

    def __init__(self, app, metrics: Metrics) -> None:  # noqa: ANN001
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if no response starts, the error handler outside us answers 500

        async def send_counted(message) -> None:  # noqa: ANN001
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            # The router stores the matched route in the (shared) scope.
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.http.labels(scope["method"], path, str(status)).inc()


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    loc = [str(p) for p in first.get("loc", ())]
    if first.get("type") == "json_invalid":
        return _error(400, "malformed_json", "request body is not valid JSON", "body")
    field = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else "body")
    if first.get("type") == "missing" and loc == ["body"]:
        field = "body"
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return _error(422, "validation_error", f"{field}: {msg}", field)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Everything loaded so far (FastAPI, SQLAlchemy, pydantic: ~80,000 objects)
    # lives as long as the process. Moved out of the cyclic GC's reach, a full
    # collection takes microseconds instead of ~37 ms, which stalled every
    # request in flight (bench P3: a 40 ms p99 tail at 6+ connections).
    gc.collect()
    gc.freeze()
    # Chains the audit events and exports signed checkpoints (on the leader replica).
    from jit_hooks.server import audit_worker

    audit_task = audit_worker.start(app.state.ctx)
    app.state.audit_task = audit_task  # a reference, or the loop may drop the task
    # Expires pending requests and delivers the notification outbox (on the leader).
    from jit_hooks.server.notify import worker as notify_worker

    notify_task, notifier = notify_worker.start(app.state.ctx, app.state.notify_config)
    app.state.notify_task = notify_task
    try:
        yield
    finally:
        audit_task.cancel()
        notify_task.cancel()
        notifier.close()
        app.state.ctx.close()  # the unit of work's threads, then the pool


def _mount_ui(app: FastAPI) -> None:
    """The approver web page (jit_hooks/server/ui/, docs/ui.md); ``/`` leads there."""
    from pathlib import Path

    from fastapi.responses import RedirectResponse
    from fastapi.staticfiles import StaticFiles

    from jit_hooks.server.ui import routes as ui_routes
    from jit_hooks.server.ui.security import StaticHeaders

    app.include_router(ui_routes.router)
    from jit_hooks.server.ui import sso as ui_sso

    app.include_router(ui_sso.router)
    static = StaticFiles(directory=Path(ui_routes.__file__).parent / "static")
    app.mount("/ui/static", StaticHeaders(static), name="ui-static")

    @app.get("/", include_in_schema=False)
    async def _root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=302)


def create_app(settings: Settings) -> FastAPI:
    from jit_hooks.server.routes import (
        audit,
        health,
        hooks,
        login,
        me,
        reports,
        requests,
        stream,
        tokens,
    )

    app = FastAPI(
        lifespan=_lifespan,
        title="jit-hooks approval service",
        version="1",
        description="Just-in-time SSH access: requests, approvals, host hooks. See docs/api.md.",
        docs_url=None,
        redoc_url=None,
    )
    metrics = Metrics()
    # Read and checked before serving: a bad channel config stops the start, and
    # the lifecycle's outbox writes see the same channels as the worker.
    from jit_hooks.server.notify import config as notify_config

    app.state.notify_config = notify_config.load(settings.data_dir)
    notify_config.install(app.state.notify_config)
    # SSO (DATA_DIR/oidc.toml) is checked before serving too; None: not configured.
    from jit_hooks.server import oidc, oidc_config

    sso = oidc_config.load(settings.data_dir)
    app.state.oidc = oidc.OidcClient(sso) if sso else None
    app.state.ctx = Context(
        settings=settings,
        engine=make_engine(settings.database_url, pool_size=settings.db_pool_size),
        metrics=metrics,
    )
    # Publish the real error body in /openapi.json (FastAPI would document its own
    # 422 shape, which the handlers below never send).
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422)
    }
    for r in (health, login, me, tokens, requests, audit, hooks, stream, reports):
        app.include_router(r.router, responses=errors)
    _mount_ui(app)

    @app.exception_handler(ServiceDomainError)
    async def _domain(request: Request, exc: ServiceDomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.code, exc.detail, exc.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return _error(exc.status_code, code, detail, None, getattr(exc, "headers", None))

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        # A uniqueness race the pre-checks could not see (the transaction rolled back).
        log.info("integrity conflict on %s %s: %s", request.method, request.url.path, exc.orig)
        return _error(409, "conflict", "conflicting change, retry")

    @app.exception_handler(OperationalError)
    async def _db(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database error on %s %s: %s", request.method, request.url.path, exc.orig)
        return _error(503, "unavailable", "database unavailable, try again")

    @app.exception_handler(CommitFailed)
    async def _commit(request: Request, exc: CommitFailed) -> JSONResponse:
        # Not the caller's fault, whatever the COMMIT raised (an IntegrityError of a
        # deferred constraint is no 409): the batch is gone, try again.
        log.error("database error on %s %s: %s", request.method, request.url.path, exc)
        return _error(503, "unavailable", "database unavailable, try again")

    @app.exception_handler(PoolTimeout)
    async def _pool(request: Request, exc: PoolTimeout) -> JSONResponse:
        # Overload: no database connection came free within the busy timeout.
        log.warning("database busy on %s %s: %s", request.method, request.url.path, exc)
        return _error(503, "unavailable", "database busy, try again")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "internal error")

    app.add_middleware(CountResponses, metrics=metrics)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
