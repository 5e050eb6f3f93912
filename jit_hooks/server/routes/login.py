"""POST /api/v1/login: password checked through PAM on the service host."""

from __future__ import annotations

import asyncio
import logging
import os

from fastapi import APIRouter
from sqlalchemy import Connection

from jit_hooks.server import audit, store
from jit_hooks.server.context import Context, CtxDep
from jit_hooks.server.errors import Unauthorized
from jit_hooks.server.schemas import LoginIn, LoginOut

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["login"])


def pam_check(username: str, password: str, service: str) -> bool:
    import pam  # python-pam; imported lazily, only this endpoint needs it

    p = pam.pam()
    if p.authenticate(username, password, service=service):
        return True
    # The caller only hears "invalid username or password"; the admin needs why.
    log.warning(
        "password sign-in refused by PAM: user=%r service=%s code=%s reason=%r%s",
        username[:64],
        service,
        getattr(p, "code", "?"),
        str(getattr(p, "reason", ""))[:200],
        shadow_hint(),
    )
    return False


def shadow_hint() -> str:
    """Why every password fails when the service is not root: pam_unix then checks
    passwords through unix_chkpwd, which only checks the caller's own."""
    if os.geteuid() == 0 or os.access("/etc/shadow", os.R_OK):
        return ""
    return (
        f" (this service runs as uid {os.geteuid()}, which cannot read /etc/shadow:"
        " pam_unix cannot check other users' passwords; give the PAM service a module"
        " that can, or use SSO sign-in)"
    )


async def check_password(ctx: Context, username: str, password: str) -> bool:
    """PAM's verdict; PAM may take seconds (pam_faildelay): a thread of its own."""
    return "\x00" not in username + password and await asyncio.to_thread(
        pam_check, username, password, ctx.settings.pam_service
    )


def password_user(conn: Connection, *, username: str, pam_ok: bool, now: int) -> dict | None:
    """The enabled jit user PAM vouched for, or None with login.failed audited.

    Shared by this route and the web page's sign-in (ui/), so both accept and
    refuse the same people.
    """
    user = None
    if pam_ok:
        try:
            user = store.get_user(conn, name=username)
        except Exception:  # unknown to jit: same answer as a wrong password
            user = None
    if user is None or user["disabled"]:
        audit.append(
            conn,
            at=now,
            kind="login.failed",
            actor=None,
            data={"user": username[:64], "via": "password"},
        )
        return None
    return user


@router.post("/login", response_model=LoginOut)
async def login(body: LoginIn, ctx: CtxDep) -> dict:
    ok = await check_password(ctx, body.username, body.password)
    now = ctx.now()

    def work(conn: Connection) -> tuple[dict | None, str | None]:
        user = password_user(conn, username=body.username, pam_ok=ok, now=now)
        if user is None:
            return None, None
        token = store.create_user_token(
            conn,
            name=user["name"],
            actor=user["name"],
            now=now,
            via="password",
            expires_at=now + ctx.settings.user_token_ttl,
        )
        return user, token

    user, token = await ctx.run(work)
    if user is None:
        log.info("password login failed for %r", body.username[:64])
        raise Unauthorized("invalid username or password")
    return {"token": token, "user": user}
