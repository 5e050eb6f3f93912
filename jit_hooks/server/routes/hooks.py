"""Hook endpoints for hosts (host token; a host only ever learns about itself)."""

from __future__ import annotations

from fastapi import APIRouter

from jit_hooks.server import decisions
from jit_hooks.server.context import Creds, CtxDep
from jit_hooks.server.errors import InvalidInput
from jit_hooks.server.leanroute import LeanRoute
from jit_hooks.server.schemas import (
    AccountIn,
    AuthorizedKeysIn,
    AuthorizedKeysOut,
    BreakGlassIn,
    BreakGlassOut,
    DecisionOut,
    PingOut,
    SessionIn,
    SessionsOut,
)

# LeanRoute: the async hooks' common requests skip FastAPI's per-request
# dependency and validation machinery (jit_hooks/server/leanroute.py).
router = APIRouter(prefix="/api/v1/hook", tags=["hooks"], route_class=LeanRoute)

# The login-path hooks are ``async def`` and run their short transaction on the
# event loop: the process has one SQLite connection, so their database work is
# serialised either way, and skipping the thread-pool hop per call measured
# +48% checks/s (bench P3: 452 -> 671/s). On SQLite the calls of one loop turn
# share one group-committed transaction, each answering after the COMMIT
# (Context.hook_tx). A write lock held by another process can stall the loop for
# up to the busy timeout; hosts then fail closed on their own budget.


@router.post("/authorized-keys", response_model=AuthorizedKeysOut)
async def authorized_keys(body: AuthorizedKeysIn, ctx: CtxDep, creds: Creds) -> dict:
    m = ctx.metrics
    with m.child(m.hook_latency, "authorized_keys").time():
        async with ctx.hook_tx(creds) as (conn, host):
            found = decisions.authorized_keys(
                conn,
                host=host,
                login=body.login,
                fingerprint=body.fingerprint,
                key_type=body.key_type,
                key=body.key,
                now=ctx.now(),
                asked_host=body.host,
                connection=body.connection,
            )
    m.child(m.hook_decisions, "authorized_keys", "allow" if found["keys"] else "deny").inc()
    return found


@router.post("/account", response_model=DecisionOut)
async def account(body: AccountIn, ctx: CtxDep, creds: Creds) -> dict:
    m = ctx.metrics
    with m.child(m.hook_latency, "account").time():
        async with ctx.hook_tx(creds) as (conn, host):
            answer = decisions.account(
                conn,
                host=host,
                login=body.login,
                rhost=body.rhost,
                service=body.service,
                connection=body.connection,
                fingerprint=body.fingerprint,
                now=ctx.now(),
                asked_host=body.host,
            )
    m.child(m.hook_decisions, "account", answer["decision"]).inc()
    m.child(m.logins, answer["decision"]).inc()
    return answer


@router.post("/session", response_model=DecisionOut)
async def session(body: SessionIn, ctx: CtxDep, creds: Creds) -> dict:
    m = ctx.metrics
    with m.child(m.hook_latency, "session").time():
        async with ctx.hook_tx(creds) as (conn, host):
            answer = decisions.session(
                conn,
                host=host,
                event=body.event,
                login=body.login,
                rhost=body.rhost,
                connection=body.connection,
                key_type=body.key_type,
                key=body.key,
                fingerprint=body.fingerprint,
                now=ctx.now(),
                asked_host=body.host,
            )
    m.child(m.hook_decisions, "session", answer["decision"]).inc()
    return answer


@router.get("/sessions", response_model=SessionsOut)
def open_sessions(ctx: CtxDep, creds: Creds) -> dict:
    """Open sessions of this host; those whose approval ended are to be ended (enforce)."""
    with ctx.metrics.hook_latency.labels("sessions").time():
        with ctx.host_tx(creds) as (conn, host):
            answer = decisions.open_sessions(conn, host=host, now=ctx.now())
    if answer["end"]:
        ctx.metrics.hook_decisions.labels("enforce", "end").inc(len(answer["end"]))
    return answer


# Seconds a break-glass report's login time may lie ahead of the service's clock.
BREAK_GLASS_MAX_SKEW = 300


@router.post("/break-glass", response_model=BreakGlassOut)
def break_glass(body: BreakGlassIn, ctx: CtxDep, creds: Creds) -> dict:
    now = ctx.now()
    # A spooled report arrives late, never early: beyond a clock skew it is a wrong clock.
    if body.at is not None and body.at > now + BREAK_GLASS_MAX_SKEW:
        raise InvalidInput("login time is in the future", field="at")
    with ctx.host_tx(creds) as (conn, host):
        out = decisions.break_glass(
            conn,
            host=host,
            login=body.login,
            rhost=body.rhost,
            connection=body.connection,
            stage=body.stage,
            now=now,
            report_id=body.report_id,
            login_at=body.at,
        )
    ctx.metrics.hook_decisions.labels("break_glass", "recorded").inc()
    return out


@router.get("/ping", response_model=PingOut)
def ping(ctx: CtxDep, creds: Creds) -> dict:
    with ctx.host_tx(creds) as (conn, host):
        return {"host": host.name, "time": ctx.now()}
