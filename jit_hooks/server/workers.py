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
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the connection is already gone: the protocol handles that
            pass


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; sets TCP_NODELAY before handling the connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _nodelay(transport)
        super().connection_made(transport)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed
    HttpToolsProtocol = None  # type: ignore[assignment,misc]
else:

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol; sets TCP_NODELAY before handling the connection."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            _nodelay(transport)
            super().connection_made(transport)


def uvicorn_options() -> dict[str, Any]:
    """uvicorn.run() arguments for the HTTP protocol and the event loop.

    Module-level classes: with ``workers`` uvicorn pickles its config for the
    spawned worker processes.
    """
    http = NoDelayH11Protocol if HttpToolsProtocol is None else NoDelayHttpToolsProtocol
    return {"http": http, "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"}
