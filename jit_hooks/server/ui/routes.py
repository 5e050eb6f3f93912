"""The /ui pages: sign in, review queue, a request, approve/deny/revoke/cancel, sign out.

One code path with the API: every action runs the same lifecycle function
(and, for reviews, the same refusal audit: routes/requests.review_or_refuse)
in one transaction of the same unit of work (ctx.run), so roles,
no-self-approval, notifications and the audit log are the API's own.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection, select

from jit_hooks.server import audit, auth, lifecycle
from jit_hooks.server.context import Context
from jit_hooks.server.errors import Conflict, Forbidden, ServiceDomainError, Unauthorized
from jit_hooks.server.routes import login as login_route
from jit_hooks.server.routes.requests import review_or_refuse
from jit_hooks.server.tables import hosts, request_hosts, requests
from jit_hooks.server.ui import session
from jit_hooks.server.ui.render import render
from jit_hooks.server.ui.security import cross_site, secured

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False)
T = TypeVar("T")
HISTORY = 10
MAX_FIELDS = 10
# Messages shown after a redirect (?done=...): fixed texts, never echoed input.
DONE = {
    "approve": "Your approval was recorded.",
    "deny": "The request was denied.",
    "revoke": "Access was revoked.",
    "cancel": "The request was cancelled.",
}


def _ctx(request: Request) -> Context:
    return request.app.state.ctx


def _cookie(request: Request) -> str | None:
    return request.cookies.get(session.COOKIE)


def _to_sign_in() -> Response:
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(session.COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return secured(resp)


async def _form(request: Request) -> dict[str, str]:
    """The url-encoded form (BodyLimit caps its size); the first value of each field."""
    if request.headers.get("content-type", "").split(";")[0].strip() not in (
        "application/x-www-form-urlencoded",
        "",
    ):
        return {}
    body = (await request.body()).decode("utf-8", "replace")
    try:
        fields = parse_qs(body, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        return {}
    return {k: v[0] for k, v in fields.items()}


async def _as_session(request: Request, work: Callable[[Connection, auth.UserPrincipal], T]):
    """(user, work(conn, user)) in one transaction with the session's user; NoSession if none."""
    ctx = _ctx(request)
    now = ctx.now()
    cookie = _cookie(request)
    s = ctx.settings

    def job(conn: Connection) -> tuple[auth.UserPrincipal, T]:
        user = session.resolve(
            conn, cookie, now=now, idle=s.ui_session_idle, lifetime=s.ui_session_lifetime
        )
        return user, work(conn, user)

    return await ctx.run(job)


def _page(request: Request, template: str, status: int = 200, **values: Any) -> Response:
    cookie = _cookie(request)
    values.setdefault("csrf", session.csrf_token(cookie) if cookie else "")
    return secured(HTMLResponse(render(template, now=_ctx(request).now(), **values), status))


def _refused(request: Request, why: str) -> Response:
    log.warning("ui: refused %s %s: %s", request.method, request.url.path, why)
    return _page(request, "error.html", 403, user=None, message=f"Refused: {why}.")


def _check_post(request: Request, form: dict[str, str]) -> Response | None:
    """Cross-site and CSRF checks of a signed-in POST; a refusal page, or None if fine."""
    why = cross_site(request)
    if why:
        return _refused(request, f"cross-site request ({why})")
    cookie = _cookie(request)
    if cookie is None:
        return _to_sign_in()
    if not session.csrf_ok(cookie, form.get("csrf", "")):
        return _refused(request, "the form's CSRF token is missing or wrong; reload the page")
    return None


# -- pages ---------------------------------------------------------------------


async def _list_page(request: Request, title: str, which: str) -> Response:
    now = _ctx(request).now()

    def work(conn: Connection, user: auth.UserPrincipal) -> list[dict]:
        if which == "active":
            found = lifecycle.list_requests(
                conn, user=user, scope="all" if user.is_admin else "mine", state="approved", now=now
            )
            return found
        return lifecycle.list_requests(conn, user=user, scope=which, state=None, now=now)

    try:
        user, found = await _as_session(request, work)
    except session.NoSession:
        return _to_sign_in()
    return _page(request, "list.html", user=user, title=title, which=which, requests=found)


@router.get("")
async def queue(request: Request) -> Response:
    return await _list_page(request, "Waiting for your review", "review")


@router.get("/mine")
async def mine(request: Request) -> Response:
    return await _list_page(request, "My requests", "mine")


@router.get("/active")
async def active(request: Request) -> Response:
    return await _list_page(request, "Active access", "active")


def _details(conn: Connection, user: auth.UserPrincipal, request_id: int, now: int) -> dict:
    """The request as the API shows it, plus its policy's rule and the requester's history."""
    req = lifecycle.get_request(conn, user=user, request_id=request_id, now=now)
    row = conn.execute(
        select(requests.c.policy_spec, requests.c.requester_id).where(requests.c.id == request_id)
    ).one()
    spec = json.loads(row.policy_spec)
    history = [
        {
            "id": h.id,
            "host": h.host_name or "(selector)",
            "login": h.login,
            "state": lifecycle.effective_state(h, now),
            "created_at": h.created_at,
            "reason": h.reason,
        }
        for h in conn.execute(
            select(requests, hosts.c.name.label("host_name"))
            .select_from(requests.outerjoin(hosts, hosts.c.id == requests.c.host_id))
            .where(requests.c.requester_id == row.requester_id, requests.c.id != request_id)
            .order_by(requests.c.id.desc())
            .limit(HISTORY)
        )
    ]
    covered = [
        r.name
        for r in conn.execute(
            select(hosts.c.name)
            .select_from(hosts.join(request_hosts, request_hosts.c.host_id == hosts.c.id))
            .where(request_hosts.c.request_id == request_id)
            .order_by(hosts.c.name)
        )
    ]
    return {"req": req, "rule": spec, "history": history, "hosts": covered}


async def _request_page(
    request: Request, request_id: int, *, error: str | None = None, status: int = 200
) -> Response:
    now = _ctx(request).now()
    try:
        user, data = await _as_session(
            request, lambda conn, user: _details(conn, user, request_id, now)
        )
    except session.NoSession:
        return _to_sign_in()
    except ServiceDomainError as e:
        return _page(request, "error.html", e.status, user=None, message=e.detail)
    done = DONE.get(request.query_params.get("done", ""))
    return _page(request, "request.html", status, user=user, error=error, done=done, **data)


@router.get("/requests/{request_id}")
async def show(request: Request, request_id: int) -> Response:
    if not 1 <= request_id <= 2**62:
        return _page(request, "error.html", 404, user=None, message="unknown request")
    return await _request_page(request, request_id)


# -- actions -------------------------------------------------------------------


def _count(ctx: Context, action: str, out: dict | Forbidden) -> None:
    """The same request_events counters the API's routes keep."""
    if isinstance(out, Forbidden):
        ctx.metrics.request_events.labels("refused").inc()
        return
    ctx.metrics.request_events.labels(action if action != "revoke" else "revoked").inc()
    if action in ("approve", "deny") and out["state"] in ("approved", "denied"):
        ctx.metrics.request_events.labels(out["state"]).inc()


@router.post("/requests/{request_id}/approve")
async def approve(request: Request, request_id: int) -> Response:
    return await _act(request, request_id, "approve")


@router.post("/requests/{request_id}/deny")
async def deny(request: Request, request_id: int) -> Response:
    return await _act(request, request_id, "deny")


@router.post("/requests/{request_id}/revoke")
async def revoke(request: Request, request_id: int) -> Response:
    return await _act(request, request_id, "revoke")


@router.post("/requests/{request_id}/cancel")
async def cancel(request: Request, request_id: int) -> Response:
    return await _act(request, request_id, "cancel")


async def _act(request: Request, request_id: int, action: str) -> Response:
    if not 1 <= request_id <= 2**62:
        return _page(request, "error.html", 404, user=None, message="unknown request")
    form = await _form(request)
    refused = _check_post(request, form)
    if refused is not None:
        return refused
    ctx = _ctx(request)
    now = ctx.now()
    comment = form.get("comment", "")

    def work(conn: Connection, user: auth.UserPrincipal) -> dict | Forbidden | Conflict:
        if action in ("approve", "deny"):
            return review_or_refuse(
                conn, user, request_id=request_id, decision=action, comment=comment, now=now
            )
        if action == "revoke":
            return lifecycle.revoke(
                conn, user=user, request_id=request_id, comment=comment, now=now
            )
        return lifecycle.cancel(conn, user=user, request_id=request_id, now=now)

    try:
        _, out = await _as_session(request, work)
    except session.NoSession:
        return _to_sign_in()
    except ServiceDomainError as e:
        return await _request_page(request, request_id, error=e.detail, status=e.status)
    if isinstance(out, Conflict):  # a cancel that found the request expired (recorded)
        return await _request_page(request, request_id, error=out.detail, status=out.status)
    _count(ctx, action, out)
    if isinstance(out, Forbidden):
        return await _request_page(request, request_id, error=out.detail, status=out.status)
    return secured(RedirectResponse(f"/ui/requests/{request_id}?done={action}", status_code=303))


# -- sign in / out -------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request) -> Response:
    retry = (
        "The sign-in form expired; please sign in again."
        if "retry" in request.query_params
        else None
    )
    return login_form_error(request, retry, 200)


def _login_failed(request: Request) -> Response:
    return login_form_error(request, "Sign-in failed: unknown or revoked token, or wrong password.")


def login_form_error(request: Request, message: str | None, status: int = 401) -> Response:
    """The sign-in page with a fresh login-CSRF value, double-submitted (cookie + field):
    no session exists yet, so a page elsewhere must not sign us in as its own user."""
    nonce = secrets.token_urlsafe(24)
    oidc = getattr(request.app.state, "oidc", None)
    sso = oidc is not None and oidc.config.redirect_uri is not None  # ui/sso.py
    resp = _page(
        request, "login.html", status, user=None, csrf="", login_csrf=nonce, error=message, sso=sso
    )
    resp.set_cookie(
        session.LOGIN_COOKIE, nonce, max_age=3600, path="/", secure=True, httponly=True,
        samesite="strict",
    )  # fmt: skip
    return resp


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    why = cross_site(request)
    if why:
        return _refused(request, f"cross-site request ({why})")
    sent, expected = form.get("login_csrf", ""), request.cookies.get(session.LOGIN_COOKIE, "")
    fresh = expected and sent.isascii() and expected.isascii()
    if not fresh or not hmac.compare_digest(sent, expected):
        # A form we did not just serve (expired, or posted from elsewhere): a fresh one.
        return secured(RedirectResponse("/ui/login?retry=1", status_code=303))
    ctx = _ctx(request)
    now = ctx.now()
    token = form.get("token", "").strip()
    username, password = form.get("username", ""), form.get("password", "")
    if token:

        def by_token(conn: Connection) -> str | None:
            try:
                if len(token) > auth.MAX_TOKEN_LEN:
                    raise Unauthorized("unknown or revoked token")
                user = auth.require_user(auth.authenticate(conn, token))
            except (Unauthorized, Forbidden):
                audit.append(
                    conn, at=now, kind="login.failed", actor=None, data={"via": "ui-token"}
                )
                return None
            return session.start(
                conn, user=user, via="token", now=now, source_token_id=user.token_id
            )

        cookie = await ctx.run(by_token)
    elif username and password and len(username) <= 64 and len(password) <= 1024:
        ok = await login_route.check_password(ctx, username, password)

        def by_password(conn: Connection) -> str | None:
            u = login_route.password_user(conn, username=username, pam_ok=ok, now=now)
            if u is None:
                return None
            user = auth.UserPrincipal(u["id"], u["name"], frozenset(u["roles"]))
            return session.start(
                conn, user=user, via="password", now=now, ttl=ctx.settings.user_token_ttl
            )

        cookie = await ctx.run(by_password)
    else:
        return login_form_error(request, "Give a user name and password, or an API token.", 422)
    if cookie is None:
        return _login_failed(request)
    resp = RedirectResponse("/ui", status_code=303)
    resp.set_cookie(
        session.COOKIE, cookie, max_age=ctx.settings.ui_session_lifetime, path="/",
        secure=True, httponly=True, samesite="strict",
    )  # fmt: skip
    resp.delete_cookie(
        session.LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="strict"
    )
    return secured(resp)


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await _form(request)
    refused = _check_post(request, form)
    if refused is not None:
        return refused
    ctx = _ctx(request)
    now = ctx.now()
    cookie = _cookie(request)
    await ctx.run(lambda conn: session.end(conn, cookie, now=now))
    return _to_sign_in()
