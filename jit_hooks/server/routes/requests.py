"""Access requests: create, list, show, approve, deny, revoke, cancel, extend, drop."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from sqlalchemy import Connection

from jit_hooks.protocol import RequestState
from jit_hooks.server import audit, extend, lifecycle
from jit_hooks.server.auth import UserPrincipal
from jit_hooks.server.context import Creds, CtxDep, IdPath
from jit_hooks.server.errors import Conflict, Forbidden
from jit_hooks.server.schemas import ExtendIn, RequestIn, RequestList, RequestOut, ReviewIn

router = APIRouter(prefix="/api/v1/requests", tags=["requests"])


@router.post("", response_model=RequestOut, status_code=201)
async def create(body: RequestIn, ctx: CtxDep, creds: Creds) -> dict:
    now = ctx.now()
    out = await ctx.as_user(
        creds,
        lambda conn, user: lifecycle.create_request(
            conn,
            user=user,
            host=body.host,
            selector=body.selector,
            login=body.login,
            reason=body.reason,
            duration_seconds=body.duration_seconds,
            start=body.start,
            now=now,
            from_cidrs=body.from_cidrs,
        ),
    )
    ctx.metrics.request_events.labels("created").inc()
    if out["state"] == "approved":
        ctx.metrics.request_events.labels("approved").inc()
    return out


@router.get("", response_model=RequestList)
async def list_requests(
    ctx: CtxDep,
    creds: Creds,
    scope: Literal["mine", "review", "all"] = "mine",
    state: RequestState | None = None,
) -> dict:
    now = ctx.now()
    found = await ctx.as_user(
        creds,
        lambda conn, user: lifecycle.list_requests(
            conn, user=user, scope=scope, state=state, now=now
        ),
    )
    return {"requests": found}


@router.get("/{request_id}", response_model=RequestOut)
async def show(request_id: IdPath, ctx: CtxDep, creds: Creds) -> dict:
    now = ctx.now()
    return await ctx.as_user(
        creds,
        lambda conn, user: lifecycle.get_request(conn, user=user, request_id=request_id, now=now),
    )


def review_or_refuse(
    conn: Connection, user: UserPrincipal, *, request_id: int, decision: str, comment: str, now: int
) -> dict | Forbidden:
    """Review as the API and the web page (ui/) both do; a refusal is returned, audited.

    Refusals happen before review() writes anything: the attempt (self-approval,
    ineligible approver) is recorded and committed alone.
    """
    try:
        return lifecycle.review(
            conn, user=user, request_id=request_id, decision=decision, comment=comment, now=now
        )
    except Forbidden as e:
        audit.append(
            conn,
            at=now,
            kind="review.refused",
            actor=user.name,
            data={"request_id": request_id, "decision": decision, "reason": e.detail},
        )
        return e


async def _review(
    ctx: CtxDep, creds: Creds, request_id: int, decision: str, body: ReviewIn | None
) -> dict:
    now = ctx.now()
    comment = body.comment if body else ""
    out = await ctx.as_user(
        creds,
        lambda conn, user: review_or_refuse(
            conn, user, request_id=request_id, decision=decision, comment=comment, now=now
        ),
    )
    if isinstance(out, Forbidden):
        ctx.metrics.request_events.labels("refused").inc()
        raise out
    ctx.metrics.request_events.labels(decision).inc()
    if out["state"] in ("approved", "denied"):  # this review made the transition
        ctx.metrics.request_events.labels(out["state"]).inc()
    return out


@router.post("/{request_id}/approve", response_model=RequestOut)
async def approve(
    ctx: CtxDep,
    creds: Creds,
    request_id: IdPath,
    body: ReviewIn | None = None,
) -> dict:
    return await _review(ctx, creds, request_id, "approve", body)


@router.post("/{request_id}/deny", response_model=RequestOut)
async def deny(
    ctx: CtxDep,
    creds: Creds,
    request_id: IdPath,
    body: ReviewIn | None = None,
) -> dict:
    return await _review(ctx, creds, request_id, "deny", body)


@router.post("/{request_id}/revoke", response_model=RequestOut)
async def revoke(
    ctx: CtxDep,
    creds: Creds,
    request_id: IdPath,
    body: ReviewIn | None = None,
) -> dict:
    now = ctx.now()
    out = await ctx.as_user(
        creds,
        lambda conn, user: lifecycle.revoke(
            conn, user=user, request_id=request_id, comment=body.comment if body else "", now=now
        ),
    )
    ctx.metrics.request_events.labels("revoked").inc()
    return out


@router.post("/{request_id}/cancel", response_model=RequestOut)
async def cancel(request_id: IdPath, ctx: CtxDep, creds: Creds) -> dict:
    now = ctx.now()
    out = await ctx.as_user(
        creds,
        lambda conn, user: lifecycle.cancel(conn, user=user, request_id=request_id, now=now),
    )
    if isinstance(out, Conflict):  # it had expired (recorded so, committed): 409
        raise out
    ctx.metrics.request_events.labels("cancelled").inc()
    return out


@router.post("/{request_id}/extend", response_model=RequestOut)
async def extend_grant(request_id: IdPath, body: ExtendIn, ctx: CtxDep, creds: Creds) -> dict:
    """The requester asks for more time on an active grant (the policy decides how)."""
    now = ctx.now()
    out = await ctx.as_user(
        creds,
        lambda conn, user: extend.request_extension(
            conn,
            user=user,
            request_id=request_id,
            seconds=body.duration_seconds,
            reason=body.reason,
            now=now,
        ),
    )
    ctx.metrics.request_events.labels("extend").inc()
    return out


@router.post("/{request_id}/drop", response_model=RequestOut)
async def drop(request_id: IdPath, ctx: CtxDep, creds: Creds) -> dict:
    """The requester gives an approved grant back now."""
    now = ctx.now()
    out = await ctx.as_user(
        creds,
        lambda conn, user: lifecycle.drop(conn, user=user, request_id=request_id, now=now),
    )
    ctx.metrics.request_events.labels("dropped").inc()
    return out
