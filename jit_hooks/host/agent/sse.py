"""Client side of the service's host event stream (server-sent events; stdlib only)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Iterable, Iterator
from typing import NamedTuple
from urllib.parse import urlsplit

from jit_hooks import __version__
from jit_hooks.errors import BadResponse, ServiceUnreachable
from jit_hooks.host.login.client import tls_context
from jit_hooks.host.login.config import HostConfig
from jit_hooks.protocol import API_PREFIX

STREAM_PATH = f"{API_PREFIX}/hook/stream"
# The service sends a comment every 20 s (routes/stream.py): three missed in a
# row mean the connection is dead even if TCP has not noticed.
READ_TIMEOUT = 60.0
# One event is a line of JSON naming a kind and a request id: anything longer
# is not the service talking.
MAX_LINE = 8192


class Event(NamedTuple):
    name: str
    data: dict
    id: int | None


def parse(lines: Iterable[bytes]) -> Iterator[Event]:
    """Events from SSE lines (comments and unknown fields skipped); BadResponse on junk."""
    name, data, event_id = "message", list[str](), None
    for raw in lines:
        if len(raw) > MAX_LINE:
            raise BadResponse("bad_stream", "stream line too long")
        line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        if not line:
            if data:
                try:
                    payload = json.loads("\n".join(data))
                except ValueError:
                    raise BadResponse("bad_stream", "event data is not JSON") from None
                if not isinstance(payload, dict):
                    raise BadResponse("bad_stream", "event data is not an object")
                yield Event(name, payload, event_id)
            name, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = int(value) if value.isdigit() else None


class Stream:
    """One open stream to the first service URL that accepts it; iterate for events."""

    def __init__(self, config: HostConfig, token: str, *, read_timeout: float = READ_TIMEOUT):
        self.url = ""
        self._conn: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        error: Exception = ServiceUnreachable("refused", "no URL to try")
        for url in config.urls:
            try:
                self._open(config, url, token, read_timeout)
                self.url = url
                return
            except (OSError, http.client.HTTPException, BadResponse) as e:
                self.close()
                error = e
        raise error

    def _open(self, config: HostConfig, url: str, token: str, read_timeout: float) -> None:
        parts = urlsplit(url)
        host, path = parts.hostname or "", parts.path.rstrip("/") + STREAM_PATH
        if parts.scheme == "https":
            self._conn = http.client.HTTPSConnection(
                host, parts.port or 443, timeout=config.connect_timeout,
                context=tls_context(config.ca_file),
            )  # fmt: skip
        else:
            self._conn = http.client.HTTPConnection(
                host, parts.port or 80, timeout=config.connect_timeout
            )
        self._conn.request(
            "GET",
            path,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "text/event-stream",
                "User-Agent": f"jit-hooks-agent/{__version__}",
            },
        )
        response = self._conn.getresponse()
        if response.status != 200:
            status = response.status
            response.read(MAX_LINE)
            raise BadResponse(
                "unauthorized" if status in (401, 403) else "bad_status", f"HTTP {status}"
            )
        if not response.getheader("Content-Type", "").startswith("text/event-stream"):
            raise BadResponse("bad_stream", "not an event stream")
        assert self._conn.sock is not None
        self._conn.sock.settimeout(read_timeout)
        self._response = response

    def __iter__(self) -> Iterator[Event]:
        assert self._response is not None
        response = self._response

        def lines() -> Iterator[bytes]:
            while True:
                line = response.readline(MAX_LINE + 1)
                if not line:
                    return
                yield line

        return parse(lines())

    def close(self) -> None:
        """Close the stream; a thread blocked reading it returns at once (end of stream)."""
        conn = self._conn
        if conn is not None and conn.sock is not None:
            # shutdown() wakes a recv() blocked in another thread; close() alone
            # would wait for that reader's buffer lock until the next heartbeat.
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        if conn is not None:
            conn.close()
            self._conn = None
        self._response = None
