"""The hook API client against a real local HTTP(S) server that misbehaves on purpose.

No mocks: every fault is produced on a real socket. Tests never assert wall
time: a fault the client failed to cut off would make the call succeed (drip,
hang: the server finally sends a valid answer) or hang, never pass.
"""

from __future__ import annotations

import socket
import ssl
import subprocess

import pytest

from jit_hooks.errors import BadResponse, ConfigError, ServiceError, ServiceUnreachable
from jit_hooks.host.client import HookClient, hard_deadline
from jit_hooks.host.config import load_config
from jit_hooks.protocol import HOOK_ACCOUNT, HOOK_PING
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
    assert answer == ALLOW
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
    cfg = load_config(write_config(["http://no-such-host.invalid:8443"]))
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


def test_missing_token_denies_before_any_request(write_config, fault, tmp_path):
    cfg = load_config(write_config([fault.url]))
    (tmp_path / "host-token").unlink()
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
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")

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
def test_unusable_ca_file_is_a_config_error(write_config, tmp_path, content):
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_text(content)
    cfg = load_config(write_config(["https://127.0.0.1:1"], extra=f'ca_file = "{ca}"\n'))
    with pytest.raises(ConfigError, match="CA file"):
        HookClient(cfg).ping()
