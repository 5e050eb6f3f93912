"""`jit-server serve --workers N`: uvicorn's HTTP protocol with TCP_NODELAY on every connection.

With ``workers`` uvicorn binds the listening socket itself as ``socket(AF_INET)``
(proto 0), so asyncio's transport does not recognise the accepted connections
as TCP and leaves Nagle's algorithm on: a response written in two pieces then
waits for the client's delayed ACK, ~40 ms per request (measured: 44 ms at one
connection instead of 0.5 ms). A single process does not have this problem
(asyncio binds with proto IPPROTO_TCP and sets TCP_NODELAY itself).
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; sets TCP_NODELAY before handling the connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # the connection is already gone: h11 handles that
                pass
        super().connection_made(transport)
