"""Response headers and cross-site checks for every /ui response."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

# No script at all, styles and images from us only, forms post only to us,
# never framed (clickjacking), no <base> to re-point relative links.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Pages carry requests, names and reasons: no copy in any cache or the back button.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def secured(resp: Response, *, cache: bool = False) -> Response:
    resp.headers.update(HEADERS)
    if not cache:
        resp.headers.update(NO_STORE)
    return resp


class StaticHeaders:
    """ASGI wrapper: the same headers on the static files (they may be cached)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with)


def cross_site(request: Request) -> str | None:
    """Why this POST looks cross-site (None if it does not).

    Browsers send Sec-Fetch-Site on form posts (a header pages cannot set); a
    page on another origin (another port counts) gets "cross-site" or
    "same-site". Where it is present it decides. Without it (older browsers)
    the Origin must be ours; under ``Referrer-Policy: no-referrer`` browsers
    send ``Origin: null`` even for our own forms, so "null" is left to the CSRF
    token and SameSite=Strict. Clients that send neither (curl) still need the
    CSRF token.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site in ("same-origin", "none"):
            return None
        return f"Sec-Fetch-Site: {site}"
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != own:
            return "Origin is not this site"
    return None
