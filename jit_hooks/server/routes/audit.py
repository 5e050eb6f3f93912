"""GET /api/v1/audit: the audit chain, for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import Connection

from jit_hooks.server import audit
from jit_hooks.server.auth import UserPrincipal
from jit_hooks.server.context import MAX_ID, Creds, CtxDep
from jit_hooks.server.errors import Forbidden
from jit_hooks.server.schemas import EventList

router = APIRouter(prefix="/api/v1", tags=["audit"])


@router.get("/audit", response_model=EventList)
async def list_events(
    ctx: CtxDep,
    creds: Creds,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    def work(conn: Connection, user: UserPrincipal) -> list[dict]:
        if not user.is_admin:
            raise Forbidden("the audit log needs the admin role")
        return [
            audit.event_dict(r) for r in audit.iter_events(conn, after_id=after_id, limit=limit)
        ]

    return {"events": await ctx.as_user(creds, work)}
