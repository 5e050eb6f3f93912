"""``GET /api/v1/hook/stream``: a host's server-sent event stream (server/stream.py).

The stream opens with ``event: sync`` (the host fetches its sessions now: this
covers whatever happened while it was not connected, so a reconnect loses
nothing), then sends ``event: change`` for each event that concerns this host,
a comment line every ``stream.HEARTBEAT`` seconds so a dead connection shows on both
ends, and ``event: closed`` before it ends because the host's token is no
longer accepted: ``token_refused`` (host removed, token unknown) or
``token_expired`` (at the token's expires_at, e.g. the end of a rotation's grace).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import Connection, select

from jit_hooks.server.auth import HostPrincipal, token_hash
from jit_hooks.server.context import Creds, CtxDep
from jit_hooks.server.errors import ServiceDomainError
from jit_hooks.server.stream import Notice, hub_of, stream_cap
from jit_hooks.server.tables import tokens

router = APIRouter(prefix="/api/v1/hook", tags=["hooks"])

# Every stream re-checks its token this often even without an event (a change
# no event announces); a known expires_at ends the stream at that time exactly.
RECHECK_TOKEN = 300.0
# Tells the EventSource-style client how long to wait before reconnecting (ms);
# the jit-hooks agent uses its own backoff with jitter instead.
RETRY_MS = 5000
# Seconds a host refused for the stream cap is told to wait (Retry-After).
FULL_RETRY_AFTER = 30


def _event(name: str, data: dict, event_id: int | None = None) -> bytes:
    head = "" if event_id is None else f"id: {event_id}\n"
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _token_end(conn: Connection, token: str) -> int | None:
    """The expires_at of the (already authenticated) token: a stream ends then."""
    q = select(tokens.c.expires_at).where(tokens.c.token_hash == token_hash(token))
    return conn.execute(q).scalar()


@router.get("/stream", response_class=StreamingResponse)
async def stream(request: Request, ctx: CtxDep, creds: Creds) -> Response:
    """Events for this host only (text/event-stream); see the module docstring."""
    token = "" if creds is None else creds.credentials  # as_host refuses a missing one
    host: HostPrincipal
    host, token_end = await ctx.as_host(creds, lambda conn, h: (h, _token_end(conn, token)))
    hub = hub_of(request.app)
    if hub.streams >= stream_cap():
        # Streams must leave descriptors for hook calls (stream.stream_cap): the
        # host's agent retries later, its enforce timer covers the meantime.
        ctx.metrics.hook_decisions.labels("stream", "full").inc()
        return JSONResponse(
            {"error": "too_many_streams", "detail": "stream limit reached, retry later",
             "field": None},
            status_code=503,
            headers={"Retry-After": str(FULL_RETRY_AFTER)},
        )  # fmt: skip
    queue = await hub.subscribe(host.id)
    ctx.metrics.hook_decisions.labels("stream", "open").inc()

    async def still_valid() -> tuple[bool, int | None]:
        """Whether the token is still accepted, and its (maybe new) expires_at."""
        try:
            end = await ctx.as_host(creds, lambda conn, h: _token_end(conn, token))
        except ServiceDomainError:
            return False, None
        return True, end

    async def events() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        next_check = loop.time() + RECHECK_TOKEN
        try:
            yield f"retry: {RETRY_MS}\n".encode() + _event(
                "sync", {"host": host.name, "time": ctx.now()}, 0
            )
            seq = 0  # this stream's own event numbers (Notice.sse)
            end = token_end
            while True:
                # Keep-alives come from the hub (stream.HEARTBEAT): no timer per
                # stream, except one until a token's known end (rotation grace).
                notice: Notice | None
                if end is None:
                    notice = await queue.get()
                else:
                    try:
                        notice = await asyncio.wait_for(queue.get(), max(0, end - ctx.now()))
                    except TimeoutError:
                        yield _event("closed", {"reason": "token_expired"})
                        return
                if notice is None:  # queue overflow or shutdown: the host reconnects
                    return
                if notice.recheck_token or loop.time() >= next_check:
                    next_check = loop.time() + RECHECK_TOKEN
                    valid, end = await still_valid()
                    if not valid:
                        yield _event("closed", {"reason": "token_refused"})
                        return
                if notice.kind == "heartbeat":
                    yield b": keep-alive\n\n"
                else:
                    seq += 1
                    yield notice.sse(seq)
        finally:
            hub.unsubscribe(host.id, queue)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
