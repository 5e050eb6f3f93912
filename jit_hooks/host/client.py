"""Fail-closed client of the service's hook API (stdlib http.client + ssl only).

Every call tries the configured URLs in order inside ONE total time budget
(monotonic clock). Each URL gets at most ``connect_timeout`` to connect; after
that every read is bounded by what is left of the budget, so a server dripping
one byte a second is cut off when the budget runs out. Redirects are not
followed, bodies over ``protocol.MAX_HOOK_RESPONSE_BYTES`` are refused, and every
failure raises a ServiceError subclass whose ``reason`` is a short code.
"""

from __future__ import annotations

import errno
import http.client
import io
import json
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from jit_hooks import __version__
from jit_hooks.errors import BadResponse, ConfigError, ServiceError, ServiceUnreachable
from jit_hooks.host import answers
from jit_hooks.host.config import HostConfig
from jit_hooks.protocol import (
    HOOK_ACCOUNT,
    HOOK_AUTHORIZED_KEYS,
    HOOK_BREAK_GLASS,
    HOOK_PING,
    HOOK_SESSION,
    MAX_HOOK_RESPONSE_BYTES,
    AccountQuery,
    AuthorizedKeysQuery,
    BreakGlassQuery,
    DecisionAnswer,
    PingAnswer,
    SessionQuery,
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

    def break_glass(self, query: BreakGlassQuery) -> bool:
        return answers.recorded(self.request("POST", HOOK_BREAK_GLASS, query))

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
        for url in self.config.urls:
            if deadline - self._clock() <= 0:
                break
            try:
                answer = self._request_one(url, method, path, payload, token, deadline)
            except ServiceError as e:
                e.url = url
                self.attempts.append((url, e.reason))
                error = e
                continue
            self.attempts.append((url, "ok"))
            return answer
        raise error

    def _request_one(
        self, url: str, method: str, path: str, payload: bytes | None, token: str, deadline: float
    ) -> dict:
        parts = urlsplit(url)
        remaining = deadline - self._clock()
        # Connecting gets connect_timeout at most: a dead address must leave
        # time for the next URL. Reads are bounded by the deadline itself.
        timeout = max(0.001, min(self.config.connect_timeout, remaining))
        conn: _HTTPConnection | _HTTPSConnection
        if parts.scheme == "https":
            try:
                context = ssl.create_default_context(cafile=self.config.ca_file)
            except (OSError, ssl.SSLError) as e:
                reason = getattr(e, "strerror", None) or "not a PEM certificate file"
                raise ConfigError(
                    f"cannot load CA file: {reason}", path=self.config.ca_file
                ) from None
            conn = _HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout, context=context, deadline=deadline
            )
        else:
            conn = _HTTPConnection(parts.hostname, parts.port, timeout=timeout, deadline=deadline)
        conn.clock = self._clock
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "Connection": "close",
        }
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, parts.path.rstrip("/") + path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = _read_body(response)
        except ServiceError:
            raise
        except ssl.SSLCertVerificationError as e:
            raise ServiceUnreachable("tls_verify", e.verify_message or "certificate") from None
        except ssl.SSLError as e:
            raise ServiceUnreachable("tls", e.reason or "handshake failed") from None
        except socket.gaierror:
            raise ServiceUnreachable("dns", f"cannot resolve {parts.hostname}") from None
        except TimeoutError:
            raise ServiceUnreachable("timeout", "no answer within the time budget") from None
        except ConnectionRefusedError:
            raise ServiceUnreachable("refused", "connection refused") from None
        except http.client.HTTPException as e:
            raise ServiceUnreachable("bad_http", type(e).__name__) from None
        except OSError as e:
            code = errno.errorcode.get(e.errno or 0, "network").lower()
            raise ServiceUnreachable(code, "network error") from None
        except ValueError:  # e.g. a port or header value http.client rejects
            raise BadResponse("bad_http", "invalid HTTP") from None
        finally:
            conn.close_socket()
        return _parse_json(response, raw)


def _read_body(response: http.client.HTTPResponse) -> bytes:
    status = response.status
    if 300 <= status < 400:
        raise BadResponse("redirect", f"HTTP {status} (redirects are not followed)")
    if status != 200:
        raise BadResponse(f"http_{status}", f"HTTP {status}")
    length = response.getheader("Content-Length")
    if length is not None:
        if not length.isdigit():
            raise BadResponse("bad_http", "invalid Content-Length")
        if int(length) > MAX_HOOK_RESPONSE_BYTES:
            raise BadResponse("oversize", f"body of {length} bytes")
    raw = response.read(MAX_HOOK_RESPONSE_BYTES + 1)
    if len(raw) > MAX_HOOK_RESPONSE_BYTES:
        raise BadResponse("oversize", f"body over {MAX_HOOK_RESPONSE_BYTES} bytes")
    return raw


def _parse_json(response: http.client.HTTPResponse, raw: bytes) -> dict:
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BadResponse("malformed", "not application/json")
    try:
        answer = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise BadResponse("malformed", "not valid JSON") from None
    if not isinstance(answer, dict):
        raise BadResponse("schema", "expected a JSON object")
    return answer


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class _DeadlineReader(io.RawIOBase):
    """Socket reads that never wait past the deadline, however slowly bytes trickle in."""

    def __init__(self, sock: socket.socket, deadline: float, clock: Callable[[], float]):
        self._sock = sock
        self._deadline = deadline
        self._clock = clock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise TimeoutError("time budget exhausted")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """Just enough of a socket for http.client, with every operation under the deadline."""

    def __init__(self, sock: socket.socket, deadline: float, clock: Callable[[], float]):
        self._sock = sock
        self._deadline = deadline
        self._clock = clock

    def sendall(self, data: bytes) -> None:
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise TimeoutError("time budget exhausted")
        self._sock.settimeout(remaining)
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args, **kwargs) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline, self._clock))

    def close(self) -> None:
        # http.client closes the connection as soon as it has parsed the headers
        # of a "Connection: close" answer and keeps reading the body through the
        # file: the socket itself is closed by HookClient when the call is over.
        pass

    def shutdown(self) -> None:
        self._sock.close()


class _DeadlineMixin(http.client.HTTPConnection):
    clock: Callable[[], float] = time.monotonic
    sock: Any

    def __init__(self, *args, deadline: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    _wrapped: _DeadlineSocket | None = None

    def connect(self) -> None:
        super().connect()
        self.sock = self._wrapped = _DeadlineSocket(self.sock, self._deadline, self.clock)

    def close_socket(self) -> None:
        self.close()
        if self._wrapped is not None:
            self._wrapped.shutdown()


class _HTTPConnection(_DeadlineMixin, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineMixin, http.client.HTTPSConnection):
    pass


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
