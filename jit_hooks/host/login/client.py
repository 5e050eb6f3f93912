"""Fail-closed client of the service's hook API (stdlib only: socket, ssl, json).

Every call tries the configured URLs in order inside ONE total time budget
(monotonic clock). Each URL gets at most ``connect_timeout`` to connect; after
that every read is bounded by what is left of the budget, so a server dripping
one byte a second is cut off when the budget runs out. Redirects are not
followed, bodies over ``protocol.MAX_HOOK_RESPONSE_BYTES`` are refused, and every
failure raises a ServiceError subclass whose ``reason`` is a short code.
"""

from __future__ import annotations

import errno
import json
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from jit_hooks import __version__
from jit_hooks.errors import BadResponse, ConfigError, ServiceError, ServiceUnreachable
from jit_hooks.host.login import answers, transport, trust
from jit_hooks.host.login.config import HostConfig
from jit_hooks.protocol import (
    HOOK_ACCOUNT,
    HOOK_AUTHORIZED_KEYS,
    HOOK_BREAK_GLASS,
    HOOK_PING,
    HOOK_SESSION,
    HOOK_SESSIONS,
    MAX_HOOK_RESPONSE_BYTES,
    AccountQuery,
    AuthorizedKeysQuery,
    BreakGlassQuery,
    DecisionAnswer,
    PingAnswer,
    SessionQuery,
    SessionsAnswer,
)

USER_AGENT = f"jit-hooks/{__version__}"


class HookClient:
    """Calls the hook API with the host token; see the module docstring for the rules.

    ``budget`` overrides ``config.total_timeout`` (e.g. a short one for
    best-effort break-glass reports). ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        config: HostConfig,
        *,
        token: str | None = None,
        budget: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self._token = token
        self.budget = config.total_timeout if budget is None else budget
        self._clock = clock
        self.attempts: list[tuple[str, str]] = []  # (url, outcome) of the last call

    # -- typed endpoints ------------------------------------------------------

    def authorized_keys(self, query: AuthorizedKeysQuery) -> list[object]:
        """Raw key entries for the offered key; check each with answers.check_key."""
        return answers.authorized_keys(self.request("POST", HOOK_AUTHORIZED_KEYS, query))

    def account(self, query: AccountQuery) -> DecisionAnswer:
        return answers.decision(self.request("POST", HOOK_ACCOUNT, query))

    def session(self, query: SessionQuery) -> DecisionAnswer:
        return answers.decision(self.request("POST", HOOK_SESSION, query))

    def open_sessions(self) -> SessionsAnswer:
        """This host's open sessions: those to end now, and the still-valid ones."""
        return answers.sessions(self.request("GET", HOOK_SESSIONS), self.config.host_name)

    def break_glass(self, query: BreakGlassQuery) -> bool:
        asked = {"host": self.config.host_name, "login": query["login"]}
        asked["connection"] = query["connection"]
        asked.update(report_id=query["report_id"], stage=query["stage"])
        return answers.recorded(self.request("POST", HOOK_BREAK_GLASS, query), asked)

    def ping(self) -> PingAnswer:
        return answers.ping(self.request("GET", HOOK_PING))

    # -- transport ------------------------------------------------------------

    def request(self, method: str, path: str, body: object = None) -> dict:
        """One JSON call: each URL in order until one answers 200 with a JSON object."""
        token = self._token or self.config.read_token()
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        deadline = self._clock() + self.budget
        self.attempts = []
        error: ServiceError = ServiceUnreachable("timeout", "no time left to try a URL")
        urls = self.config.urls
        for index, url in enumerate(urls):
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            # A replica that accepts and never answers must not eat the whole
            # budget: each URL gets an equal share of what is left, so the
            # last one still gets at least budget / len(urls).
            attempt_deadline = self._clock() + remaining / (len(urls) - index)
            try:
                answer = self._request_one(url, method, path, payload, token, attempt_deadline)
            except ServiceError as e:
                e.url = url
                self.attempts.append((url, e.reason))
                error = e
                continue
            self.attempts.append((url, "ok"))
            return answer
        raise error

    def _ssl_context(self):  # noqa: ANN202 - ssl.SSLContext; ssl is imported lazily
        return tls_context(self.config.ca_file)

    def _request_one(
        self, url: str, method: str, path: str, payload: bytes | None, token: str, deadline: float
    ) -> dict:
        parts = urlsplit(url)
        https = parts.scheme == "https"
        context = self._ssl_context() if https else None
        remaining = deadline - self._clock()
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }  # the transport adds Connection: close, or keep-alive in jit-hooksd
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = transport.exchange(
                host=parts.hostname or "",
                port=parts.port or (443 if https else 80),
                method=method,
                target=parts.path.rstrip("/") + path,
                headers=headers,
                body=payload,
                # Connecting gets connect_timeout at most: a dead address must
                # leave time for the next URL. Reads are bounded by the deadline.
                connect_timeout=max(0.001, min(self.config.connect_timeout, remaining)),
                deadline=deadline,
                clock=self._clock,
                max_body=MAX_HOOK_RESPONSE_BYTES,
                ssl_context=context,
            )
        except ServiceError:
            raise
        except OSError as e:
            raise _classify(e, parts.hostname) from None
        except ValueError:
            raise BadResponse("bad_http", "invalid HTTP") from None
        return _parse_json(response)


# One SSLContext per CA file content, shared by every client of the process:
# building one costs milliseconds, and the pooled connections of
# transport.enable_keepalive() are keyed by the context object, so clients sharing
# it share connections. A CA file changed on disk gets a new context, and new
# connections.
_CONTEXTS: dict[tuple, object] = {}
# A CA bundle (Debian's ca-certificates.crt is ~200 KB) fits with room to spare.
MAX_CA_BYTES = 1 << 20


def tls_context(ca_file: str | None):  # noqa: ANN201 - ssl.SSLContext; ssl is imported lazily
    """The TLS context for ``ca_file`` (system CAs if None); ConfigError if unusable.

    The CA is read through trust.py's checked descriptor and handed to ssl as data:
    loading it again by path would trust whatever the path names by then.
    """
    pem = None
    if ca_file:
        raw = trust.read_trusted(ca_file, "CA file", MAX_CA_BYTES + 1)
        if len(raw) > MAX_CA_BYTES:
            raise ConfigError(f"CA file is larger than {MAX_CA_BYTES} bytes", path=ca_file)
        if b"-----BEGIN CERTIFICATE-----" not in raw:
            # Also keeps an empty file from meaning "the system CAs" to ssl.
            raise ConfigError("cannot load CA file: not a PEM certificate file", path=ca_file)
        pem = raw.decode("ascii", errors="replace")
    key = (ca_file, pem)
    context = _CONTEXTS.get(key)
    if context is None:
        import ssl  # only https URLs pay for it

        try:
            context = ssl.create_default_context(cadata=pem)
        except (OSError, ssl.SSLError, ValueError):
            raise ConfigError(
                "cannot load CA file: not a PEM certificate file", path=ca_file
            ) from None
        if len(_CONTEXTS) >= 16:  # old versions of rotated CA files
            _CONTEXTS.clear()
        _CONTEXTS[key] = context
    return context


def _classify(e: OSError, hostname: str | None) -> ServiceUnreachable:
    """Map a socket/TLS error to a short reason code."""
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(e, ssl.SSLCertVerificationError):
        return ServiceUnreachable("tls_verify", e.verify_message or "certificate")
    if ssl is not None and isinstance(e, ssl.SSLError):
        return ServiceUnreachable("tls", e.reason or "handshake failed")
    if isinstance(e, socket.gaierror):
        return ServiceUnreachable("dns", f"cannot resolve {hostname}")
    if isinstance(e, TimeoutError):
        return ServiceUnreachable("timeout", "no answer within the time budget")
    if isinstance(e, ConnectionRefusedError):
        return ServiceUnreachable("refused", "connection refused")
    code = errno.errorcode.get(e.errno or 0, "network").lower()
    return ServiceUnreachable(code, "network error")


def _parse_json(response: transport.Response) -> dict:
    status = response.status
    if 300 <= status < 400:
        raise BadResponse("redirect", f"HTTP {status} (redirects are not followed)")
    if status != 200:
        raise BadResponse(f"http_{status}", f"HTTP {status}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BadResponse("malformed", "not application/json")
    try:
        answer = json.loads(response.body.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise BadResponse("malformed", "not valid JSON") from None
    if not isinstance(answer, dict):
        raise BadResponse("schema", "expected a JSON object")
    return answer


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class _Expired(Exception):
    pass


@contextmanager
def hard_deadline(seconds: float) -> Iterator[None]:
    """Raise ServiceUnreachable('timeout') in the main thread after ``seconds``.

    The client's own deadline bounds connects and reads; this backstop also
    bounds what happens inside a TLS handshake. Use it in hook processes only.
    """

    def expire(signum, frame):
        raise _Expired()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Expired:
        raise ServiceUnreachable("timeout", "hard deadline reached") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
