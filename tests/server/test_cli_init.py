"""`jit-server init`: files and modes, idempotence, the admin's own certificate, and
a real TLS service from what it made, verified with the CA it made."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys

import pytest

from jit_hooks.testing.service import free_port
from tests.server.test_cli import one_line_error, run
from tests.utils.tls import wait_healthy


@pytest.fixture(autouse=True)
def _one_backend(db_backend: str, request: pytest.FixtureRequest) -> None:
    """Each test runs once: on SQLite (the data dir's file), or the one that says
    postgresql, on PostgreSQL."""
    want = "postgresql" if "postgresql" in request.node.originalname else "sqlite"
    if db_backend != want:
        pytest.skip(f"{want} only")


def mode(p) -> int:  # noqa: ANN001
    return stat.S_IMODE(p.stat().st_mode)


def test_init_makes_everything_once(tmp_path):
    d = tmp_path / "srv"
    r = run(d, "init", "--name", "jit.example.test,localhost", "--ip", "127.0.0.1")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("jitu_") and r.stdout.count("\n") == 1
    assert mode(d) == 0o700 and mode(d / "ca") == 0o700 and mode(d / "tls") == 0o700
    assert mode(d / "ca" / "ca.key") == 0o600 and mode(d / "tls" / "server.key") == 0o600
    assert "copy " + str(d / "tls" / "ca.pem") in r.stderr
    assert "jit-hooks enroll --url https://jit.example.test:8443" in r.stderr
    with sqlite3.connect(d / "jit.db") as db:
        (roles,) = db.execute("SELECT roles FROM users WHERE name='admin'").fetchone()
        hashes = [h for (h,) in db.execute("SELECT token_hash FROM tokens")]
        (expires,) = db.execute("SELECT expires_at FROM tokens").fetchone()
    assert "admin" in roles.split()
    import hashlib

    assert hashes == [hashlib.sha256(token.encode()).hexdigest()]  # stored hashed only
    assert expires is not None
    r = subprocess.run(
        ["openssl", "verify", "-CAfile", d / "tls" / "ca.pem", d / "tls" / "server.pem"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr

    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file() and p.suffix != ".db"}
    line = one_line_error(run(d, "init", "--name", "other.example.test"))
    assert "already initialised" in line
    after = {p: p.read_bytes() for p in d.rglob("*") if p.is_file() and p.suffix != ".db"}
    assert before == after  # nothing replaced
    with sqlite3.connect(d / "jit.db") as db:
        assert db.execute("SELECT count(*) FROM users").fetchone() == (1,)
    assert run(d, "init", "--check").returncode == 0
    assert run(tmp_path / "none", "init", "--check").returncode == 1
    assert not (tmp_path / "none").exists()  # --check makes nothing


def test_init_refuses_bad_input_and_writes_nothing(tmp_path):
    d = tmp_path / "srv"
    assert "--name" in one_line_error(run(d, "init"))
    assert "DNS name" in one_line_error(run(d, "init", "--name", "bad name!"))
    assert "IP address" in one_line_error(run(d, "init", "--ip", "300.1.1.1"))
    assert "--admin" in one_line_error(run(d, "init", "--name", "a.test", "--admin", "no one"))
    assert not d.exists()
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    assert "chmod 700" in one_line_error(run(open_dir, "init", "--name", "a.test"))
    assert list(open_dir.iterdir()) == []


def _openssl_pair(tmp_path, name: str, san: str):  # noqa: ANN001, ANN202
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        + ["-nodes", "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_init_with_own_certificate_checks_the_pair(tmp_path):
    cert, key = _openssl_pair(tmp_path, "mine", "DNS:jit.corp.test,IP:127.0.0.1")
    _, other_key = _openssl_pair(tmp_path, "other", "DNS:x.test")
    d = tmp_path / "srv"
    line = one_line_error(run(d, "init", "--cert", str(cert), "--key", str(other_key)))
    assert "is not the key of the certificate" in line
    assert not (d / "tls" / "server.pem").exists()
    r = run(d, "init", "--cert", str(cert), "--key", str(key), "--admin", "ops")
    assert r.returncode == 0, r.stderr
    assert "DNS:jit.corp.test, IP:127.0.0.1" in r.stderr  # the SANs are shown
    assert (d / "tls" / "server.pem").read_bytes() == cert.read_bytes()
    assert not (d / "ca").exists() and not (d / "tls" / "ca.pem").exists()


def test_serve_uses_init_tls_and_jit_login_trusts_the_ca(tmp_path):
    d = tmp_path / "srv"
    r = run(d, "init", "--name", "localhost", "--ip", "127.0.0.1")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(d), "serve"]
        + ["--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(proc, port, d / "tls" / "ca.pem")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JIT_")}
        env["HOME"] = str(tmp_path)
        cfg = tmp_path / "jit.toml"
        login = subprocess.run(
            [sys.executable, "-m", "jit_hooks.cli.jit", "login", "--config", str(cfg)]
            + ["--url", f"https://localhost:{port}", "--ca-file", str(d / "tls" / "ca.pem")]
            + ["--token-stdin"],
            input=token + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert login.returncode == 0, login.stderr
        listed = subprocess.run(
            [sys.executable, "-m", "jit_hooks.cli.jit", "tokens", "list", "--json"]
            + ["--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert listed.returncode == 0, listed.stderr
        assert [t["name"] for t in json.loads(listed.stdout)] == ["init"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_renewing_the_server_certificate_keeps_the_ca(tmp_path):
    d = tmp_path / "srv"
    assert run(d, "init", "--name", "a.test").returncode == 0
    ca = (d / "tls" / "ca.pem").read_bytes()
    old = (d / "tls" / "server.pem").read_bytes()
    (d / "tls" / "server.pem").unlink()
    (d / "tls" / "server.key").unlink()
    r = run(d, "init", "--name", "a.test,b.test")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # the admin exists: no new token
    assert (d / "tls" / "ca.pem").read_bytes() == ca
    assert (d / "tls" / "server.pem").read_bytes() != old
    r = subprocess.run(
        ["openssl", "verify", "-CAfile", d / "tls" / "ca.pem", d / "tls" / "server.pem"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_files_the_service_reads_go_to_the_data_dir_owner(tmp_path):
    """As root on a data dir made for a service user (as the package does): the
    service can read its certificate, key and database; the CA key stays root's."""
    d = tmp_path / "srv"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    r = run(d, "init", "--name", "a.test")
    assert r.returncode == 0, r.stderr
    for p in (d / "tls", d / "tls" / "server.key", d / "tls" / "server.pem", d / "jit.db"):
        assert (p.stat().st_uid, p.stat().st_gid) == (65534, 65534), p
    assert (d / "ca").stat().st_uid == 0 and (d / "ca" / "ca.key").stat().st_uid == 0
    assert mode(d / "ca" / "ca.key") == 0o600


def test_init_on_postgresql(pg, tmp_path):
    url = pg.new_database()
    d = tmp_path / "srv"
    r = run(d, "init", "--database-url", url, "--name", "a.test")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("jitu_")
    assert not (d / "jit.db").exists()  # the database is PostgreSQL's
    assert (d / "tls" / "server.pem").exists()
    r = subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", "--database-url", url, "user", "list"]
        + ["--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert [(u["name"], u["roles"]) for u in json.loads(r.stdout)] == [
        ("admin", ["admin", "approver"])
    ]
    line = one_line_error(run(d, "init", "--database-url", url, "--name", "a.test"))
    assert "already initialised" in line
