"""A real HTTP server on 127.0.0.1 that answers like the hook API, or misbehaves on purpose.

Used by host unit tests, the e2e fault scenarios and the demo: the faults are
produced for real on a socket (refused, slow drip, hang, garbage, oversize,
redirect, 5xx), nothing is mocked inside the client.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

FAULTS = (
    "ok",  # 200 with `answer` as JSON (or `status` if set)
    "status",  # `status` with a JSON error body
    "garbage",  # 200, application/json, not JSON
    "html",  # 200 text/html
    "oversize",  # 200 with a ~100 KiB JSON body
    "oversize_chunked",  # same, chunked, no Content-Length
    "redirect",  # 302 to another URL
    "drip",  # status line and headers one byte every `drip_interval` seconds
    "hang",  # accept, read the request, never answer
    "close",  # accept, read the request, close without a word
)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body) if self.body else None


@dataclass
class FaultServer:
    fault: str = "ok"
    answer: object = field(default_factory=dict)
    status: int = 200
    drip_interval: float = 0.2
    drip_total: float = 60.0  # after this a dripping answer completes, validly
    requests: list[Request] = field(default_factory=list)
    tls: ssl.SSLContext | None = None  # server side context: serve HTTPS
    # Per request path overrides: {path: {"fault": ..., "status": ..., "answer": ...}}.
    routes: dict[str, dict] = field(default_factory=dict)
    # Like the hook API, echo the question (host, login, fingerprint, connection)
    # into a JSON object answer, for each of those the answer does not set itself.
    echo: bool = True
    host_name: str = "web1"  # the echoed host when the question names none

    def __post_init__(self):
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                if self.tls:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                request = self._read_request(conn)
                if request is not None:
                    self._respond(conn, request, **self.routes.get(request.path, {}))
            except OSError:
                pass

    def _read_request(self, conn: socket.socket) -> Request | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        request = Request(method, path, headers, body)
        self.requests.append(request)
        return request

    def _send(self, conn, status: int, body: bytes, ctype="application/json", extra=""):
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
        )
        conn.sendall(head.encode() + body)

    def _echoed(self, request: Request, answer: object) -> object:
        try:
            asked = request.json()
        except ValueError:
            asked = None
        if not self.echo or not isinstance(answer, dict):
            return answer
        if not isinstance(asked, dict):  # a GET (sessions, ping): the answer names the host
            return {"host": self.host_name} | answer
        echo = {k: asked.get(k) for k in ("login", "fingerprint", "connection")}
        echo["host"] = asked.get("host") or self.host_name
        echo |= {k: asked[k] for k in ("report_id", "stage") if k in asked}  # break-glass
        return echo | answer

    def _respond(self, conn: socket.socket, request: Request, **route) -> None:
        fault = route.get("fault", self.fault)
        status = route.get("status", self.status)
        answer = self._echoed(request, route.get("answer", self.answer))
        if fault == "ok":
            self._send(conn, status, json.dumps(answer).encode())
        elif fault == "status":
            self._send(conn, status, b'{"error": "internal", "detail": "boom"}')
        elif fault == "garbage":
            self._send(conn, 200, b"{this is not json\x00\xff")
        elif fault == "html":
            self._send(conn, 200, b"<html>hello</html>", ctype="text/html")
        elif fault == "oversize":
            self._send(conn, 200, json.dumps({"keys": [], "pad": "x" * 100_000}).encode())
        elif fault == "oversize_chunked":
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            head += b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            conn.sendall(head)
            for _ in range(20):
                chunk = b" " * 8192
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.sendall(b"0\r\n\r\n")
        elif fault == "redirect":
            self._send(conn, 302, b"{}", extra=f"Location: {self.url}/elsewhere\r\n")
        elif fault == "drip":
            body = json.dumps(answer).encode()
            answer = (
                f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nX-Pad: {'p' * 400}\r\n\r\n"
            ).encode() + body
            end = time.monotonic() + self.drip_total
            i = 0
            while not self._stop.is_set() and i < len(answer):
                if time.monotonic() < end:
                    conn.sendall(answer[i : i + 1])
                    i += 1
                    self._stop.wait(self.drip_interval)
                else:  # time's up: finish the answer (a client still listening accepts it)
                    conn.sendall(answer[i:])
                    break
        elif fault == "hang":
            self._stop.wait(self.drip_total)
        elif fault == "close":
            pass
        else:
            raise ValueError(f"unknown fault {fault!r}")
