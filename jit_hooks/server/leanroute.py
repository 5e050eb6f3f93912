"""LeanRoute: a FastAPI route whose common requests skip FastAPI's per-request machinery.

The login-path hooks are small JSON calls made on every login of every host.
FastAPI spends more Python per call on them (dependency resolution, body
parsing and validation, response validation, the thread-pool check) than the
whole SQLite transaction behind them (bench P3, docs/performance.md). A
LeanRoute is an ordinary ``APIRoute`` (same path, methods, OpenAPI schema,
exception handlers, middleware) whose request handler does the common case by
hand, with the same pydantic models:

* the endpoint is ``async def`` and takes only ``body`` (a pydantic model),
  ``ctx`` (the app's Context) and ``creds`` (the bearer token);
* the request has ``Content-Type: application/json`` and a ``Bearer`` token,
  and its body parses and validates (``model_validate_json``) to what FastAPI
  would make of it (``json.loads`` + ``model_validate``);
* the answer is validated and serialised with the route's response model, as
  FastAPI does (``dump_json``, ``application/json``).

Anything else (another content type, no or another auth scheme, invalid JSON,
a validation error) goes to FastAPI's own handler for the same route, so every
error answer is exactly FastAPI's; errors raised by the endpoint reach the
app's exception handlers as before. tests/server/test_leanroute.py checks that
both paths answer byte for byte the same.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, TypeAdapter

_PARAMS = {"body", "ctx", "creds"}
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class LeanRoute(APIRoute):
    """APIRoute with a hand-written fast path for simple async JSON endpoints."""

    def get_route_handler(self) -> Handler:
        full = super().get_route_handler()
        lean = _lean_handler(self, full)
        return full if lean is None else lean


def _lean_handler(route: APIRoute, full: Handler) -> Handler | None:
    """The fast handler for ``route``, or None when the route is not of the simple kind."""
    endpoint = route.endpoint
    if not inspect.iscoroutinefunction(endpoint) or route.dependencies:
        return None
    params = inspect.signature(endpoint).parameters
    if not set(params) <= _PARAMS:
        return None
    body_model = None
    if "body" in params:
        body_model = typing.get_type_hints(endpoint).get("body")
        if not (isinstance(body_model, type) and issubclass(body_model, BaseModel)):
            return None
    if route.response_model is None:
        return None
    answer = TypeAdapter(route.response_model)
    status = route.status_code or 200
    wants_ctx, wants_creds = "ctx" in params, "creds" in params

    async def handler(request: Request) -> Response:
        args: dict[str, Any] = {}
        if wants_creds:
            scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
            if not token or scheme.lower() != "bearer":
                return await full(request)  # FastAPI's answer to a missing/other token
            args["creds"] = HTTPAuthorizationCredentials(scheme=scheme, credentials=token)
        if body_model is not None:
            if request.headers.get("content-type") != "application/json":
                return await full(request)
            try:
                # One step in pydantic-core: the bodies' fields are all strict strings, so
                # it accepts exactly what json.loads + model_validate would.
                args["body"] = body_model.model_validate_json(await request.body())
            except Exception:  # noqa: BLE001 - bad JSON (even too deep to parse), invalid
                return await full(request)  # values: FastAPI answers (the body is cached)
        if wants_ctx:
            args["ctx"] = request.app.state.ctx
        result = await endpoint(**args)
        content = answer.dump_json(answer.validate_python(result), by_alias=True)
        return Response(content=content, status_code=status, media_type="application/json")

    return handler
