"""``GET /api/v1/hook/stream``: a host's server-sent event stream (server/stream.py).

The stream opens with ``event: sync`` (the host fetches its sessions now: this
covers whatever happened while it was not connected, so a reconnect loses
nothing), then sends ``event: change`` for each event that concerns this host,
a comment line every ``stream.HEARTBEAT`` seconds so a dead connection shows on both
ends, and ``event: closed`` before it ends because the host's token is no
longer accepted (revoked, rotated past its grace, host removed).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from jit_hooks.server.auth import HostPrincipal
from jit_hooks.server.context import Creds, CtxDep
from jit_hooks.server.errors import ServiceDomainError
from jit_hooks.server.stream import Notice, hub_of, stream_cap

router = APIRouter(prefix="/api/v1/hook", tags=["hooks"])

# A token that merely expires (no event) is noticed within this many seconds.
RECHECK_TOKEN = 300.0
# Tells the EventSource-style client how long to wait before reconnecting (ms);
# the jit-hooks agent uses its own backoff with jitter instead.
RETRY_MS = 5000
# Seconds a host refused for the stream cap is told to wait (Retry-After).
FULL_RETRY_AFTER = 30


def _event(name: str, data: dict, event_id: int | None = None) -> bytes:
    head = "" if event_id is None else f"id: {event_id}\n"
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@router.get("/stream", response_class=StreamingResponse)
async def stream(request: Request, ctx: CtxDep, creds: Creds) -> Response:
    """Events for this host only (text/event-stream); see the module docstring."""
    host: HostPrincipal = await ctx.as_host(creds, lambda conn, host: host)
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

    async def still_valid() -> bool:
        try:
            await ctx.as_host(creds, lambda conn, h: h)
        except ServiceDomainError:
            return False
        return True

    async def events() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        next_check = loop.time() + RECHECK_TOKEN
        try:
            yield f"retry: {RETRY_MS}\n".encode() + _event(
                "sync", {"host": host.name, "time": ctx.now()}, hub.cursor
            )
            while True:
                # Keep-alives come from the hub (stream.HEARTBEAT): no timer per stream.
                notice: Notice | None = await queue.get()
                if notice is None:  # queue overflow or shutdown: the host reconnects
                    return
                if notice.recheck_token or loop.time() >= next_check:
                    next_check = loop.time() + RECHECK_TOKEN
                    if not await still_valid():
                        yield _event("closed", {"reason": "token_refused"})
                        return
                if notice.kind == "heartbeat":
                    yield b": keep-alive\n\n"
                else:
                    yield notice.sse()
        finally:
            hub.unsubscribe(host.id, queue)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
