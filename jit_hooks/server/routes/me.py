"""The caller's own user record and SSH public keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from jit_hooks.server import store
from jit_hooks.server.context import Creds, CtxDep
from jit_hooks.server.schemas import KeyIn, KeyList, KeyOut, UserOut

router = APIRouter(prefix="/api/v1", tags=["me"])


@router.get("/me", response_model=UserOut)
def me(ctx: CtxDep, creds: Creds) -> dict:
    with ctx.user_tx(creds) as (conn, user):
        return store.get_user(conn, name=user.name)


@router.post("/keys", response_model=KeyOut, status_code=201)
def add_key(body: KeyIn, ctx: CtxDep, creds: Creds) -> dict:
    with ctx.user_tx(creds) as (conn, user):
        return store.add_key(
            conn, user_id=user.id, user=user.name, line=body.public_key, now=ctx.now()
        )


@router.get("/keys", response_model=KeyList)
def list_keys(ctx: CtxDep, creds: Creds) -> dict:
    with ctx.user_tx(creds) as (conn, user):
        return {"keys": store.list_keys(conn, user_id=user.id)}


@router.delete("/keys/{key_id}", status_code=204, response_class=Response)
def remove_key(
    key_id: Annotated[int, Path(ge=1, le=2**62)],
    ctx: CtxDep,
    creds: Creds,
) -> Response:
    with ctx.user_tx(creds) as (conn, user):
        store.remove_key(conn, user_id=user.id, user=user.name, key_id=key_id, now=ctx.now())
    return Response(status_code=204)
