"""Host streams and idle connections cannot take the descriptors hook calls need (real service).

The reviewer's flood (one host token, ~1000 streams) and slowloris (idle or
half-sent requests) made a service at 1024 descriptors refuse every hook call.
These tests lower the real service's RLIMIT_NOFILE with prlimit, as systemd's
default would, and check what a host and an attacker observe.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from jit_hooks.testing.service import Service, start_service
from tests.server.conftest import Admin, build_world

pytestmark = pytest.mark.sqlite_only(
    "descriptor limits and connection handling do not touch the database"
)

WAIT = 30  # seconds a bounded wait may take before the test fails (not a timing assert)
HEADER_TIMEOUT = 2  # JIT_HEADER_TIMEOUT of the service under test


@pytest.fixture
def limited(tmp_path: Path):
    svc = start_service(tmp_path / "server", env={"JIT_HEADER_TIMEOUT": str(HEADER_TIMEOUT)})
    try:
        yield svc, build_world(svc, tmp_path)
    finally:
        svc.stop()


def _addr(svc: Service) -> tuple[str, int]:
    u = urlsplit(svc.url)
    return u.hostname or "127.0.0.1", u.port or 80


def open_stream(svc: Service, token: str) -> tuple[socket.socket, bytes]:
    """A raw stream request; the socket and what came back up to the first event (or the body)."""
    host, port = _addr(svc)
    s = socket.create_connection((host, port), timeout=WAIT)
    s.sendall(
        f"GET /api/v1/hook/stream HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    data = b""
    while b"event: sync" not in data and not (b"\r\n\r\n" in data and b" 200 " not in data[:16]):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        # Read the whole refusal (its JSON body) before the caller looks at it.
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")),
            0,
        )  # fmt: skip
        while len(body) < length:
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
        data = head + b"\r\n\r\n" + body
    return s, data


def read_until(s: socket.socket, marker: bytes) -> bytes:
    """Bytes until ``marker`` or the end of the connection (b'' marks the end)."""
    data = b""
    while marker not in data:
        chunk = s.recv(4096)
        if not chunk:
            return data + b"<EOF>"
        data += chunk
    return data


def closed_by_server(s: socket.socket) -> bool:
    """Whether the service ends the connection within WAIT (a bound, not a timing assert)."""
    deadline = time.monotonic() + WAIT
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            if not s.recv(4096):  # keep-alives of a stream still served land here
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return False


def test_one_host_token_holds_at_most_two_streams(limited):
    svc, world = limited
    socks = [open_stream(svc, world.host_tokens["web1"]) for _ in range(6)]
    try:
        assert all(data.startswith(b"HTTP/1.1 200") for _, data in socks)
        # Each newer stream closed the oldest: only the last two are still served.
        for s, _ in socks[:4]:
            assert closed_by_server(s)
        status, body = world.request("alice")
        assert status == 201, body
        status, body = world.call("bob", "POST", f"/api/v1/requests/{body['id']}/approve", {})
        assert status == 200, body
        for s, _ in socks[4:]:
            assert b"event: change" in read_until(s, b"event: change")
    finally:
        for s, _ in socks:
            s.close()


def test_one_token_flooding_more_streams_than_descriptors_leaves_logins_answered(tmp_path):
    """The review's flood: one host token, more stream requests than descriptors, all at once.

    Each newer stream ends an older one, and an ended stream's connection is
    closed at once (not kept alive), so the descriptors come back for logins.
    """
    svc = start_service(tmp_path / "server")  # the default 10 s header timeout
    try:
        world = build_world(svc, tmp_path)
        assert svc.proc is not None
        subprocess.run(["prlimit", f"--pid={svc.proc.pid}", "--nofile=256:256"], check=True)
        host, port = _addr(svc)
        token = world.host_tokens["web1"]
        request = (
            f"GET /api/v1/hook/stream HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        socks = []
        try:
            for _ in range(300):
                s = socket.create_connection((host, port), timeout=WAIT)
                s.sendall(request)
                socks.append(s)
            answered = 0
            for s in socks:  # a stream (later ended) or a refusal; or dropped under the flood:
                try:  # a slow CI run saw one reset (accepted after its header deadline)
                    answered += read_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 ")
                except ConnectionResetError:
                    pass
            assert answered >= len(socks) // 2, answered
            for _ in range(20):
                status, body = world.akc("web2", "alice")
                assert status == 200, body
                status, body = world.call("web2", "GET", "/api/v1/hook/ping")
                assert status == 200, body
        finally:
            for s in socks:
                s.close()
    finally:
        svc.stop()


def test_streams_beyond_the_descriptor_budget_are_refused_and_logins_answered(limited):
    svc, world = limited
    assert svc.proc is not None
    # 256 descriptors: streams may take 256 - 128 (stream.FD_RESERVE_MIN); the
    # flood below is more streams than descriptors, which starved hook calls before.
    subprocess.run(["prlimit", f"--pid={svc.proc.pid}", "--nofile=256:256"], check=True)
    admin = Admin(svc)
    try:
        from jit_hooks.server import store

        tokens = [admin(store.add_host, name=f"flood{i}", labels={}) for i in range(150)]
    finally:
        admin.close()
    held, refused = [], []
    try:
        for token in tokens:
            for _ in range(2):
                s, data = open_stream(svc, token)
                if data.startswith(b"HTTP/1.1 200"):
                    held.append(s)
                else:
                    refused.append(data)
                    s.close()
        assert len(held) == 128
        assert len(refused) == 300 - 128
        head, _, body = refused[0].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503")
        assert b"\r\nretry-after: 30" in head.lower()
        assert json.loads(body)["error"] == "too_many_streams"
        # Logins still get answers while the streams are held.
        for _ in range(20):
            status, body = world.akc("web2", "alice")
            assert status == 200, body
            status, body = world.call("web2", "GET", "/api/v1/hook/ping")
            assert status == 200, body
    finally:
        for s in held:
            s.close()


@pytest.mark.parametrize("sent", [b"", b"GET /api/v1/hook/stream HTTP/1.1\r\nHost: x\r\n"])
def test_connections_without_a_whole_request_are_closed(limited, sent):
    svc, _ = limited
    host, port = _addr(svc)
    socks = []
    try:
        for _ in range(5):
            s = socket.create_connection((host, port), timeout=WAIT)
            s.sendall(sent)
            socks.append(s)
        # Bounded by WAIT: the service closes them after its header timeout.
        assert all(closed_by_server(s) for s in socks)
    finally:
        for s in socks:
            s.close()


def test_half_sent_request_after_a_response_is_closed(limited):
    svc, world = limited
    host, port = _addr(svc)
    with socket.create_connection((host, port), timeout=WAIT) as s:
        token = world.host_tokens["web1"]
        s.sendall(
            f"GET /api/v1/hook/ping HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        assert read_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 200")
        # One byte stops uvicorn's keep-alive timer; the header deadline still runs.
        s.sendall(b"G")
        assert closed_by_server(s)


def test_serve_raises_its_soft_descriptor_limit_to_the_hard_one(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(1024, hard)
    if low == hard:
        pytest.skip("hard RLIMIT_NOFILE is 1024 or less here: nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        svc = start_service(tmp_path / "server")  # inherits the low soft limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert svc.proc is not None
        limits = Path(f"/proc/{svc.proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)]
    finally:
        svc.stop()
