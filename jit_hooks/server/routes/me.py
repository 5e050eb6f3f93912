"""The caller's own user record and SSH public keys."""

from __future__ import annotations

from fastapi import APIRouter, Response

from jit_hooks.server import store
from jit_hooks.server.context import Creds, CtxDep, IdPath
from jit_hooks.server.schemas import KeyIn, KeyList, KeyOut, UserOut

router = APIRouter(prefix="/api/v1", tags=["me"])


@router.get("/me", response_model=UserOut)
async def me(ctx: CtxDep, creds: Creds) -> dict:
    return await ctx.as_user(creds, lambda conn, user: store.get_user(conn, name=user.name))


@router.post("/keys", response_model=KeyOut, status_code=201)
async def add_key(body: KeyIn, ctx: CtxDep, creds: Creds) -> dict:
    now = ctx.now()
    return await ctx.as_user(
        creds,
        lambda conn, user: store.add_key(
            conn, user_id=user.id, user=user.name, line=body.public_key, now=now
        ),
    )


@router.get("/keys", response_model=KeyList)
async def list_keys(ctx: CtxDep, creds: Creds) -> dict:
    found = await ctx.as_user(creds, lambda conn, user: store.list_keys(conn, user_id=user.id))
    return {"keys": found}


@router.delete("/keys/{key_id}", status_code=204, response_class=Response)
async def remove_key(
    key_id: IdPath,
    ctx: CtxDep,
    creds: Creds,
) -> Response:
    now = ctx.now()
    await ctx.as_user(
        creds,
        lambda conn, user: store.remove_key(
            conn, user_id=user.id, user=user.name, key_id=key_id, now=now
        ),
    )
    return Response(status_code=204)
