"""The hooks' HTTP/1.1 exchange against a real socket sending exact bytes."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from jit_hooks.errors import BadResponse, ServiceUnreachable
from jit_hooks.host import transport


def serve_once(raw: bytes):
    """A listener that reads one request, sends ``raw`` and closes; returns (port, seen)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    seen: list[bytes] = []

    def run():
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            seen.append(data)
            conn.sendall(raw)
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1], seen


def call(raw: bytes, max_body: int = 1000, body: bytes | None = b"{}"):
    port, seen = serve_once(raw)
    r = transport.exchange(
        host="127.0.0.1", port=port, method="POST", target="/x", headers={"A": "b"},
        body=body, connect_timeout=2, deadline=time.monotonic() + 5, clock=time.monotonic,
        max_body=max_body,
    )  # fmt: skip
    return r, seen


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


def test_content_length_body_and_request_shape():
    r, seen = call(OK_HEAD + b"Content-Length: 2\r\n\r\n{}trailing-garbage")
    assert (r.status, r.body, r.headers["content-type"]) == (200, b"{}", "application/json")
    head = seen[0].decode()
    assert head.startswith("POST /x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert "\r\nA: b\r\n" in head and "\r\nContent-Length: 2\r\n" in head


def test_chunked_body():
    r, _ = call(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
    assert r.body == b"abcde"


def test_body_until_close():
    r, _ = call(OK_HEAD + b"\r\nuntil-close")
    assert r.body == b"until-close"


def test_interim_100_skipped():
    r, _ = call(b"HTTP/1.1 100 Continue\r\n\r\n" + OK_HEAD + b"Content-Length: 1\r\n\r\nx")
    assert (r.status, r.body) == (200, b"x")


def test_non_200_body_not_read():
    r, _ = call(b"HTTP/1.1 500 X\r\nContent-Length: 99999999\r\n\r\n")
    assert (r.status, r.body) == (500, b"")


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "bad_http"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "bad_http"),
        (OK_HEAD + b"Bad Header\r\n\r\n", "bad_http"),
        (OK_HEAD + b" folded: x\r\n\r\n", "bad_http"),
        (OK_HEAD + b"Content-Length: -1\r\n\r\n", "bad_http"),
        (OK_HEAD + b"Content-Length: 10\r\n\r\nshort", "bad_http"),
        (OK_HEAD + b"Content-Length: 1001\r\n\r\n", "oversize"),
        (OK_HEAD + b"\r\n" + b"x" * 1001, "oversize"),
        (OK_HEAD + b"Transfer-Encoding: gzip\r\n\r\n", "bad_http"),
        (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", "bad_http"),
        (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", "bad_http"),
        (
            OK_HEAD
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"200\r\n"
            + b"x" * 512
            + b"\r\n"
            + b"200\r\n"
            + b"x" * 512
            + b"\r\n0\r\n\r\n",
            "oversize",
        ),
        (OK_HEAD + b"X: " + b"y" * 9000 + b"\r\n\r\n", "bad_http"),
        (OK_HEAD + b"".join(b"X%d: y\r\n" % i for i in range(200)) + b"\r\n", "bad_http"),
        (b"HTTP/1.1 200 OK\r\nContent-Ty", "bad_http"),
    ],
)
def test_malformed_answers(raw, reason):
    with pytest.raises(BadResponse) as e:
        call(raw)
    assert e.value.reason == reason


def test_closed_without_answer():
    with pytest.raises(ServiceUnreachable) as e:
        call(b"")
    assert e.value.reason == "bad_http"


def test_header_injection_refused():
    with pytest.raises(ValueError):
        transport._request("GET", "/x", "h", 1, {"A": "b\r\nEvil: 1"}, None)
