"""HTTP/1.1 exchanges for the hooks: one request and its response per call.

Why not http.client: importing it (and the email package it parses headers
with) costs about 15 ms per hook process, half a hook's start-up budget (bench
P2), for one POST with a small JSON answer. This covers exactly what the hooks
need: Content-Length, chunked or read-to-close bodies, bounded header and body
sizes, and every read under the caller's deadline so a 1-byte/s drip is cut
off. ``ssl`` is only imported for https URLs.

By default every exchange sends ``Connection: close`` and closes its socket (a
hook process makes one call). A long-running process (jit-hooksd) calls
``enable_keepalive()`` once: then idle connections are kept in a process-wide,
thread-safe pool per origin and TLS context and reused, which saves a TCP and
TLS handshake per call on both ends.
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
    """Socket reads that never wait past the deadline, however slowly bytes trickle in.

    ``tell()`` is the number of bytes received: the BufferedReader on top derives
    from it how many it holds unconsumed (a pooled connection must hold none).
    """

    def __init__(self, sock: socket.socket, deadline: float, clock: Callable[[], float]):
        self._sock = sock
        self._deadline = deadline
        self._clock = clock
        self.received = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.received

    def remaining(self) -> float:
        """Seconds left before the deadline; TimeoutError if none."""
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise TimeoutError("time budget exhausted")
        return remaining

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        self._sock.settimeout(self.remaining())
        n = self._sock.recv_into(buffer)
        self.received += n
        return n


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

    ``headers`` must not contain ``Connection``: the transport sets it. With
    keep-alive enabled an idle pooled connection to the same (host, port,
    ssl_context) is used first; one that turns out stale is replaced once by a
    fresh connection (see _stale).

    Raises OSError subclasses (refused, DNS, TLS, timeout...) for the caller to
    classify, ServiceUnreachable('bad_http') if the server closes without a
    status line, BadResponse('bad_http' / 'oversize') for a malformed or too
    large answer.
    """
    pool = _pool
    request = _request(method, target, host, port, headers, body, keep_alive=pool is not None)
    if pool is None:
        sock = _connect(host, port, connect_timeout, deadline, clock, ssl_context)
        try:
            return _roundtrip(sock, request, _DeadlineReader(sock, deadline, clock), max_body)[0]
        finally:
            sock.close()

    key = (host, port, ssl_context)  # the context object stands for the TLS settings
    idle = pool.get(key)
    if idle is not None:
        raw = _DeadlineReader(idle, deadline, clock)
        try:
            response, reusable = _roundtrip(idle, request, raw, max_body)
        except BaseException as e:
            idle.close()
            if not _stale(e, raw):
                raise
            pool.count("retried")
        else:
            pool.release(key, idle, reusable)
            return response
    remaining = deadline - clock()
    if remaining <= 0:
        raise TimeoutError("time budget exhausted")
    sock = _connect(host, port, min(connect_timeout, remaining), deadline, clock, ssl_context)
    pool.count("opened")
    raw = _DeadlineReader(sock, deadline, clock)
    try:
        response, reusable = _roundtrip(sock, request, raw, max_body)
    except BaseException:
        sock.close()
        raise
    pool.release(key, sock, reusable)
    return response


def _stale(error: BaseException, raw: _DeadlineReader) -> bool:
    """True if a REUSED connection failed in a way that allows one retry on a fresh one.

    Only a failure before the first byte of the answer (send error, reset, EOF):
    that is a server closing an idle connection (uvicorn after 5 s idle, a
    restart) as our request went out, so it never read the request. Retrying is
    safe even if it did read it and then died: the hook calls are checks, so the
    worst case is one extra audited 'check' event, never a wrong decision; a fresh
    connection failing like that already fails over to the next URL today. Once a
    byte of the answer arrived, or the budget ran out, nothing is retried.
    """
    if raw.received:
        return False
    if isinstance(error, ServiceUnreachable):  # closed without a status line
        return error.reason == "bad_http"
    return isinstance(error, OSError) and not isinstance(error, TimeoutError)


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


def _roundtrip(
    sock: socket.socket, request: bytes, raw: _DeadlineReader, max_body: int
) -> tuple[Response, bool]:
    """Send ``request``, read the answer: (response, whether the connection can be reused)."""
    sock.settimeout(raw.remaining())  # a pooled socket too: its timeouts are per request
    sock.sendall(request)
    reader = io.BufferedReader(raw)
    version, status, response_headers = _read_head(reader)
    if status != 200:
        return Response(status, response_headers, b""), False  # body left unread
    data = _read_body(reader, response_headers, max_body)
    reusable = (
        version == b"HTTP/1.1"
        # framed (read-to-close is not), and not both: that smells of smuggling
        and ("content-length" in response_headers) != ("transfer-encoding" in response_headers)
        and "close" not in _tokens(response_headers.get("connection", ""))
        and reader.tell() == raw.received  # nothing read past the answer
    )
    return Response(status, response_headers, data), reusable


def _tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",")]


def _request(
    method: str,
    target: str,
    host: str,
    port: int,
    headers: dict[str, str],
    body: bytes | None,
    *,
    keep_alive: bool = False,
) -> bytes:
    host_header = f"[{host}]" if ":" in host else host
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
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


def _read_head(reader: io.BufferedIOBase) -> tuple[bytes, int, dict[str, str]]:
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
            return parts[0], status, headers
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


# -- connection reuse (jit-hooksd only) ------------------------------------------

_pool: _Pool | None = None


def enable_keepalive(max_idle_per_origin: int = 8, idle_seconds: float = 4.0) -> None:
    """Reuse connections from now on, process-wide (a long-running daemon calls this once).

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
    old, _pool = _pool, _Pool(max_idle_per_origin, float(idle_seconds))
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


class _Pool:
    """Idle connections per key, newest last; every method is thread-safe."""

    def __init__(self, max_idle: int, idle_seconds: float):
        import threading
        import time

        self._lock = threading.Lock()
        self._now = time.monotonic  # idle ages, whatever clock the callers use
        self._max_idle = max_idle
        self._idle_seconds = idle_seconds
        self._idle: dict[tuple, list[tuple[float, socket.socket]]] = {}
        self._counts = {"opened": 0, "reused": 0, "retried": 0}
        self._closed = False

    def get(self, key: tuple) -> socket.socket | None:
        """An idle connection for ``key`` that still looks usable, or None."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                since, sock = idle.pop()  # the newest: least likely closed by the server
            if self._now() - since < self._idle_seconds and _looks_open(sock):
                self.count("reused")
                return sock
            sock.close()

    def release(self, key: tuple, sock: socket.socket, reusable: bool) -> None:
        """Keep ``sock`` for reuse if ``reusable`` (its answer fully read), else close it."""
        drop: list[socket.socket] = []
        with self._lock:
            if not reusable or self._closed:
                drop.append(sock)
            else:
                now = self._now()
                idle = self._idle.setdefault(key, [])
                idle.append((now, sock))
                if len(idle) > self._max_idle:
                    drop.append(idle.pop(0)[1])
                # Sweep every key: connections to a URL no longer used go too.
                for k in list(self._idle):
                    kept = [e for e in self._idle[k] if now - e[0] < self._idle_seconds]
                    drop += [s for since, s in self._idle[k] if now - since >= self._idle_seconds]
                    if kept:
                        self._idle[k] = kept
                    else:
                        del self._idle[k]
        for s in drop:
            s.close()

    def count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "idle": sum(len(v) for v in self._idle.values())}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            drop = [s for idle in self._idle.values() for _since, s in idle]
            self._idle.clear()
        for s in drop:
            s.close()


def _looks_open(sock: socket.socket) -> bool:
    """False if an idle connection has anything to read: EOF, a reset, a TLS alert or
    stray bytes all mean it is not safe to send the next request on it."""
    pending = getattr(sock, "pending", None)  # an SSLSocket's
    if pending is not None and pending():
        return False  # decrypted bytes nobody asked for
    try:
        sock.settimeout(0)  # a peek that never waits
        # The raw socket's recv, also on an SSLSocket: any TLS record there is unexpected.
        socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False
