"""GET /api/v1/reports/usage: which approvals were used, from where, for how long."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from jit_hooks.server import usage
from jit_hooks.server.context import MAX_ID, Creds, CtxDep
from jit_hooks.server.schemas import UsageOut

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])


@router.get("/usage", response_model=UsageOut)
async def usage_report(
    ctx: CtxDep,
    creds: Creds,
    # Times are 32-bit integer columns on PostgreSQL: a larger since is a 422, not a 500.
    since: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
) -> dict:
    """Approvals whose window reached ``since`` (unix seconds), for admins and approvers."""
    now = ctx.now()
    return await ctx.as_user(
        creds, lambda conn, user: usage.usage(conn, since=since, now=now, viewer=user)
    )
