"""Keep-alive HTTP for jit-hooksd: pooled ``http.client`` connections, hard deadlines.

The resident helper imports this once (through ``transport.enable_keepalive``),
so it pays nothing per login for a well-kept HTTP/1.1 parser. What stays ours:

* A pool of idle connections per (host, port, TLS context), reused while young
  (under uvicorn's 5 s keep-alive) and checked for EOF or stray bytes first. A
  reused connection that fails before answering anything (the server closed it as
  the request went out) is replaced once by a fresh one.
* A hard deadline per exchange that a drip or hang cannot stretch: http.client
  only has per-read timeouts, so one reaper thread shuts each exchange's socket
  down when its deadline passes (the TLS handshake included), and the read fails.
  The helper's watchdog (daemon.Run) also gets the socket (``watching``) and
  shuts it when it answers for the body.
* The rules the hook client relies on: no redirects followed (http.client never
  follows), bodies over ``max_body`` refused, only ``chunked`` or Content-Length
  framing (one, valid) accepted, errors raised as transport.exchange raises them.
"""

from __future__ import annotations

import heapq
import http.client
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from jit_hooks.errors import BadResponse, ServiceUnreachable
from jit_hooks.host.login.transport import Response


class Cuttable(Protocol):
    def cut(self) -> None: ...


class Watch(Protocol):
    """Who else may cut an exchange's connection (daemon.Run, the helper's watchdog)."""

    def attach(self, conn: Cuttable) -> None: ...

    def detach(self, conn: Cuttable) -> None: ...


_local = threading.local()


@contextmanager
def watching(watch: Watch) -> Iterator[None]:
    """Exchanges made by this thread inside the block hand their sockets to ``watch``."""
    _local.watch = watch
    try:
        yield
    finally:
        _local.watch = None


class _Cut:
    __slots__ = ("deadline", "conn", "fired", "done")

    def __init__(self, deadline: float, conn: Cuttable):
        self.deadline, self.conn, self.fired, self.done = deadline, conn, False, False

    def __lt__(self, other: _Cut) -> bool:
        return self.deadline < other.deadline


class _Reaper:
    """One thread that shuts sockets whose exchange deadline passed (monotonic clock)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[_Cut] = []
        self._thread: threading.Thread | None = None

    def add(self, deadline: float, conn: Cuttable) -> _Cut:
        cut = _Cut(deadline, conn)
        with self._cond:
            heapq.heappush(self._heap, cut)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="http-reaper")
                self._thread.start()
            if self._heap[0] is cut:
                self._cond.notify()
        return cut

    def remove(self, cut: _Cut) -> None:
        with self._cond:
            cut.done = True  # popped lazily

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0].deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                cut = heapq.heappop(self._heap)
                cut.fired = True
                cut.conn.cut()


_reaper = _Reaper()


class _CountingReader(io.RawIOBase):
    """The socket's reads, counted: ``tell()`` is the number of bytes received, so the
    BufferedReader on top knows how many it holds unconsumed."""

    def __init__(self, sock: socket.socket):
        # makefile, as http.client does: the socket's fd stays open while this reads,
        # even after the connection object closed its socket (Connection: close).
        self._raw = sock.makefile("rb", buffering=0)
        self.received = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.received

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        n = self._raw.readinto(buffer) or 0
        self.received += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Response(http.client.HTTPResponse):
    """http.client's response over a counting reader: ``received`` tells whether any
    byte of the answer arrived, ``unread`` how many arrived past its end."""

    def __init__(self, sock: socket.socket, *args, **kwargs):  # noqa: ANN002, ANN003
        super().__init__(sock, *args, **kwargs)
        self.counter = _CountingReader(sock)
        self.fp = io.BufferedReader(self.counter)
        self.unread = 0

    def _close_conn(self) -> None:
        fp = self.fp
        if fp is not None:
            self.unread = self.counter.received - fp.tell()
        super()._close_conn()  # type: ignore[misc]


class _Connection(http.client.HTTPConnection):
    """An HTTPConnection that does its TLS handshake itself (``ssl_context`` None:
    plain TCP), on a socket already in ``self.sock``, so that ``cut`` (the reaper's,
    the watchdog's) also ends a handshake in progress."""

    def __init__(self, host: str, port: int, ssl_context, timeout: float):  # noqa: ANN001
        super().__init__(host, port, timeout=timeout)
        self.ssl_context = ssl_context
        self.handshaken = ssl_context is None
        self.response: _Response | None = None  # the last one, even if begin() failed
        self.response_class = self._new_response  # type: ignore[assignment]

    def _new_response(self, sock: socket.socket, *args, **kwargs) -> _Response:  # noqa: ANN002, ANN003
        self.response = _Response(sock, *args, **kwargs)
        return self.response

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock

    def start_tls(self) -> None:
        if not self.handshaken:
            self.sock = self.ssl_context.wrap_socket(
                self.sock, server_hostname=self.host, do_handshake_on_connect=False
            )
            self.sock.do_handshake()
            self.handshaken = True

    def cut(self) -> None:
        """Shut both directions of the socket (from any thread): its reads fail at once.
        The plain socket's shutdown, also on an SSLSocket, whose own would drop its TLS
        state under the reading thread."""
        sock = self.sock
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass


class Pool:
    """Idle connections per key, newest last; thread-safe. ``exchange`` has the
    signature and the errors of transport.exchange."""

    def __init__(self, max_idle: int = 8, idle_seconds: float = 4.0):
        self._lock = threading.Lock()
        self._max_idle = max_idle
        self._idle_seconds = idle_seconds
        self._idle: dict[tuple, list[tuple[float, _Connection]]] = {}
        self._counts = {"opened": 0, "reused": 0, "retried": 0}
        self._closed = False

    def exchange(
        self,
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
        ssl_context=None,  # noqa: ANN001 - ssl.SSLContext or None
    ) -> Response:
        headers = {**headers, "Connection": "keep-alive"}
        if any(c in f"{k}{v}{target}" for k, v in headers.items() for c in "\r\n\x00"):
            raise ValueError("header injection")
        key = (host, port, ssl_context)  # the context object stands for the TLS settings
        conn = self._get(key)
        if conn is not None:
            try:
                return self._roundtrip(conn, key, method, target, headers, body, deadline,
                                       clock, max_body, reused=True)  # fmt: skip
            except _Stale:
                self.count("retried")
        remaining = deadline - clock()
        if remaining <= 0:
            raise TimeoutError("time budget exhausted")
        conn = _Connection(host, port, ssl_context, min(connect_timeout, remaining))
        conn.connect()  # connect_timeout bounds it (it is at most what is left)
        self.count("opened")
        return self._roundtrip(conn, key, method, target, headers, body, deadline, clock,
                               max_body, reused=False)  # fmt: skip

    def _roundtrip(
        self,
        conn: _Connection,
        key: tuple,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
        deadline: float,
        clock: Callable[[], float],
        max_body: int,
        *,
        reused: bool,
    ) -> Response:
        watch: Watch | None = getattr(_local, "watch", None)
        cut = _reaper.add(monotonic_deadline(deadline, clock), conn)
        keep = False
        conn.response = None
        try:
            if watch is not None:
                watch.attach(conn)
            if conn.sock is None:
                raise OSError("connection closed")
            conn.sock.settimeout(max(0.001, deadline - clock()))
            conn.start_tls()
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            assert isinstance(response, _Response)
            result, keep = _read(response, max_body)
            return result
        except BaseException as e:
            if cut.fired:
                raise TimeoutError("time budget exhausted") from None
            if reused and _stale(e, conn.response):
                raise _Stale() from None
            raise _translate(e) from None
        finally:
            _reaper.remove(cut)
            if watch is not None:
                watch.detach(conn)
            if keep and not cut.fired:
                self._release(key, conn)
            else:
                conn.close()

    def _get(self, key: tuple) -> _Connection | None:
        """An idle connection for ``key`` that still looks usable, or None."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                since, conn = idle.pop()  # the newest: least likely closed by the server
            if time.monotonic() - since < self._idle_seconds and _looks_open(conn):
                self.count("reused")
                return conn
            conn.close()

    def _release(self, key: tuple, conn: _Connection) -> None:
        drop: list[_Connection] = []
        with self._lock:
            if self._closed:
                drop.append(conn)
            else:
                now = time.monotonic()
                idle = self._idle.setdefault(key, [])
                idle.append((now, conn))
                if len(idle) > self._max_idle:
                    drop.append(idle.pop(0)[1])
                # Sweep every key: connections to a URL no longer used go too.
                for k in list(self._idle):
                    kept = [e for e in self._idle[k] if now - e[0] < self._idle_seconds]
                    drop += [c for since, c in self._idle[k] if now - since >= self._idle_seconds]
                    if kept:
                        self._idle[k] = kept
                    else:
                        del self._idle[k]
        for c in drop:
            c.close()

    def count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "idle": sum(len(v) for v in self._idle.values())}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            drop = [c for idle in self._idle.values() for _since, c in idle]
            self._idle.clear()
        for c in drop:
            c.close()


def monotonic_deadline(deadline: float, clock: Callable[[], float]) -> float:
    """``deadline`` on ``clock`` as a time.monotonic() value (the reaper's clock)."""
    return time.monotonic() + (deadline - clock())


class _Stale(Exception):
    """A reused connection failed before the server answered anything: retry once."""


def _stale(error: BaseException, response: _Response | None) -> bool:
    """True if a REUSED connection failed in a way that allows one retry on a fresh one.

    Only a failure before the first byte of the answer (send error, reset, EOF):
    that is a server closing an idle connection (uvicorn after 5 s idle, a
    restart) as our request went out, so it never read the request. Retrying is
    safe even if it did read it and then died: the hook calls are checks, so the
    worst case is one extra audited 'check' event, never a wrong decision. Once a
    byte of the answer arrived, or the budget ran out, nothing is retried.
    """
    if response is not None and response.counter.received:
        return False
    return isinstance(error, OSError) and not isinstance(error, TimeoutError)


def _translate(error: BaseException) -> BaseException:
    """http.client's errors as transport.exchange raises them."""
    if isinstance(error, http.client.RemoteDisconnected):
        return ServiceUnreachable("bad_http", "connection closed without an answer")
    if isinstance(error, http.client.HTTPException):
        return BadResponse("bad_http", type(error).__name__)
    return error  # OSError (refused, TLS, timeout...), ServiceError, ValueError


def _read(response: _Response, max_body: int) -> tuple[Response, bool]:
    """(the response, whether its connection may be reused); the body only for 200."""
    headers: dict[str, str] = {}
    for name, value in response.getheaders():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if response.msg.defects:  # e.g. a line that is no header: the parser gave up there
        raise BadResponse("bad_http", "malformed header line")
    if response.status != 200:
        return Response(response.status, headers, b""), False  # body left unread
    encoding = headers.get("transfer-encoding")
    lengths = response.msg.get_all("content-length") or []
    if encoding is not None:
        if encoding.lower() != "chunked" or lengths:  # both: that smells of smuggling
            raise BadResponse("bad_http", "unsupported or ambiguous framing")
    elif lengths:
        if len(lengths) != 1 or not (lengths[0].isascii() and lengths[0].isdigit()):
            raise BadResponse("bad_http", "invalid Content-Length")
        if int(lengths[0]) > max_body:
            raise BadResponse("oversize", f"body of {lengths[0]} bytes")
    data = response.read(max_body + 1)
    if len(data) > max_body:
        raise BadResponse("oversize", f"body over {max_body} bytes")
    if lengths and len(data) != int(lengths[0]):
        raise BadResponse("bad_http", "body shorter than its Content-Length")
    if not response.isclosed():
        response.read(1)  # past a chunked body's end: reads its terminator and closes
    reusable = (
        response.version == 11
        and response.isclosed()
        and response.unread == 0  # nothing arrived past the answer
        and not response.will_close
        and (encoding is not None or bool(lengths))  # read-to-close is not reusable
    )
    return Response(200, headers, data), reusable


def _looks_open(conn: _Connection) -> bool:
    """False if an idle connection has anything to read: EOF, a reset, a TLS alert or
    stray bytes all mean it is not safe to send the next request on it."""
    sock = conn.sock
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)  # an SSLSocket's
    if pending is not None and pending():
        return False  # decrypted bytes nobody asked for
    try:
        sock.settimeout(0)  # a peek that never waits
        # The plain socket's recv, also on an SSLSocket: any TLS record is unexpected.
        socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False
