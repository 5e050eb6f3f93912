"""The caller's own API tokens: list them, revoke one, log out (revoke the calling one)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from jit_hooks.server import store
from jit_hooks.server.context import Creds, CtxDep, IdPath
from jit_hooks.server.schemas import TokenList

router = APIRouter(prefix="/api/v1", tags=["tokens"])


@router.get("/tokens", response_model=TokenList)
async def list_tokens(ctx: CtxDep, creds: Creds) -> dict:
    found = await ctx.as_user(
        creds,
        lambda conn, user: store.list_user_tokens(conn, user_id=user.id, current_id=user.token_id),
    )
    return {"tokens": found}


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response)
async def revoke_token(
    token_id: IdPath,
    ctx: CtxDep,
    creds: Creds,
) -> Response:
    """Revoke one of your tokens; an admin may revoke anyone's (others get 404)."""
    now = ctx.now()
    await ctx.as_user(
        creds,
        lambda conn, user: store.revoke_user_token(
            conn,
            token_id=token_id,
            owner_id=None if user.is_admin else user.id,
            actor=user.name,
            now=now,
            via="api",
        ),
    )
    return Response(status_code=204)


@router.post("/logout", status_code=204, response_class=Response)
async def logout(ctx: CtxDep, creds: Creds) -> Response:
    """Revoke the token this call was made with."""
    now = ctx.now()
    await ctx.as_user(
        creds,
        lambda conn, user: store.revoke_user_token(
            conn,
            token_id=user.token_id,
            owner_id=user.id,
            actor=user.name,
            now=now,
            via="logout",
        ),
    )
    return Response(status_code=204)
