"""How `jit-server serve` runs uvicorn: httptools + uvloop, TCP_NODELAY on every connection.

**Event loop and HTTP parser.** uvicorn's pure-Python h11 parser and the stdlib
asyncio loop cost a large part of a hook call; httptools (llhttp in C) and
uvloop are uvicorn's own "standard" choices (bench P3, docs/performance.md).
Both are in the ``server`` extra; without them the service still runs, on h11
and asyncio.

**TCP_NODELAY.** With ``workers`` uvicorn binds the listening socket itself as
``socket(AF_INET)`` (proto 0), so asyncio's transport does not recognise the
accepted connections as TCP and leaves Nagle's algorithm on: a response written
in two pieces then waits for the client's delayed ACK, ~40 ms per request
(measured: 44 ms at one connection instead of 0.5 ms). The protocols below set
it on every connection, whatever the loop and the number of workers.

**Header deadline.** uvicorn times out a connection only between requests
(``timeout_keep_alive``, armed after a response): a connection that never sends
a request, or sends half of one, holds a descriptor for ever, and ~1000 of them
used to stop every hook call at the default 1024 descriptors. The protocols
below close a connection that has not completed a request's headers
:data:`HEADER_TIMEOUT` seconds after it opened or after its last response.
Limits: the TLS handshake before it is bounded by asyncio's own 60 s
(``ssl_handshake_timeout``), a slow request *body* is not covered (bodies are
capped at 64 KiB, server/app.py), and a client may still open connections
faster than they time out: rate limits belong to a firewall in front.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import resource
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

# Seconds a connection may take to send a request's headers (see the module
# docstring): hook clients send theirs at once; JIT_HEADER_TIMEOUT overrides it.
HEADER_TIMEOUT = float(os.environ.get("JIT_HEADER_TIMEOUT") or 10)
# After a response on these paths the connection is closed, not kept alive: a
# host stream that ended (replaced by a newer one, token ended, refused for the
# cap) frees its descriptor at once; a flood of them would otherwise hold one
# each for uvicorn's keep-alive. Hosts reconnect on a new connection anyway.
CLOSE_AFTER_PATHS = frozenset({"/api/v1/hook/stream"})


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the connection is already gone: the protocol handles that
            pass


class _HeaderDeadline:
    """Mixin for uvicorn's protocols: TCP_NODELAY, and close a connection whose request
    headers are overdue. Listed before the uvicorn class, whose methods it extends."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _nodelay(transport)
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._after_response()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(HEADER_TIMEOUT, self._header_deadline_passed)

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        cycle = getattr(self, "cycle", None)
        # A cycle whose response is under way (a stream, a slow hook call) had its
        # headers: only a connection still waiting for a request's headers is closed.
        if cycle is None or cycle.response_complete:
            transport = self.transport  # type: ignore[attr-defined]
            if not transport.is_closing():
                transport.close()

    def _after_response(self) -> None:
        """Close the connection after a stream, else wait for the next request's headers."""
        transport = self.transport  # type: ignore[attr-defined]
        if transport.is_closing():
            return
        cycle = getattr(self, "cycle", None)
        if cycle is not None and cycle.scope.get("path") in CLOSE_AFTER_PATHS:
            transport.close()
            return
        self._arm_header_deadline()

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None


class NoDelayH11Protocol(_HeaderDeadline, H11Protocol):
    """uvicorn's h11 protocol; sets TCP_NODELAY before handling the connection."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed
    HttpToolsProtocol = None  # type: ignore[assignment,misc]
else:

    class NoDelayHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):
        """uvicorn's httptools protocol; sets TCP_NODELAY before handling the connection."""


def uvicorn_options() -> dict[str, Any]:
    """uvicorn.run() arguments for the HTTP protocol and the event loop.

    Module-level classes: with ``workers`` uvicorn pickles its config for the
    spawned worker processes.
    """
    http = NoDelayH11Protocol if HttpToolsProtocol is None else NoDelayHttpToolsProtocol
    return {"http": http, "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"}


def raise_nofile() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the (old, new) soft limits.

    Each host stream holds a descriptor; systemd's default soft limit (1024)
    would make a few hundred of them the service's ceiling (stream.stream_cap).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # a hard limit the kernel refuses: keep the soft one
            return soft, soft
    return soft, hard
