"""POST /api/v1/login: password checked through PAM on the service host."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from sqlalchemy import Connection

from jit_hooks.server import audit, store
from jit_hooks.server.context import CtxDep
from jit_hooks.server.errors import Unauthorized
from jit_hooks.server.schemas import LoginIn, LoginOut

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["login"])


def pam_check(username: str, password: str, service: str) -> bool:
    import pam  # python-pam; imported lazily, only this endpoint needs it

    return bool(pam.pam().authenticate(username, password, service=service))


@router.post("/login", response_model=LoginOut)
async def login(body: LoginIn, ctx: CtxDep) -> dict:
    # PAM may take seconds (pam_faildelay): a thread of its own, not a database thread.
    ok = "\x00" not in body.username + body.password and await asyncio.to_thread(
        pam_check, body.username, body.password, ctx.settings.pam_service
    )
    now = ctx.now()

    def work(conn: Connection) -> tuple[dict | None, str | None]:
        user = None
        if ok:
            try:
                user = store.get_user(conn, name=body.username)
            except Exception:  # unknown to jit: same answer as a wrong password
                user = None
        if user is None or user["disabled"]:
            audit.append(
                conn,
                at=now,
                kind="login.failed",
                actor=None,
                data={"user": body.username[:64], "via": "password"},
            )
            return None, None
        token = store.create_user_token(
            conn, name=user["name"], actor=user["name"], now=now, via="password"
        )
        return user, token

    user, token = await ctx.run(work)
    if user is None:
        log.info("password login failed for %r", body.username[:64])
        raise Unauthorized("invalid username or password")
    return {"token": token, "user": user}
