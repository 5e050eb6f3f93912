"""The hook API client against a real local HTTP(S) server that misbehaves on purpose.

No mocks: every fault is produced on a real socket. Tests never assert wall
time: a fault the client failed to cut off would make the call succeed (drip,
hang: the server finally sends a valid answer) or hang, never pass.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from jit_hooks.errors import BadResponse, ConfigError, ServiceError, ServiceUnreachable
from jit_hooks.host.login import transport
from jit_hooks.host.login.client import HookClient, hard_deadline
from jit_hooks.host.login.config import load_config
from jit_hooks.protocol import HOOK_ACCOUNT, HOOK_PING
from jit_hooks.testing.tls_certs import make_pki
from jit_hooks.testing.trusted import trusted_dir
from tests.host.conftest import TOKEN
from tests.utils.fault_server import FaultServer

ALLOW = {"decision": "allow", "reason": "approved", "request_id": 7, "expires_at": 1764003600}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: connecting is refused


def test_ok_sends_token_and_body(config, fault):
    fault.answer = ALLOW
    answer = HookClient(config).account(
        {
            "login": "deploy",
            "rhost": "127.0.0.1",
            "service": "sshd",
            "connection": "1:2",
            "fingerprint": None,
        }
    )
    # The checked answer names every field it carries: an unpinned grant's from_cidrs is None.
    assert answer == {**ALLOW, "from_cidrs": None}
    (req,) = fault.requests
    assert req.method == "POST" and req.path == HOOK_ACCOUNT
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.json()["login"] == "deploy"


def test_url_path_prefix_is_kept(write_config, fault):
    fault.answer = {"host": "web1", "time": 1764000000}
    cfg = load_config(write_config([fault.url + "/jit/"]))
    assert HookClient(cfg).ping()["host"] == "web1"
    assert fault.requests[0].path == "/jit" + HOOK_PING


@pytest.mark.parametrize(
    "fault_name, status, reason, kind",
    [
        ("status", 500, "http_500", BadResponse),
        ("status", 502, "http_502", BadResponse),
        ("status", 503, "http_503", BadResponse),
        ("status", 401, "http_401", BadResponse),
        ("garbage", 200, "malformed", BadResponse),
        ("html", 200, "malformed", BadResponse),
        ("oversize", 200, "oversize", BadResponse),
        ("oversize_chunked", 200, "oversize", BadResponse),
        ("redirect", 302, "redirect", BadResponse),
        ("close", 200, "bad_http", ServiceUnreachable),
        ("drip", 200, "timeout", ServiceUnreachable),
        ("hang", 200, "timeout", ServiceUnreachable),
    ],
)
def test_faults_fail_closed(config, fault, fault_name, status, reason, kind):
    fault.fault, fault.status, fault.answer = fault_name, status, ALLOW
    fault.drip_total = 20.0  # then the drip completes validly: only a cut-off fails it
    with pytest.raises(kind) as e:
        HookClient(config).ping()
    assert e.value.reason == reason
    assert e.value.url == fault.url


def test_wrong_schema(config, fault):
    fault.answer = {"decision": "maybe"}
    with pytest.raises(BadResponse) as e:
        HookClient(config).account({"login": "x"})
    assert e.value.reason == "schema"


def test_json_array_is_schema_error(config, fault):
    fault.answer = [ALLOW]
    with pytest.raises(BadResponse, match="schema"):
        HookClient(config).account({"login": "x"})


def test_refused(write_config):
    cfg = load_config(write_config([f"http://127.0.0.1:{closed_port()}"]))
    with pytest.raises(ServiceUnreachable) as e:
        HookClient(cfg).ping()
    assert e.value.reason == "refused"


def test_dns_failure(write_config):
    cfg = load_config(write_config(["https://no-such-host.invalid:8443"]))
    with pytest.raises(ServiceUnreachable) as e:
        HookClient(cfg).ping()
    assert e.value.reason == "dns"


def test_first_dead_second_healthy(write_config, fault):
    fault.answer = ALLOW
    client = HookClient(load_config(write_config([f"http://127.0.0.1:{closed_port()}", fault.url])))
    assert client.account({"login": "x"})["decision"] == "allow"
    assert [outcome for _url, outcome in client.attempts] == ["refused", "ok"]


def test_first_hangs_second_healthy_within_budget(write_config, fault):
    fault.answer = ALLOW
    with FaultServer(fault="hang", drip_total=20) as hang:
        cfg = load_config(write_config([hang.url, fault.url], connect=0.5, total=3.0))
        client = HookClient(cfg)
        # The hung replica gets only its share of the budget; the second answers.
        assert client.account({"login": "x"})["decision"] == "allow"
        assert [o for _u, o in client.attempts] == ["timeout", "ok"]
        assert len(fault.requests) == 1


def test_all_dead_reports_last_error(write_config, fault):
    fault.fault, fault.status = "status", 503
    client = HookClient(load_config(write_config([f"http://127.0.0.1:{closed_port()}", fault.url])))
    with pytest.raises(ServiceError) as e:
        client.ping()
    assert e.value.reason == "http_503"
    assert [o for _u, o in client.attempts] == ["refused", "http_503"]


def test_missing_token_denies_before_any_request(write_config, fault, trusted):
    cfg = load_config(write_config([fault.url]))
    (trusted / "host-token").unlink()
    with pytest.raises(Exception, match="host token"):
        HookClient(cfg).ping()
    assert fault.requests == []


def test_hard_deadline_interrupts_a_blocking_call():
    import time

    with pytest.raises(ServiceUnreachable, match="timeout"):
        with hard_deadline(0.2):
            time.sleep(30)  # stands in for a TLS handshake that drips


# -- TLS ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs():
    with trusted_dir("tls") as d:  # CA files must pass the hooks' trust rule
        yield _make_certs(d)


def _make_certs(d):

    def make(name, san):
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                str(d / f"{name}.key"),
                "-out",
                str(d / f"{name}.pem"),
                "-days",
                "1",
                "-subj",
                f"/CN={name}",
                "-addext",
                f"subjectAltName={san}",
            ],
            check=True,
            capture_output=True,
        )
        return d / f"{name}.pem", d / f"{name}.key"

    return {"good": make("good", "IP:127.0.0.1"), "wrongname": make("wrongname", "DNS:x.example")}


def tls_server(cert, key) -> FaultServer:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return FaultServer(answer={"host": "web1", "time": 1764000000}, tls=ctx)


def test_tls_with_ca_file(write_config, certs):
    cert, key = certs["good"]
    with tls_server(cert, key) as server:
        extra = f'ca_file = "{cert}"\n'
        cfg = load_config(write_config([server.url], extra=extra))
        assert HookClient(cfg).ping()["host"] == "web1"


def test_tls_untrusted_ca(write_config, certs):
    cert, key = certs["good"]
    with tls_server(cert, key) as server:
        cfg = load_config(write_config([server.url]))  # system CAs only
        with pytest.raises(ServiceUnreachable) as e:
            HookClient(cfg).ping()
        assert e.value.reason == "tls_verify"
        assert server.requests == []


def test_tls_hostname_mismatch(write_config, certs):
    cert, key = certs["wrongname"]
    with tls_server(cert, key) as server:
        cfg = load_config(write_config([server.url], extra=f'ca_file = "{cert}"\n'))
        with pytest.raises(ServiceUnreachable) as e:
            HookClient(cfg).ping()
        assert e.value.reason == "tls_verify"


@pytest.mark.parametrize("content", [None, "not a certificate"])
def test_unusable_ca_file_is_a_config_error(write_config, trusted, content):
    ca = trusted / "ca.pem"
    if content is not None:
        ca.write_text(content)
    with pytest.raises(ConfigError, match="CA file"):  # missing: at load; garbage: at use
        cfg = load_config(write_config(["https://127.0.0.1:1"], extra=f'ca_file = "{ca}"\n'))
        HookClient(cfg).ping()


# -- connection reuse (transport.enable_keepalive, as jit-hooksd runs it) -----------


class KeepAliveServer(FaultServer):
    """The fault server speaking HTTP/1.1 keep-alive: many requests per connection.

    Answers every request with a decision whose reason echoes the request's
    login (so crossed answers show), counts accepted connections, and with
    ``drop_after_answer`` closes each connection after its first answer although
    the answer said nothing about closing (a server's idle timeout, early).
    """

    def __post_init__(self):
        self.connections = 0
        self.drop_after_answer = False
        self._count_lock = threading.Lock()
        super().__post_init__()
        self._sock.listen(64)  # room for 20 threads connecting at once

    def _handle(self, conn: socket.socket) -> None:
        with self._count_lock:
            self.connections += 1
        conn.settimeout(5)
        try:
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            while (request := self._read_request(conn)) is not None:
                login = (request.json() or {}).get("login", "")
                body = json.dumps({**ALLOW, "reason": login}).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                if self.drop_after_answer:
                    break
        except OSError:
            pass
        finally:
            conn.close()


@pytest.fixture
def keepalive():
    transport.enable_keepalive()
    yield
    transport.disable_keepalive()


@pytest.fixture
def ka_server():
    server = KeepAliveServer()
    yield server
    server.stop()


def test_keepalive_sequential_calls_share_one_connection(keepalive, write_config, ka_server):
    cfg = load_config(write_config([ka_server.url]))
    for i in range(5):
        # a new client per call, as the daemon may build one per hook request
        assert HookClient(cfg).account({"login": f"u{i}"})["reason"] == f"u{i}"
    assert ka_server.connections == 1
    assert all(r.headers["connection"] == "keep-alive" for r in ka_server.requests)


def test_without_keepalive_every_call_connects(write_config, ka_server):
    cfg = load_config(write_config([ka_server.url]))
    for i in range(5):
        assert HookClient(cfg).account({"login": f"u{i}"})["reason"] == f"u{i}"
    assert ka_server.connections == 5
    assert all(r.headers["connection"] == "close" for r in ka_server.requests)


def test_keepalive_server_closing_connections_is_transparent(keepalive, write_config, ka_server):
    ka_server.drop_after_answer = True
    client = HookClient(load_config(write_config([ka_server.url])))
    for i in range(5):
        assert client.account({"login": f"u{i}"})["reason"] == f"u{i}"
        assert client.attempts == [(ka_server.url, "ok")]
    assert ka_server.connections == 5


def test_keepalive_concurrent_calls_get_their_own_answers(keepalive, write_config, ka_server):
    # Generous timeouts: 20 threads on 2 loaded cores; only wrong answers matter here.
    cfg = load_config(write_config([ka_server.url], total=10.0, connect=3.0))
    wrong: list[object] = []

    def calls(t):
        for i in range(10):
            login = f"t{t}-{i}"
            try:
                got = HookClient(cfg).account({"login": login})["reason"]
            except Exception as e:  # noqa: BLE001 - reported below
                got = e
            if got != login:
                wrong.append(got)

    threads = [threading.Thread(target=calls, args=(t,)) for t in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert len(ka_server.requests) == 200
    assert ka_server.connections < 200  # connections were reused
    assert transport.keepalive_stats()["idle"] <= 8


def test_keepalive_failover_still_works(keepalive, write_config, ka_server):
    cfg = load_config(write_config([f"http://127.0.0.1:{closed_port()}", ka_server.url]))
    for i in range(3):
        client = HookClient(cfg)
        assert client.account({"login": f"u{i}"})["reason"] == f"u{i}"
        assert [o for _u, o in client.attempts] == ["refused", "ok"]
    assert ka_server.connections == 1


@pytest.fixture(scope="module")
def pki():
    with trusted_dir("pki") as d:  # CA files must pass the hooks' trust rule
        yield make_pki(d)


def test_keepalive_over_tls_and_ca_file_is_part_of_the_key(keepalive, write_config, pki, trusted):
    cert, key = pki["ok"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with KeepAliveServer(tls=ctx) as server:
        cfg = load_config(write_config([server.url], extra=f'ca_file = "{pki["ca"]}"\n'))
        for i in range(4):
            assert HookClient(cfg).account({"login": f"u{i}"})["reason"] == f"u{i}"
        assert server.connections == 1
        # The same CA under another path: other TLS settings, so not that connection.
        other_ca = trusted / "other-ca.pem"
        shutil.copy(pki["ca"], other_ca)
        other = load_config(write_config([server.url], extra=f'ca_file = "{other_ca}"\n'))
        assert HookClient(other).account({"login": "x"})["reason"] == "x"
        assert server.connections == 2
        assert HookClient(cfg).account({"login": "y"})["reason"] == "y"
        assert server.connections == 2


def test_keepalive_tls_failure_is_not_pooled(keepalive, write_config, pki):
    cert, key = pki["untrusted"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with KeepAliveServer(tls=ctx) as server:
        cfg = load_config(write_config([server.url], extra=f'ca_file = "{pki["ca"]}"\n'))
        for _ in range(2):
            with pytest.raises(ServiceUnreachable, match="tls_verify"):
                HookClient(cfg).ping()
        assert server.requests == []
        assert transport.keepalive_stats()["idle"] == 0


def test_keepalive_against_the_real_service(keepalive, write_config, service):
    token = service.admin("host", "add", "web1").strip()
    cfg = load_config(write_config([service.url], token=token))
    for _ in range(5):
        assert HookClient(cfg).ping()["host"] == "web1"
    stats = transport.keepalive_stats()
    assert (stats["opened"], stats["reused"], stats["retried"]) == (1, 4, 0)
