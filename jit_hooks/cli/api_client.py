"""HTTP client for the approval service API (docs/api.md), used by the `jit` CLI."""

from __future__ import annotations

import http.client
import logging
import ssl
from collections.abc import Iterator
from typing import Any

import requests

from jit_hooks.errors import JitError
from jit_hooks.protocol import API_PREFIX

log = logging.getLogger(__name__)

# (connect, read) seconds. Connecting to a live service on a LAN takes
# milliseconds, so 5 s is enough and an unreachable service is reported quickly
# instead of hanging a terminal. Reads get 30 s: `POST /login` goes through PAM
# on the service host, which sleeps a few seconds after a wrong password
# (pam_faildelay), and a busy SQLite writer may make a request wait on its lock.
TIMEOUT = (5.0, 30.0)
# Error texts come from the network: show at most this much of them.
MAX_MESSAGE = 300


class CliError(JitError):
    """Raised when a `jit` command cannot do what it was asked; exit_code says why."""

    exit_code = 1


class ApiError(CliError):
    """Raised when the service answers with an HTTP error status.

    ``status`` is the HTTP status; ``error``, ``detail`` and ``field`` come from the
    JSON error body when it had one.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        detail: str = "",
        error: str | None = None,
        field: str | None = None,
    ):
        self.status = status
        self.detail = detail
        self.error = error
        self.field = field
        super().__init__(message)


class ServiceUnreachable(CliError):
    """Raised when the service cannot be reached (DNS, refused, TLS, timeout, 502-504)."""

    exit_code = 3


def clean(text: Any, limit: int = MAX_MESSAGE) -> str:
    """Make network text safe for one terminal line: printable, no newlines, bounded."""
    s = "".join(ch if ch.isprintable() else " " for ch in str(text))
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _error_message(resp: requests.Response) -> ApiError:
    status = resp.status_code
    error = field = None
    detail: Any = None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error") if isinstance(body.get("error"), str) else None
        field = body.get("field") if isinstance(body.get("field"), str) else None
        detail = body.get("detail")
        if isinstance(detail, list):
            # FastAPI's own validation shape: [{"loc": [...], "msg": "..."}]
            parts = []
            for item in detail[:3]:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                    parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg")))
            detail = "; ".join(parts) or None
    text = clean(detail) if detail else clean(error or resp.reason or "")
    if not text:
        text = "request failed"
    if status == 401 and error == "token_expired":
        # The service's words are not needed: this is the one thing to do.
        return ApiError(
            status, "your session expired, run jit login", detail=text, error="token_expired"
        )
    hint = " (run `jit login`)" if status == 401 else ""
    return ApiError(
        status,
        f"{text}{hint} (HTTP {status})",
        detail=text,
        error=clean(error) if error else None,
        field=field,
    )


class Client:
    """One session against the service at ``url``, authenticated with ``token``."""

    def __init__(self, url: str, token: str | None = None, ca_file: str | None = None):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        # Don't let ~/.netrc or proxy settings add or replace our Authorization.
        self.session.trust_env = False
        self.session.headers["User-Agent"] = "jit-cli"
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.verify: bool | str = ca_file or True

    def call(self, method: str, path: str, *, body: Any = None, params: Any = None) -> Any:
        """Do one request; return the parsed JSON answer (None for 204)."""
        url = self.url + path
        log.info("%s %s", method, path)
        try:
            resp = self.session.request(
                method,
                url,
                json=body,
                params=params,
                timeout=TIMEOUT,
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as e:
            raise ServiceUnreachable(f"TLS error talking to {self.url}: {_tls_reason(e)}") from None
        except requests.exceptions.Timeout:
            raise ServiceUnreachable(f"service at {self.url} did not answer in time") from None
        except requests.exceptions.InvalidURL:
            raise CliError(f"invalid service URL: {clean(self.url)}") from None
        except requests.exceptions.ConnectionError as e:
            reason = _connection_reason(e)
            raise ServiceUnreachable(f"cannot reach service at {self.url}: {reason}") from None
        except requests.exceptions.RequestException as e:
            raise CliError(f"request to {self.url} failed: {clean(e)}") from None
        except OSError as e:  # requests' own check of verify=PATH: no such CA file
            raise CliError(f"cannot use the CA file: {clean(e)}") from None
        log.info("-> %s", resp.status_code)
        if resp.status_code in (502, 503, 504):
            raise ServiceUnreachable(
                f"service at {self.url} is unavailable (HTTP {resp.status_code})"
            )
        if 300 <= resp.status_code < 400:
            raise CliError(
                f"service at {self.url} answered with a redirect (HTTP {resp.status_code}); "
                "check the URL"
            )
        if resp.status_code >= 400:
            raise _error_message(resp)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise CliError(f"service at {self.url} sent a non-JSON answer") from None

    # -- endpoints (docs/api.md) --------------------------------------------

    def health(self) -> Any:
        return self.call("GET", "/healthz")

    def login(self, username: str, password: str) -> Any:
        return self.call(
            "POST", f"{API_PREFIX}/login", body={"username": username, "password": password}
        )

    def me(self) -> Any:
        return self.call("GET", f"{API_PREFIX}/me")

    def add_key(self, public_key: str) -> Any:
        return self.call("POST", f"{API_PREFIX}/keys", body={"public_key": public_key})

    def list_keys(self) -> list[Any]:
        return _items(self.call("GET", f"{API_PREFIX}/keys"), "keys")

    def remove_key(self, key_id: int) -> None:
        self.call("DELETE", f"{API_PREFIX}/keys/{key_id}")

    def logout(self) -> None:
        """Revoke the token this client calls with."""
        self.call("POST", f"{API_PREFIX}/logout")

    def list_tokens(self) -> list[Any]:
        return _items(self.call("GET", f"{API_PREFIX}/tokens"), "tokens")

    def revoke_token(self, token_id: int) -> None:
        self.call("DELETE", f"{API_PREFIX}/tokens/{token_id}")

    def create_request(self, body: dict[str, Any]) -> Any:
        return self.call("POST", f"{API_PREFIX}/requests", body=body)

    def list_requests(self, scope: str, state: str | None = None) -> list[Any]:
        params = {"scope": scope}
        if state:
            params["state"] = state
        return _items(self.call("GET", f"{API_PREFIX}/requests", params=params), "requests")

    def get_request(self, request_id: int) -> Any:
        return self.call("GET", f"{API_PREFIX}/requests/{request_id}")

    def act(self, request_id: int, action: str, comment: str | None = None) -> Any:
        """approve / deny / revoke / cancel a request."""
        body = {} if comment is None else {"comment": comment}
        return self.call("POST", f"{API_PREFIX}/requests/{request_id}/{action}", body=body)

    def audit(self, *, limit: int | None = None, after_id: int | None = None) -> list[Any]:
        params: dict[str, int] = {}
        if limit is not None:
            params["limit"] = limit
        if after_id is not None:
            params["after_id"] = after_id
        return _items(self.call("GET", f"{API_PREFIX}/audit", params=params), "events")


def _items(answer: Any, key: str) -> list[Any]:
    if not isinstance(answer, dict) or not isinstance(answer.get(key), list):
        raise CliError(f"unexpected answer from the service (no '{key}' list)")
    return answer[key]


def _nested(e: BaseException) -> Iterator[BaseException]:
    """e and the errors inside it: requests nests urllib3's several levels deep."""
    todo: list[object] = [e]
    seen = 0
    while todo and seen < 20:
        cur = todo.pop(0)
        seen += 1
        if isinstance(cur, BaseException):
            yield cur
            todo.extend(x for x in (cur.__cause__, cur.__context__) if x is not None)
            reason = getattr(cur, "reason", None)
            if isinstance(reason, BaseException):
                todo.append(reason)
            todo.extend(a for a in cur.args if isinstance(a, BaseException | tuple))
        elif isinstance(cur, tuple):
            todo.extend(a for a in cur if isinstance(a, BaseException))


def _tls_reason(e: requests.exceptions.SSLError) -> str:
    for cur in _nested(e):
        if isinstance(cur, ssl.SSLCertVerificationError) and cur.verify_message:
            return f"certificate verify failed: {clean(cur.verify_message)}"
        if isinstance(cur, ssl.SSLError) and cur.reason:
            return clean(cur.reason)
    return clean(e, 120)


def _connection_reason(e: requests.exceptions.ConnectionError) -> str:
    # The innermost OSError says it best ("Connection refused").
    for cur in _nested(e):
        if isinstance(cur, http.client.RemoteDisconnected):
            return "the connection was closed without an answer"
        if isinstance(cur, OSError) and cur.strerror:
            return clean(cur.strerror)
    text = str(e).lower()
    if "refused" in text:
        return "connection refused"
    if "resolve" in text or "name or service" in text:
        return "host name not found"
    return clean(e, 120)
