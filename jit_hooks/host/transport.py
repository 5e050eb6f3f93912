"""One HTTP/1.1 exchange for the hooks: a request, its response, then the socket is closed.

Why not http.client: importing it (and the email package it parses headers
with) costs about 15 ms per hook process, half a hook's start-up budget (bench
P2), for one POST with a small JSON answer. This covers exactly what the hooks
need: ``Connection: close``, Content-Length, chunked or read-to-close bodies,
bounded header and body sizes, and every read under the caller's deadline so a
1-byte/s drip is cut off. ``ssl`` is only imported for https URLs.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable

from jit_hooks.errors import BadResponse, ServiceUnreachable

MAX_LINE = 8192
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
_INTERIM_LIMIT = 5  # 1xx answers skipped before giving up
_HEX = b"0123456789abcdefABCDEF"


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

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise TimeoutError("time budget exhausted")
        self._sock.settimeout(remaining)
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

    Raises OSError subclasses (refused, DNS, TLS, timeout...) for the caller to
    classify, ServiceUnreachable('bad_http') if the server closes without a
    status line, BadResponse('bad_http' / 'oversize') for a malformed or too
    large answer.
    """
    sock = socket.create_connection((host, port), timeout=connect_timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock.settimeout(max(0.001, deadline - clock()))
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        remaining = deadline - clock()
        if remaining <= 0:
            raise TimeoutError("time budget exhausted")
        sock.settimeout(remaining)
        sock.sendall(_request(method, target, host, port, headers, body))
        reader = io.BufferedReader(_DeadlineReader(sock, deadline, clock))
        status, response_headers = _read_head(reader)
        data = _read_body(reader, response_headers, max_body) if status == 200 else b""
        return Response(status, response_headers, data)
    finally:
        sock.close()


def _request(
    method: str, target: str, host: str, port: int, headers: dict[str, str], body: bytes | None
) -> bytes:
    host_header = f"[{host}]" if ":" in host else host
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    if any(c in line for line in lines for c in "\r\n\x00"):
        raise ValueError("header injection")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (body or b"")


def _line(reader: io.BufferedIOBase) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadResponse("bad_http", "header line too long")
    return line


def _read_head(reader: io.BufferedIOBase) -> tuple[int, dict[str, str]]:
    for _ in range(_INTERIM_LIMIT):
        line = _line(reader)
        if not line:
            raise ServiceUnreachable("bad_http", "connection closed without an answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not _is_status(parts[1]):
            raise BadResponse("bad_http", "malformed status line")
        status = int(parts[1])
        headers = _read_headers(reader)
        if not 100 <= status < 200:
            return status, headers
    raise BadResponse("bad_http", "too many interim answers")


def _is_status(token: bytes) -> bool:
    return len(token) == 3 and token.isdigit()


def _read_headers(reader: io.BufferedIOBase) -> dict[str, str]:
    headers: dict[str, str] = {}
    total = 0
    while True:
        line = _line(reader)
        total += len(line)
        if total > MAX_HEADER_BYTES or len(headers) > MAX_HEADERS:
            raise BadResponse("bad_http", "headers too large")
        if line in (b"\r\n", b"\n"):
            return headers
        if not line.endswith(b"\n"):
            raise BadResponse("bad_http", "connection closed inside the headers")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise BadResponse("bad_http", "malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value


def _read_body(reader: io.BufferedIOBase, headers: dict[str, str], max_body: int) -> bytes:
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower() != "chunked":
            raise BadResponse("bad_http", "unsupported transfer-encoding")
        return _read_chunked(reader, max_body)
    length = headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
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
        size_field = _line(reader).split(b";", 1)[0].strip()
        if not size_field or len(size_field) > 8 or size_field.strip(_HEX):
            raise BadResponse("bad_http", "malformed chunk size")
        size = int(size_field, 16)
        if size == 0:
            _read_headers(reader)  # trailers
            return b"".join(chunks)
        total += size
        if total > max_body:
            raise BadResponse("oversize", f"body over {max_body} bytes")
        data = reader.read(size)
        if len(data) != size or _line(reader) not in (b"\r\n", b"\n"):
            raise BadResponse("bad_http", "malformed chunk")
        chunks.append(data)
