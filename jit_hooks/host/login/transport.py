"""HTTP/1.1 for the hooks: one request and its response per call.

Two ways, one interface (``exchange``):

* A hook process (the no-helper fallback) makes one call and exits. Importing
  http.client and the email package it parses headers with would cost it ~15 ms
  (bench P2), so this module holds a minimal reader: one request with
  ``Connection: close``, the answer parsed strictly (never more lenient than
  http.client; a hypothesis test checks it against http.client), every read under
  the caller's deadline so a 1-byte/s drip is cut off, sizes bounded. ``ssl`` is
  only imported for https URLs.
* jit-hooksd, long-running, calls ``enable_keepalive()`` once: from then on the
  exchanges go to httppool.py, pooled keep-alive connections of the standard
  library's http.client, with a hard deadline per exchange.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from jit_hooks.errors import BadResponse, ServiceUnreachable

if TYPE_CHECKING:
    from jit_hooks.host.login.httppool import Pool

MAX_LINE = 8192
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100


class Response:
    """Status and headers (names lower-cased); ``body`` is read only for status 200."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body


class _DeadlineReader(io.RawIOBase):
    """Socket reads that never wait past the deadline, however slowly bytes trickle in."""

    def __init__(self, sock: socket.socket, deadline: float, clock: Callable[[], float]):
        self._sock = sock
        self._deadline = deadline
        self._clock = clock

    def readable(self) -> bool:
        return True

    def remaining(self) -> float:
        """Seconds left before the deadline; TimeoutError if none."""
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise TimeoutError("time budget exhausted")
        return remaining

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        self._sock.settimeout(self.remaining())
        return self._sock.recv_into(buffer)


def exchange(
    *,
    host: str,
    port: int,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes | None,
    connect_timeout: float,
    deadline: float,
    clock: Callable[[], float],
    max_body: int,
    ssl_context=None,  # noqa: ANN001 - ssl.SSLContext, typed loosely to keep ssl unimported
) -> Response:
    """Connect (within ``connect_timeout``), send, read the answer (by ``deadline``).

    ``headers`` must not contain ``Connection``: the transport sets it. Once
    ``enable_keepalive()`` was called, the exchange goes to the pool of
    httppool.py instead (same arguments, same errors).

    Raises OSError subclasses (refused, DNS, TLS, timeout...) for the caller to
    classify, ServiceUnreachable('bad_http') if the server closes without a
    status line, BadResponse('bad_http' / 'oversize') for a malformed or too
    large answer.
    """
    pool = _pool
    if pool is not None:
        return pool.exchange(
            host=host, port=port, method=method, target=target, headers=headers, body=body,
            connect_timeout=connect_timeout, deadline=deadline, clock=clock,
            max_body=max_body, ssl_context=ssl_context,
        )  # fmt: skip
    request = _request(method, target, host, port, headers, body)
    sock = _connect(host, port, connect_timeout, deadline, clock, ssl_context)
    try:
        sock.settimeout(max(0.001, deadline - clock()))
        sock.sendall(request)
        reader = io.BufferedReader(_DeadlineReader(sock, deadline, clock))
        return read_response(reader, max_body)
    finally:
        sock.close()


def _connect(
    host: str,
    port: int,
    connect_timeout: float,
    deadline: float,
    clock: Callable[[], float],
    ssl_context,  # noqa: ANN001 - ssl.SSLContext or None
) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=connect_timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock.settimeout(max(0.001, deadline - clock()))
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise
    return sock


def _request(
    method: str,
    target: str,
    host: str,
    port: int,
    headers: dict[str, str],
    body: bytes | None,
) -> bytes:
    host_header = f"[{host}]" if ":" in host else host
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("Connection: close")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    if any(c in line for line in lines for c in "\r\n\x00"):
        raise ValueError("header injection")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (body or b"")


def read_response(reader: io.BufferedIOBase, max_body: int) -> Response:
    """Parse one answer strictly; the body is read only for status 200.

    Never more lenient than http.client (tests/host/test_transport.py checks it
    against http.client with hypothesis): CRLF line ends only, ``HTTP/1.0`` or
    ``HTTP/1.1`` only, no interim (1xx) answers, RFC 9110 header names and no
    control characters in values, one Content-Length or ``chunked`` (not both),
    else the body runs to the close.
    """
    line = _line(reader)
    if not line:
        raise ServiceUnreachable("bad_http", "connection closed without an answer")
    parts = line[:-2].split(b" ", 2)
    if len(parts) < 2 or parts[0] not in _VERSIONS or not _is_status(parts[1]):
        raise BadResponse("bad_http", "malformed status line")
    status = int(parts[1])
    if status < 200:
        raise BadResponse("bad_http", "interim answer")
    headers, lengths = _read_headers(reader)
    if status != 200:
        return Response(status, headers, b"")
    return Response(status, headers, _read_body(reader, headers, lengths, max_body))


_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _line(reader: io.BufferedIOBase) -> bytes:
    """One CRLF-terminated line, b"" at a clean EOF; BadResponse otherwise."""
    line = reader.readline(MAX_LINE + 1)
    if not line:
        return b""
    if len(line) > MAX_LINE:
        raise BadResponse("bad_http", "line too long")
    if not line.endswith(b"\r\n") or b"\r" in line[:-2] or b"\n" in line[:-2]:
        raise BadResponse("bad_http", "line not ended by CRLF")
    return line


def _is_status(token: bytes) -> bool:
    return len(token) == 3 and token.isdigit()


def _read_headers(reader: io.BufferedIOBase) -> tuple[dict[str, str], list[str]]:
    """(headers with lower-cased names, duplicates joined by ", "; every Content-Length)."""
    headers: dict[str, str] = {}
    lengths: list[str] = []
    total = count = 0
    while True:
        line = _line(reader)
        if not line:
            raise BadResponse("bad_http", "connection closed inside the headers")
        if line == b"\r\n":
            return headers, lengths
        total += len(line)
        count += 1
        if total > MAX_HEADER_BYTES or count > MAX_HEADERS:
            raise BadResponse("bad_http", "headers too large")
        name, sep, value = line[:-2].partition(b":")
        if not sep or not name or not _TCHAR.issuperset(name):
            raise BadResponse("bad_http", "malformed header line")
        key = name.decode("ascii").lower()
        value = value.lstrip(b" \t")
        if key == "transfer-encoding" and value != value.rstrip(b" \t"):
            # http.client keeps trailing blanks there: "chunked " is not chunked to it
            raise BadResponse("bad_http", "blanks after the transfer-encoding")
        value = value.rstrip(b" \t")
        if any(c < 0x20 and c != 0x09 or c == 0x7F for c in value):
            raise BadResponse("bad_http", "control character in a header")
        text = value.decode("latin-1")
        if key == "content-length":
            lengths.append(text)
        headers[key] = f"{headers[key]}, {text}" if key in headers else text


def _read_body(
    reader: io.BufferedIOBase, headers: dict[str, str], lengths: list[str], max_body: int
) -> bytes:
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower() != "chunked" or lengths:
            raise BadResponse("bad_http", "unsupported or ambiguous transfer-encoding")
        return _read_chunked(reader, max_body)
    if lengths:
        length = lengths[0]
        if len(lengths) != 1 or not (length.isascii() and length.isdigit()):
            raise BadResponse("bad_http", "invalid Content-Length")
        size = int(length)
        if size > max_body:
            raise BadResponse("oversize", f"body of {size} bytes")
        data = reader.read(size)
        if len(data) != size:
            raise BadResponse("bad_http", "body shorter than its Content-Length")
        return data
    data = reader.read(max_body + 1)  # no length: the body ends when the server closes
    if len(data) > max_body:
        raise BadResponse("oversize", f"body over {max_body} bytes")
    return data


def _read_chunked(reader: io.BufferedIOBase, max_body: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_field = _line(reader)[:-2].split(b";", 1)[0].strip(b" \t")
        if not size_field or len(size_field) > 8 or not _HEX.issuperset(size_field):
            raise BadResponse("bad_http", "malformed chunk size")
        size = int(size_field, 16)
        if size == 0:
            while (trailer := _line(reader)) != b"\r\n":
                if not trailer:
                    raise BadResponse("bad_http", "connection closed inside the trailers")
            return b"".join(chunks)
        total += size
        if total > max_body:
            raise BadResponse("oversize", f"body over {max_body} bytes")
        data = reader.read(size)
        if len(data) != size or _line(reader) != b"\r\n":
            raise BadResponse("bad_http", "malformed chunk")
        chunks.append(data)


# -- connection reuse (jit-hooksd only) ------------------------------------------

_pool: Pool | None = None


def enable_keepalive(max_idle_per_origin: int = 8, idle_seconds: float = 4.0) -> None:
    """From now on, exchanges go to a keep-alive pool of http.client connections
    (httppool.py), process-wide: a long-running daemon calls this once.

    At most ``max_idle_per_origin`` idle connections are kept per (host, port,
    TLS context); one idle for ``idle_seconds`` or more is closed instead of
    reused. The default stays under uvicorn's 5 s keep-alive timeout, so the
    service rarely closes a connection we are about to use. Calling it again
    replaces the pool (its idle connections are closed).
    """
    global _pool
    if not (isinstance(max_idle_per_origin, int) and max_idle_per_origin >= 1):
        raise ValueError("max_idle_per_origin must be a positive integer")
    if not idle_seconds > 0:
        raise ValueError("idle_seconds must be positive")
    from jit_hooks.host.login.httppool import Pool

    old, _pool = _pool, Pool(max_idle_per_origin, float(idle_seconds))
    if old is not None:
        old.close()


def disable_keepalive() -> None:
    """Back to one connection per exchange; idle pooled connections are closed."""
    global _pool
    old, _pool = _pool, None
    if old is not None:
        old.close()


def keepalive_stats() -> dict[str, int] | None:
    """Counters of the pool (None when keep-alive is off): connections opened, reused,
    retried after a stale reuse, and currently idle."""
    pool = _pool
    return None if pool is None else pool.stats()
