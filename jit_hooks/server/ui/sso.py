"""Web page sign-in through the IdP: authorization code + PKCE (S256), state and nonce.

``/ui/sso/start`` stores the flow (PKCE verifier, nonce) under the hash of a
random value kept in a short-lived cookie, and sends the browser to the IdP
with ``state`` = an HMAC of that value. ``/ui/sso/callback`` accepts the code
only with the same cookie and the matching state, once; the ID token's nonce
must be the flow's. Then it starts the usual UI session (ui/session.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from jit_hooks.server import auth, oidc_signin
from jit_hooks.server.oidc import OidcClient, SsoError, pkce_pair
from jit_hooks.server.ui import session
from jit_hooks.server.ui.security import secured

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ui/sso", include_in_schema=False)
# Lax, not Strict: the browser comes back from the IdP, another site, and a
# Strict cookie would not be sent on that navigation.
COOKIE = "__Host-jit_sso"
# Fixed texts for the sign-in page, never the IdP's words.
MESSAGES = {
    "denied": "Sign-in was cancelled at the identity provider.",
    "unknown_user": "Your account is not a jit user; ask an admin.",
    "no_role": "None of your groups gives you a role in jit.",
    "disabled": "Your jit user is disabled.",
    "last_admin": "You are the last jit admin and your groups no longer give admin.",
    "identity_mismatch": "That jit user belongs to another account at the identity provider.",
    "not_linked": "Your jit user is not linked to this identity provider account yet;"
    " ask a jit admin to link it (jit-server sso link).",
    "bad_username": "The identity provider gave no usable user name.",
    "unverified_email": "The identity provider has not verified your email.",
    "email_domain": "Your email's domain is not one jit accepts.",
    "flow": "The sign-in expired or did not start here; please try again.",
}
# After the session cookie is set, go on to /ui from our own page: a redirect
# would still count as the IdP's navigation, and the SameSite=Strict session
# cookie would not be sent with it.
SIGNED_IN = (
    '<!doctype html><html><head><meta charset="utf-8">'
    '<meta http-equiv="refresh" content="0;url=/ui"><title>Signed in</title></head>'
    '<body><p>Signed in. <a href="/ui">Continue</a></p></body></html>'
)


def _client(request: Request) -> OidcClient | None:
    client = getattr(request.app.state, "oidc", None)
    return client if client is not None and client.config.redirect_uri else None


def _state(handle: str) -> str:
    return hmac.new(handle.encode(), b"jit-sso-state", hashlib.sha256).hexdigest()


def _failed(request: Request, why: str, status: int = 403) -> Response:
    from jit_hooks.server.ui.routes import login_form_error

    resp = login_form_error(request, MESSAGES.get(why, "Sign-in through SSO failed."), status)
    resp.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return resp


@router.get("/start")
async def start(request: Request) -> Response:
    client = _client(request)
    if client is None:  # SSO is off: the sign-in page, which offers no SSO then
        return secured(RedirectResponse("/ui/login", status_code=303))
    ctx = request.app.state.ctx
    now = ctx.now()
    verifier, challenge = pkce_pair()
    nonce = secrets.token_urlsafe(24)
    try:
        # Discovery first: no flow row for an IdP we cannot reach.
        await asyncio.to_thread(client.metadata)
    except SsoError as e:
        log.warning("sso web sign-in: %s", e.reason)
        return _failed(request, e.reason, 502)
    handle = await ctx.run(
        lambda conn: oidc_signin.begin(
            conn,
            kind="web",
            secret=verifier,
            nonce=nonce,
            now=now,
            ttl=oidc_signin.WEB_FLOW_SECONDS,
        )
    )
    url = client.auth_url(state=_state(handle), nonce=nonce, challenge=challenge)
    resp = RedirectResponse(url, status_code=303)
    resp.set_cookie(
        COOKIE, handle, max_age=oidc_signin.WEB_FLOW_SECONDS, path="/", secure=True,
        httponly=True, samesite="lax",
    )  # fmt: skip
    return secured(resp)


@router.get("/callback")
async def callback(request: Request) -> Response:
    client = _client(request)
    if client is None:  # SSO is off: the sign-in page, which offers no SSO then
        return secured(RedirectResponse("/ui/login", status_code=303))
    ctx = request.app.state.ctx
    now = ctx.now()
    handle = request.cookies.get(COOKIE, "")
    state = request.query_params.get("state", "")
    code = request.query_params.get("code", "")
    flow = await ctx.run(lambda conn: oidc_signin.find(conn, kind="web", handle=handle, now=now))
    if flow is None or not state.isascii() or not hmac.compare_digest(_state(handle), state):
        log.warning("sso web sign-in: no matching flow for this browser (state or cookie)")
        return _failed(request, "flow", 400)
    claims, error = None, None
    if request.query_params.get("error"):
        error = SsoError("denied", "sign-in cancelled at the identity provider")
    elif not code or len(code) > 2000:
        error = SsoError("idp_error", "the identity provider sent no code")
    else:
        try:
            claims = await asyncio.to_thread(
                client.finish_code, code, verifier=flow.secret, nonce=flow.nonce or "", now=now
            )
        except SsoError as e:
            error = e

    def work(conn: Connection) -> str | SsoError:
        oidc_signin.finish(conn, handle=handle)
        user = oidc_signin.decide(
            conn, config=client.config, claims=claims, error=error, via="sso-web", now=now
        )
        if isinstance(user, SsoError):
            return user
        principal = auth.UserPrincipal(user.id, user.name, user.roles)
        ttl = ctx.settings.user_token_ttl  # like the token `jit login --sso` gets
        return session.start(conn, user=principal, via="sso", now=now, ttl=ttl)

    out = await ctx.run(work)
    if isinstance(out, SsoError):
        # warning: info never reached the service log (no handler below warning).
        log.warning("sso web sign-in refused: reason=%s", out.reason)
        return _failed(request, out.reason)
    resp = HTMLResponse(SIGNED_IN)
    resp.set_cookie(
        session.COOKIE, out, max_age=ctx.settings.ui_session_lifetime, path="/",
        secure=True, httponly=True, samesite="strict",
    )  # fmt: skip
    resp.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return secured(resp)
