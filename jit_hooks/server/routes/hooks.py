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

# Every route runs its transaction through the unit of work (Context.as_host,
# jit_hooks/server/unit.py), on a worker thread: the event loop never waits on
# the database. The login-path hooks pass batch=True: on SQLite the calls that
# arrive together share one group-committed transaction, each answering only
# after the COMMIT. authorized-keys and account also prefetch their decision
# lookups: on PostgreSQL they travel with the token lookup, one round trip
# (decisions.Prefetch).


@router.post("/authorized-keys", response_model=AuthorizedKeysOut)
async def authorized_keys(body: AuthorizedKeysIn, ctx: CtxDep, creds: Creds) -> dict:
    m = ctx.metrics
    with m.child(m.hook_latency, "authorized_keys").time():
        now = ctx.now()
        found = await ctx.as_host(
            creds,
            lambda conn, host, pre: decisions.authorized_keys(
                conn,
                host=host,
                login=body.login,
                fingerprint=body.fingerprint,
                key_type=body.key_type,
                key=body.key,
                now=now,
                asked_host=body.host,
                connection=body.connection,
                pre=pre,
            ),
            batch=True,
            prefetch=lambda conn, digest: decisions.prefetch(
                conn, digest, login=body.login, fingerprint=body.fingerprint, now=now
            ),
        )
    m.child(m.hook_decisions, "authorized_keys", "allow" if found["keys"] else "deny").inc()
    return found


@router.post("/account", response_model=DecisionOut)
async def account(body: AccountIn, ctx: CtxDep, creds: Creds) -> dict:
    m = ctx.metrics
    with m.child(m.hook_latency, "account").time():
        now = ctx.now()
        answer = await ctx.as_host(
            creds,
            lambda conn, host, pre: decisions.account(
                conn,
                host=host,
                login=body.login,
                rhost=body.rhost,
                service=body.service,
                connection=body.connection,
                fingerprint=body.fingerprint,
                now=now,
                asked_host=body.host,
                open_session=body.open_session,
                pre=pre,
            ),
            batch=True,
            prefetch=lambda conn, digest: decisions.prefetch(
                conn, digest, login=body.login, fingerprint=body.fingerprint, now=now
            ),
        )
    m.child(m.hook_decisions, "account", answer["decision"]).inc()
    m.child(m.logins, answer["decision"]).inc()
    return answer


@router.post("/session", response_model=DecisionOut)
async def session(body: SessionIn, ctx: CtxDep, creds: Creds) -> dict:
    m = ctx.metrics
    with m.child(m.hook_latency, "session").time():
        now = ctx.now()
        answer = await ctx.as_host(
            creds,
            lambda conn, host: decisions.session(
                conn,
                host=host,
                event=body.event,
                login=body.login,
                rhost=body.rhost,
                connection=body.connection,
                key_type=body.key_type,
                key=body.key,
                fingerprint=body.fingerprint,
                now=now,
                asked_host=body.host,
            ),
            batch=True,
        )
    m.child(m.hook_decisions, "session", answer["decision"]).inc()
    return answer


@router.get("/sessions", response_model=SessionsOut)
async def open_sessions(ctx: CtxDep, creds: Creds) -> dict:
    """Open sessions of this host; those whose approval ended are to be ended (enforce)."""
    with ctx.metrics.hook_latency.labels("sessions").time():
        now = ctx.now()
        answer = await ctx.as_host(
            creds, lambda conn, host: decisions.open_sessions(conn, host=host, now=now)
        )
    if answer["end"]:
        ctx.metrics.hook_decisions.labels("enforce", "end").inc(len(answer["end"]))
    return answer


# Seconds a break-glass report's login time may lie ahead of the service's clock.
BREAK_GLASS_MAX_SKEW = 300


@router.post("/break-glass", response_model=BreakGlassOut)
async def break_glass(body: BreakGlassIn, ctx: CtxDep, creds: Creds) -> dict:
    now = ctx.now()
    # A spooled report arrives late, never early: beyond a clock skew it is a wrong clock.
    if body.at is not None and body.at > now + BREAK_GLASS_MAX_SKEW:
        raise InvalidInput("login time is in the future", field="at")
    out = await ctx.as_host(
        creds,
        lambda conn, host: decisions.break_glass(
            conn,
            host=host,
            login=body.login,
            rhost=body.rhost,
            connection=body.connection,
            stage=body.stage,
            now=now,
            report_id=body.report_id,
            login_at=body.at,
        ),
    )
    ctx.metrics.hook_decisions.labels("break_glass", "recorded").inc()
    return out


@router.get("/ping", response_model=PingOut)
async def ping(ctx: CtxDep, creds: Creds) -> dict:
    return await ctx.as_host(creds, lambda conn, host: {"host": host.name, "time": ctx.now()})
