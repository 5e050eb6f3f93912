"""`jit` over TLS against the real service, and against a real socket that misbehaves.

The faults come from tests/utils/fault_server.py: a real HTTP server on 127.0.0.1
answering 5xx, HTML, garbage, redirects or hanging up; nothing is mocked in the client.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests

from jit_hooks.testing.service import free_port
from jit_hooks.testing.tls_certs import make_pki
from tests.cli.conftest import Jit, World, clean_env
from tests.utils.fault_server import FaultServer


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("jit: error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def tls_service(world: World, tmp_path_factory):
    """A second service process on the same database, serving HTTPS with a test CA."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    cert, key = pki["ok"]
    port = free_port()
    log = open(world.service.data_dir / "tls-server.log", "ab")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jit_hooks.server.cli", "--data-dir",
            str(world.service.data_dir), "serve", "--listen", f"127.0.0.1:{port}",
            "--tls-cert", str(cert), "--tls-key", str(key),
        ],
        stdout=log, stderr=subprocess.STDOUT, env=world.service.env,
    )  # fmt: skip
    log.close()
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "TLS jit-server exited"
            try:
                if requests.get(url + "/healthz", verify=str(pki["ca"]), timeout=1).ok:
                    break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url, pki
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_tls_needs_the_ca(world: World, tmp_path, tls_service):
    url, pki = tls_service
    j = world.jit(tmp_path / "home")
    token = world.tokens["alice"]

    r = j("status", "--url", url, "--token", token)
    assert r.returncode == 3
    line = one_error_line(r.stderr)
    assert "TLS" in line and "certificate verify failed" in line and token not in line

    # login remembers the CA next to the URL and token ...
    j.ok("login", "--url", url, "--ca-file", str(pki["ca"]), "--token-stdin", input=token + "\n")
    assert f'ca_file = "{pki["ca"]}"' in j.config.read_text()
    assert json.loads(j.ok("status", "--json"))["user"]["name"] == "alice"

    # ... and the environment can point at another one.
    other = world.jit(tmp_path / "home2", JIT_URL=url, JIT_TOKEN=token, JIT_CA_FILE=str(pki["ca"]))
    assert json.loads(other.ok("keys", "list", "--json")) is not None


def test_tls_untrusted_certificate_is_unreachable(world: World, tmp_path, tls_service):
    url, pki = tls_service
    j = world.jit(tmp_path / "home")
    # The service's certificate was signed by pki["ca"]; trust only the other CA.
    untrusted_ca = pki["untrusted"][0].parent / "untrusted-ca.pem"
    r = j("status", "--url", url, "--token", world.tokens["alice"], "--ca-file", str(untrusted_ca))
    assert r.returncode == 3
    assert "certificate verify failed" in one_error_line(r.stderr)


@pytest.mark.parametrize(
    ("fault", "status", "code", "words"),
    [
        ("status", 503, 3, "unavailable (HTTP 503)"),
        ("status", 502, 3, "unavailable (HTTP 502)"),
        ("status", 500, 1, "boom (HTTP 500)"),
        ("html", 200, 1, "non-JSON answer"),
        ("garbage", 200, 1, "non-JSON answer"),
        ("redirect", 302, 1, "redirect"),
        ("close", 200, 3, "cannot reach service"),
    ],
)
def test_misbehaving_service(tmp_path, fault, status, code, words):
    j = Jit(home=tmp_path, env=clean_env(tmp_path))
    with FaultServer(fault=fault, status=status) as srv:
        r = j("list", "--url", srv.url, "--token", "jitu_secret-token")
        assert srv.requests, "the request reached the socket"
        assert srv.requests[0].headers["authorization"] == "Bearer jitu_secret-token"
    assert r.returncode == code, r.stderr
    line = one_error_line(r.stderr)
    assert words in line
    assert "jitu_secret-token" not in r.stderr + r.stdout


def test_hostile_error_text_stays_one_clean_line(tmp_path):
    j = Jit(home=tmp_path, env=clean_env(tmp_path))
    answer = {"error": "x", "detail": "first\nsecond\r\x1b[31mred\x07" + "y" * 2000}
    with FaultServer(fault="ok", status=400, answer=answer) as srv:
        r = j("show", "1", "--url", srv.url, "--token", "t")
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert "\x1b" not in line and "\x07" not in line and "\r" not in line
    assert "first second" in line and "(HTTP 400)" in line
    assert len(line) < 400
