"""POST /api/v1/login: password checked through PAM on the service host; /login/sso/*: the
OpenID Connect device grant for `jit login --sso` (docs/server.md, SSO)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy import Connection

from jit_hooks.server import audit, oidc_signin, store
from jit_hooks.server.context import Context, CtxDep
from jit_hooks.server.errors import ServiceDomainError, Unauthorized
from jit_hooks.server.oidc import OidcClient, Pending, SsoError
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


# -- SSO: OAuth 2.0 device authorization grant (RFC 8628) through jit-server -----


class SsoRefused(ServiceDomainError):
    """Raised when an SSO sign-in cannot go on; ``code`` is the reason (docs/api.md)."""

    def __init__(self, e: SsoError) -> None:
        super().__init__(e.detail)
        self.code = e.reason
        # The IdP being down is not the caller's fault, but 5xx would read as
        # "jit-server is down" to clients: 424, the dependency failed.
        self.status = {
            "sso_unavailable": 404,
            "idp_unreachable": 424,
            "idp_error": 424,
            "expired": 410,
            "bad_id_token": 401,
            "too_many_sign_ins": 429,
        }.get(e.reason, 403)


class DevicePollIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    handle: Annotated[StrictStr, Field(min_length=1, max_length=100)]


def sso_client(request: Request) -> OidcClient:
    client = getattr(request.app.state, "oidc", None)
    if client is None:
        raise SsoRefused(SsoError("sso_unavailable", "SSO sign-in is not configured"))
    return client


@router.post("/login/sso/device")
async def sso_device_start(request: Request, ctx: CtxDep) -> dict:
    """Start a device sign-in: the person opens verification_uri and enters user_code."""
    client = sso_client(request)
    now = ctx.now()
    # Behind a reverse proxy every caller is the proxy: the per-client cap is then
    # one more global cap (docs/server.md).
    caller = request.client.host if request.client else "unknown"

    def capacity(conn: Connection) -> SsoError | None:
        try:
            oidc_signin.check_device_capacity(conn, config=client.config, client=caller, now=now)
        except SsoError as e:
            return e
        return None

    full = await ctx.run(capacity)  # before the IdP call, which each start costs
    if full is not None:
        log.warning("sso device sign-in refused: reason=%s client=%s", full.reason, caller)
        raise SsoRefused(full)
    try:
        started = await asyncio.to_thread(client.start_device)
    except SsoError as e:
        raise SsoRefused(e) from None
    handle = await ctx.run(
        lambda conn: oidc_signin.begin(
            conn,
            kind="device",
            secret=started.device_code,
            nonce=None,
            now=now,
            # Kept a minute past the IdP's own expiry, so a late poll hears
            # "expired" from the IdP and the refusal is audited.
            ttl=started.expires_in + 60,
            client=caller,
            poll_interval=started.interval,
        )
    )
    return {
        "handle": handle,
        "user_code": started.user_code,
        "verification_uri": started.verification_uri,
        "verification_uri_complete": started.verification_uri_complete,
        "expires_in": started.expires_in,
        "interval": started.interval,
    }


@router.post("/login/sso/device/token", response_model=None)
async def sso_device_token(
    body: DevicePollIn, request: Request, ctx: CtxDep
) -> dict | JSONResponse:
    """202 {"status": "pending"} until the person finished; then a user token (or a refusal)."""
    client = sso_client(request)
    now = ctx.now()
    flow = await ctx.run(
        lambda conn: oidc_signin.find(conn, kind="device", handle=body.handle, now=now)
    )
    if flow is None:
        gone = SsoError("expired", "unknown or expired sign-in; run jit login --sso again")
        raise SsoRefused(gone)
    # The IdP sees at most one poll per interval: an early one is answered here.
    on_time = await ctx.run(
        lambda conn: oidc_signin.pace(conn, handle=body.handle, flow=flow, now=now, slow_down=False)
    )
    if not on_time:
        return JSONResponse({"status": "pending", "slow_down": 5}, status_code=202)
    claims, error = None, None
    try:
        claims = await asyncio.to_thread(client.poll_device, flow.secret, now=now)
    except Pending as e:
        interval = 5 if e.reason == "slow_down" else 0
        if interval:
            await ctx.run(
                lambda conn: oidc_signin.pace(
                    conn, handle=body.handle, flow=flow, now=now, slow_down=True
                )
            )
        return JSONResponse({"status": "pending", "slow_down": interval}, status_code=202)
    except SsoError as e:
        error = e
    ttl = ctx.settings.user_token_ttl

    def work(conn: Connection) -> tuple[dict | None, str | None, SsoError | None]:
        oidc_signin.finish(conn, handle=body.handle)
        user = oidc_signin.decide(
            conn, config=client.config, claims=claims, error=error, via="sso-device", now=now
        )
        if isinstance(user, SsoError):
            return None, None, user
        token = oidc_signin.issue_token(conn, user=user, ttl=ttl, now=now)
        return store.get_user(conn, name=user.name), token, None

    user, token, refused = await ctx.run(work)
    if refused is not None:
        # warning: info never reached the service log (no handler below warning).
        log.warning("sso sign-in refused: reason=%s", refused.reason)
        raise SsoRefused(refused)
    return {"status": "ok", "token": token, "user": user, "expires_at": now + ttl}
