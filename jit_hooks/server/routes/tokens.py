"""The caller's own API tokens: list them, revoke one, log out (revoke the calling one)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from jit_hooks.server import store
from jit_hooks.server.context import Creds, CtxDep
from jit_hooks.server.schemas import TokenList

router = APIRouter(prefix="/api/v1", tags=["tokens"])


@router.get("/tokens", response_model=TokenList)
def list_tokens(ctx: CtxDep, creds: Creds) -> dict:
    with ctx.user_tx(creds) as (conn, user):
        return {"tokens": store.list_user_tokens(conn, user_id=user.id, current_id=user.token_id)}


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**62)],
    ctx: CtxDep,
    creds: Creds,
) -> Response:
    """Revoke one of your tokens; an admin may revoke anyone's (others get 404)."""
    with ctx.user_tx(creds) as (conn, user):
        store.revoke_user_token(
            conn,
            token_id=token_id,
            owner_id=None if user.is_admin else user.id,
            actor=user.name,
            now=ctx.now(),
            via="api",
        )
    return Response(status_code=204)


@router.post("/logout", status_code=204, response_class=Response)
def logout(ctx: CtxDep, creds: Creds) -> Response:
    """Revoke the token this call was made with."""
    with ctx.user_tx(creds) as (conn, user):
        store.revoke_user_token(
            conn,
            token_id=user.token_id,
            owner_id=user.id,
            actor=user.name,
            now=ctx.now(),
            via="logout",
        )
    return Response(status_code=204)
