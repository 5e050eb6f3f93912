"""The hooks' HTTP/1.1 exchange against a real socket sending exact bytes.

Two paths: the strict minimal reader of a hook process (transport.exchange
without keep-alive) and jit-hooksd's pool of http.client connections
(transport.enable_keepalive, httppool.py). The reader is checked against
http.client with hypothesis: whatever it accepts, http.client reads the same.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jit_hooks.errors import BadResponse, ServiceUnreachable
from jit_hooks.host.login import transport


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


def test_interim_answers_are_refused_by_the_minimal_reader():
    # The service never sends 1xx to the hooks; skipping any was one of the old
    # reader's leniencies over http.client (which skips only 100).
    for interim in (b"100 Continue", b"102 Processing", b"103 Early Hints"):
        with pytest.raises(BadResponse, match="interim"):
            call(b"HTTP/1.1 " + interim + b"\r\n\r\n" + OK_HEAD + b"Content-Length: 1\r\n\r\nx")


def test_chunked_body_with_extension_and_trailer():
    raw = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2;x=y\r\n{}\r\n0\r\nT: 1\r\n\r\n"
    r, _ = call(raw)
    assert r.body == b"{}"


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
        # The leniencies the differential fuzz found in the old reader:
        (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n", "bad_http"),
        (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\n0\r\n\r\n", "bad_http"),
        (OK_HEAD + b"X: a\x01b\r\nContent-Length: 2\r\n\r\n{}", "bad_http"),
        (OK_HEAD + b"X: a\x7fb\r\nContent-Length: 2\r\n\r\n{}", "bad_http"),
        (b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\n{}", "bad_http"),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\n{}", "bad_http"),
        (OK_HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
         "bad_http"),
        (OK_HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}", "bad_http"),
    ],
)  # fmt: skip
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


# -- connection reuse (transport.enable_keepalive) -----------------------------------


class ScriptServer:
    """A keep-alive listener on 127.0.0.1 that counts the connections it accepts.

    ``script(conn_no, req_no) -> (raw answer, then)`` decides each answer, where
    ``then`` is "keep" (wait for the next request), "close" (FIN) or "reset" (RST).
    """

    def __init__(self, script):
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(32)
        self.port = self._srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self._srv.close()

    def _accept(self):
        while True:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            self.connections += 1  # only this thread writes it
            threading.Thread(target=self._serve, args=(conn, self.connections - 1)).start()

    def _serve(self, conn: socket.socket, conn_no: int):
        conn.settimeout(5)
        req_no = 0
        try:
            while True:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(rest) < length:
                    rest += conn.recv(4096)
                self.requests.append(head)
                raw, then = self.script(conn_no, req_no)
                conn.sendall(raw)
                req_no += 1
                if then == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    return
                if then == "close":
                    return
        except OSError:
            pass
        finally:
            conn.close()


KEEP = OK_HEAD + b"Content-Length: 2\r\n\r\n{}"


@pytest.fixture
def keepalive():
    transport.enable_keepalive()
    yield
    transport.disable_keepalive()


@pytest.fixture
def script_server():
    servers = []

    def make(script):
        servers.append(ScriptServer(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def get(port: int, budget: float = 5.0) -> transport.Response:
    return transport.exchange(
        host="127.0.0.1", port=port, method="GET", target="/x", headers={}, body=None,
        connect_timeout=2, deadline=time.monotonic() + budget, clock=time.monotonic,
        max_body=1000,
    )  # fmt: skip


def test_keepalive_reuses_one_connection(keepalive, script_server):
    srv = script_server(lambda c, r: (KEEP, "keep"))
    assert [get(srv.port).body for _ in range(5)] == [b"{}"] * 5
    assert srv.connections == 1
    assert all(b"\r\nConnection: keep-alive" in head for head in srv.requests)
    assert transport.keepalive_stats() == {"opened": 1, "reused": 4, "retried": 0, "idle": 1}


def test_disabled_is_one_connection_per_call(script_server):
    srv = script_server(lambda c, r: (KEEP, "keep"))
    for _ in range(3):
        assert get(srv.port).body == b"{}"
    assert srv.connections == 3
    assert all(head.count(b"Connection:") == 1 for head in srv.requests)
    assert all(b"\r\nConnection: close" in head for head in srv.requests)
    assert transport.keepalive_stats() is None


@pytest.mark.parametrize(
    "raw",
    [
        OK_HEAD + b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        OK_HEAD + b"Content-Length: 2\r\nConnection: Keep-Alive, Close\r\n\r\n{}",
        OK_HEAD + b"\r\n{}",  # no Content-Length: the body ends at the close
        b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 404 X\r\nContent-Length: 2\r\n\r\n{}",  # body not read: not consumed
        KEEP + b"extra",  # bytes past the answer
    ],
    ids=["close", "close-token", "no-length", "http10", "non-200", "extra"],
)
def test_answers_that_are_not_reused(keepalive, script_server, raw):
    srv = script_server(lambda c, r: (raw, "close"))  # the server closes too, as it should
    for _ in range(3):
        get(srv.port)
    assert srv.connections == 3
    assert transport.keepalive_stats()["idle"] == 0


def test_chunked_answer_is_reused(keepalive, script_server):
    chunked = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    srv = script_server(lambda c, r: (chunked, "keep"))
    assert [get(srv.port).body for _ in range(3)] == [b"{}"] * 3
    assert srv.connections == 1


@pytest.mark.parametrize("then", ["close", "reset"])
def test_stale_reused_connection_is_retried_once_on_a_fresh_one(keepalive, script_server, then):
    # The first connection answers once, then drops the next request unanswered:
    # what a server closing an idle connection looks like to the client.
    srv = script_server(lambda c, r: (b"", then) if (c, r) == (0, 1) else (KEEP, "keep"))
    assert get(srv.port).body == b"{}"
    assert get(srv.port).body == b"{}"
    assert srv.connections == 2
    assert transport.keepalive_stats()["retried"] == 1


def test_server_closing_idle_connection_is_transparent(keepalive, script_server):
    srv = script_server(lambda c, r: (KEEP, "close"))  # keep-alive promised, closed anyway
    assert [get(srv.port).body for _ in range(3)] == [b"{}"] * 3
    assert srv.connections == 3


def test_no_retry_after_a_byte_of_the_answer(keepalive, script_server):
    srv = script_server(lambda c, r: (b"HTTP/1.1 2", "close") if r == 1 else (KEEP, "keep"))
    get(srv.port)
    with pytest.raises(BadResponse):
        get(srv.port)
    assert srv.connections == 1
    assert transport.keepalive_stats()["retried"] == 0


def test_no_retry_on_a_fresh_connection(keepalive, script_server):
    srv = script_server(lambda c, r: (b"", "close"))
    with pytest.raises(ServiceUnreachable, match="bad_http"):
        get(srv.port)
    assert srv.connections == 1


def test_no_retry_when_a_reused_connection_times_out(keepalive, script_server):
    hang = threading.Event()

    def script(c, r):
        if r == 1:
            hang.wait(10)  # answers nothing until the test is over
        return KEEP, "keep"

    srv = script_server(script)
    get(srv.port)
    with pytest.raises(TimeoutError):
        get(srv.port, budget=0.3)
    hang.set()
    assert srv.connections == 1


@pytest.mark.parametrize(
    "bad",
    [
        OK_HEAD + b"Content-Length: 1001\r\n\r\n",
        OK_HEAD + b"Content-Length: 5\r\n\r\n{}",  # then the server closes: short body
        OK_HEAD + b"Bad Header\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["oversize", "short", "malformed"],
)
def test_connection_closed_after_a_bad_answer(keepalive, script_server, bad):
    srv = script_server(lambda c, r: (bad, "close") if r == 1 else (KEEP, "keep"))
    get(srv.port)
    with pytest.raises(BadResponse):
        get(srv.port)
    assert get(srv.port).body == b"{}"  # a new connection: the bad one was not pooled
    assert srv.connections == 2


def test_idle_connections_expire(script_server):
    transport.enable_keepalive(idle_seconds=0.05)
    try:
        srv = script_server(lambda c, r: (KEEP, "keep"))
        get(srv.port)
        time.sleep(0.1)
        get(srv.port)
        assert srv.connections == 2
    finally:
        transport.disable_keepalive()


def test_pool_keeps_at_most_max_idle_per_origin(script_server):
    transport.enable_keepalive(max_idle_per_origin=2)
    try:
        srv = script_server(lambda c, r: (KEEP, "keep"))
        barrier = threading.Barrier(5)
        errors = []

        def call():
            barrier.wait()
            try:
                get(srv.port)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=call) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert transport.keepalive_stats()["idle"] <= 2
    finally:
        transport.disable_keepalive()


@pytest.mark.parametrize("args", [(0, 4.0), (8, 0), (8, -1.0)])
def test_enable_keepalive_refuses_bad_settings(args):
    with pytest.raises(ValueError):
        transport.enable_keepalive(*args)
    assert transport.keepalive_stats() is None


# -- jit-hooksd's pool (http.client) under a hard deadline ----------------------------


def test_pool_refuses_content_length_with_chunked(keepalive, script_server):
    both = OK_HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    srv = script_server(lambda c, r: (both, "close"))
    with pytest.raises(BadResponse, match="bad_http"):
        get(srv.port)
    assert transport.keepalive_stats()["idle"] == 0


class Dripper:
    """Accepts, then sends ``data`` one byte every ``every`` seconds; records how the
    connection ended ("sent all" or the error our side's close caused)."""

    def __init__(self, data: bytes, every: float = 0.1):
        self.data, self.every = data, every
        self.ended = threading.Event()
        self.outcome = ""
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(4)
        self.port = self._srv.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        conn, _ = self._srv.accept()
        with conn:
            try:
                conn.recv(65536)
                for i in range(len(self.data)):
                    conn.sendall(self.data[i : i + 1])
                    time.sleep(self.every)
                self.outcome = "sent all"
            except OSError as e:
                self.outcome = type(e).__name__
            finally:
                self.ended.set()
        self._srv.close()


def test_pool_cuts_a_drip_at_the_deadline(keepalive):
    # A valid answer at 10 bytes/s: per-read timeouts never fire, the deadline must.
    body = b"{}" + b" " * 200
    drip = Dripper(OK_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    with pytest.raises(TimeoutError):
        get(drip.port, budget=0.5)
    # Our side closed the connection: the server's next send fails long before the end.
    assert drip.ended.wait(10)
    assert drip.outcome in ("BrokenPipeError", "ConnectionResetError")
    assert transport.keepalive_stats()["idle"] == 0


def test_pool_cuts_a_dripped_tls_handshake(keepalive):
    import ssl

    # A TLS record header announcing 16 KiB, then the record one byte at a time.
    drip = Dripper(b"\x16\x03\x03\x40\x00" + b"\x00" * 400)
    with pytest.raises(TimeoutError):
        transport.exchange(
            host="127.0.0.1", port=drip.port, method="GET", target="/x", headers={},
            body=None, connect_timeout=2, deadline=time.monotonic() + 0.5,
            clock=time.monotonic, max_body=1000, ssl_context=ssl.create_default_context(),
        )  # fmt: skip
    assert drip.ended.wait(10)
    assert drip.outcome in ("BrokenPipeError", "ConnectionResetError")


def test_the_helpers_watchdog_cuts_the_bodys_connection(keepalive):
    """daemon.Run answering for a body (expire) shuts the connection it is blocked on,
    so the body thread ends then, not at the end of its own (here long) budget."""
    from jit_hooks.host.login import httppool
    from jit_hooks.host.login.daemon import Run

    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(4)  # accepts (backlog) and never answers
    run = Run()
    errors: list[BaseException] = []

    def body():
        with httppool.watching(run):
            try:
                get(hang.getsockname()[1], budget=30)
            except BaseException as e:  # noqa: BLE001 - recorded for the asserts
                errors.append(e)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    try:
        for _ in range(500):  # until the exchange has its connection
            if run._conns:
                break
            time.sleep(0.01)
        assert run._conns
        assert run.expire(time.monotonic(), limit=0) is None  # no expiry callback set
        t.join(10)
        assert not t.is_alive()
        assert errors and not run._conns
    finally:
        hang.close()


# -- the minimal reader against http.client (differential, hypothesis) ---------------

_STATUS_LINES = [
    b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 200", b"HTTP/1.1 404 Not Found",
    b"HTTP/1.1 100 Continue", b"HTTP/1.2 200 OK", b"HTTP/2 200 OK", b"HTTP/1.1 20 OK",
    b"HTTP/1.1  200 OK", b"http/1.1 200 OK", b"HTTP/1.1 200 OK\x00", b"HTTP/1.1 2x0 OK",
]  # fmt: skip
_HEADERS = [
    b"Content-Type: application/json", b"Content-Length: 2", b"Content-Length: 5",
    b"Content-Length:  2 ", b"Content-Length: -1", b"Content-Length: 2, 2", b"Content-Length: +2",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: Chunked ", b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: gzip, chunked", b"Connection: close", b"X: \x01", b"X: a\tb",
    b" folded", b"\tfolded", b"Bad Header", b"X : y", b":y", b"X: \xff", b"X-Empty:",
]  # fmt: skip
_BODIES = [
    b"{}", b"{}{}{}", b"", b"2\r\n{}\r\n0\r\n\r\n", b"2;e=1\r\n{}\r\n0\r\nT: 1\r\n\r\n",
    b"2\n{}\n0\n\n", b"02\r\n{}\r\n0\r\n\r\n", b"2 \r\n{}\r\n0\r\n\r\n", b"zz\r\n",
    b"1\r\n{\r\n1\r\n}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n", b"+2\r\n{}\r\n0\r\n\r\n",
]  # fmt: skip


@st.composite
def responses(draw) -> bytes:
    eol = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r"])
    lines = [draw(st.sampled_from(_STATUS_LINES))]
    lines += draw(st.lists(st.sampled_from(_HEADERS), max_size=5))
    data = b"".join(line + draw(eol) for line in lines) + draw(eol)
    data += draw(st.sampled_from(_BODIES))
    for _ in range(draw(st.integers(0, 3))):  # byte-level mutations
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = bytes([draw(st.sampled_from(b"\r\n\x00\t :;0aA\x7f\xff"))])
        if op == "insert":
            data = data[:pos] + byte + data[pos:]
        elif pos < len(data):
            data = data[:pos] + (byte if op == "replace" else b"") + data[pos + 1 :]
    return data


class _FakeSock:
    def __init__(self, data: bytes):
        self.data = data

    def makefile(self, mode):  # noqa: ANN001
        return io.BytesIO(self.data)


def _stdlib(data: bytes) -> tuple[int, bytes] | None:
    """(status, body) as http.client reads ``data``, None if it refuses it."""
    r = http.client.HTTPResponse(_FakeSock(data))  # type: ignore[arg-type]
    try:
        r.begin()
        return r.status, r.read() if r.status == 200 else b""
    except (http.client.HTTPException, ValueError):
        return None


@settings(max_examples=3000, deadline=None)
@given(responses())
def test_the_minimal_reader_is_never_more_lenient_than_http_client(data):
    try:
        ours = transport.read_response(io.BufferedReader(io.BytesIO(data)), 1000)
    except (BadResponse, ServiceUnreachable):
        return  # refusing is always allowed
    assert _stdlib(data) == (ours.status, ours.body), data


def test_the_differential_generator_reaches_accepted_answers():
    """The property above is not vacuous: valid answers are among those generated, and
    both parsers read them alike (a sample, fixed)."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;e=1\r\n{}\r\n0\r\n\r\n"
    for data in (ok, chunked, b"HTTP/1.0 200 OK\r\n\r\n{}"):
        r = transport.read_response(io.BufferedReader(io.BytesIO(data)), 1000)
        assert _stdlib(data) == (r.status, r.body) == (200, b"{}")


# -- both paths against the fault matrix's protocol cases ------------------------------

# Where jit-hooksd's http.client answers differently from the hook process's reader
# (both deny but the first): http.client skips "100 Continue" answers, and it meets a
# chunk announced past the cap as a short read.
HELPER_DIFFERS = {"p_interim": "ok", "p_huge_chunk": "bad_http"}


def _outcome(raw: bytes) -> str:
    from jit_hooks.errors import ServiceError
    from jit_hooks.host.login.client import _parse_json

    try:
        # No request body: serve_once reads only the head, and closing a socket with
        # unread bytes would reset the connection before we read the answer.
        _parse_json(call(raw, max_body=64 * 1024, body=None)[0])
    except ServiceError as e:
        return e.reason
    return "ok"


def _protocol_cases() -> list[tuple[str, bytes]]:
    from tests.reliability.test_fault_matrix import PROTOCOL_CASES

    good = json.dumps({"decision": "allow", "reason": "approved"}).encode()

    class Env:
        """Stands in for the matrix's Env: keeps the bytes its RawServer would send."""

        raw_bytes = b""

        def raw(self, make):  # noqa: ANN001, ANN202 - the matrix's Env.raw
            self.raw_bytes = make(good)
            return "http://unused"

    cases = []
    for case, setup in PROTOCOL_CASES:
        env = Env()
        setup(env)  # type: ignore[arg-type]
        cases.append((case.id, env.raw_bytes))
    return cases


@pytest.mark.parametrize("case_id, raw", _protocol_cases())
def test_the_helper_meets_the_matrix_protocol_cases_like_the_hook_process(case_id, raw):
    plain = _outcome(raw)
    transport.enable_keepalive()
    try:
        pooled = _outcome(raw)
    finally:
        transport.disable_keepalive()
    assert pooled == HELPER_DIFFERS.get(case_id, plain)


def test_pool_fails_over_from_a_drip_within_one_budget(keepalive, script_server):
    """The first URL drips a valid answer (10 bytes/s: no read ever times out); only the
    attempt's own deadline (its share of the budget) stops it, leaving time for the
    second URL, as in the hook process."""
    from jit_hooks.host.login.client import HookClient
    from jit_hooks.host.login.config import HostConfig

    body = b"{}" + b" " * 200
    drip = Dripper(OK_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    good = script_server(lambda c, r: (KEEP, "keep"))
    urls = (f"http://127.0.0.1:{drip.port}", f"http://127.0.0.1:{good.port}")
    client = HookClient(
        HostConfig(urls=urls, connect_timeout=0.5, total_timeout=2.0), token="jith_" + "t" * 43
    )
    assert client.request("GET", "/ping") == {}
    assert [outcome for _url, outcome in client.attempts] == ["timeout", "ok"]
    assert drip.ended.wait(10) and drip.outcome != "sent all"
