"""jit-server admin CLI: output shapes, errors as one line + non-zero exit, file modes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys

import pytest

from jit_hooks.testing.service import free_port
from tests.utils.tls import self_signed, wait_healthy


def run(data_dir, *args, input=None):  # noqa: ANN001, ANN002, A002, ANN201
    return subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=60,
    )


def ok(data_dir, *args) -> str:  # noqa: ANN001, ANN002
    r = run(data_dir, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def one_line_error(r) -> str:  # noqa: ANN001
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("jit-server: error:"), r.stderr
    assert "Traceback" not in r.stderr
    return lines[-1]


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    ok(d, "db", "upgrade")
    return d


def test_upgrade_creates_private_files(data_dir):
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "jit.db").stat().st_mode) == 0o600
    ok(data_dir, "db", "upgrade")  # idempotent


def test_commands_need_an_upgraded_database(tmp_path):
    line = one_line_error(run(tmp_path / "fresh", "user", "list"))
    assert "db upgrade" in line
    line = one_line_error(run(tmp_path / "fresh", "serve", "--listen", "127.0.0.1:1"))
    assert "db upgrade" in line


def test_users_tokens_hosts(data_dir):
    ok(data_dir, "user", "add", "alice", "--role", "requester", "--role", "approver")
    assert "already exists" in one_line_error(
        run(data_dir, "user", "add", "alice", "--role", "admin")
    )
    assert run(data_dir, "user", "add", "bob", "--role", "god").returncode == 2  # usage error
    assert "alice" in ok(data_dir, "user", "list")
    users = json.loads(ok(data_dir, "user", "list", "--json"))
    assert users == [
        {"id": 1, "name": "alice", "roles": ["approver", "requester"], "disabled": False}
    ]

    # Secrets are printed alone on one line of stdout.
    token = ok(data_dir, "token", "create", "alice")
    assert token.startswith("jitu_") and token.count("\n") == 1
    host_token = ok(data_dir, "host", "add", "web1", "--label", "env=prod", "--label", "team=db")
    assert host_token.startswith("jith_") and host_token.count("\n") == 1
    # Only hashes are stored.
    with sqlite3.connect(data_dir / "jit.db") as db:
        stored = {h for (h,) in db.execute("SELECT token_hash FROM tokens")}
    assert stored == {hashlib.sha256(t.strip().encode()).hexdigest() for t in (token, host_token)}

    assert "label" in one_line_error(run(data_dir, "host", "add", "web2", "--label", "noequals"))
    hosts = json.loads(ok(data_dir, "host", "list", "--json"))
    assert [(h["name"], h["labels"]) for h in hosts] == [("web1", {"env": "prod", "team": "db"})]
    new = ok(data_dir, "host", "rotate-token", "web1")
    assert new.startswith("jith_") and new != host_token
    ok(data_dir, "host", "remove", "web1")
    assert json.loads(ok(data_dir, "host", "list", "--json")) == []
    assert "unknown host" in one_line_error(run(data_dir, "host", "remove", "web1"))
    ok(data_dir, "user", "disable", "alice")
    assert json.loads(ok(data_dir, "user", "list", "--json"))[0]["disabled"] is True
    assert "unknown user" in one_line_error(run(data_dir, "token", "create", "nobody"))


GOOD = """
[[policy]]
name = "web-prod"
hosts = ["web1"]
logins = ["deploy"]
approvers = { roles = ["approver"] }

[[policy]]
name = "staging"
labels = { env = "staging" }
logins = ["deploy"]
auto_approve = true
approvals_required = 0
"""


def test_policies_all_or_nothing(data_dir, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        GOOD + '\n[[policy]]\nname = "x"\nhosts = ["a"]\nlogins = ["d"]\noptions = ["command=sh"]\n'
    )
    line = one_line_error(run(data_dir, "policy", "add", str(bad)))
    assert "options" in line
    assert json.loads(ok(data_dir, "policy", "list", "--json")) == []  # nothing half-written

    bad.write_text("this is = not [toml")
    assert "TOML" in one_line_error(run(data_dir, "policy", "add", str(bad)))

    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    r = run(data_dir, "policy", "add", str(good))
    assert r.returncode == 0 and "added policy web-prod" in r.stderr
    assert "updated policy staging" in run(data_dir, "policy", "add", str(good)).stderr
    listed = json.loads(ok(data_dir, "policy", "list", "--json"))
    assert [p["name"] for p in listed] == ["staging", "web-prod"]
    assert listed[1]["max_duration"] == 3600 and listed[1]["reason_required"] is True
    ok(data_dir, "policy", "remove", "staging")
    assert "unknown policy" in one_line_error(run(data_dir, "policy", "remove", "staging"))


def test_audit_verify_and_export(data_dir, tmp_path):
    ok(data_dir, "user", "add", "alice", "--role", "requester")
    ok(data_dir, "host", "add", "web1")
    assert "audit chain OK: 2 events" in ok(data_dir, "audit", "verify")
    out = tmp_path / "audit.jsonl"
    ok(data_dir, "audit", "export", "--output", str(out))
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["kind"] for e in events] == ["user.added", "host.added"]
    assert events[1]["prev_hash"] == events[0]["hash"]
    assert [json.loads(x)["id"] for x in ok(data_dir, "audit", "export").splitlines()] == [1, 2]


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl to make a certificate")
def test_serve_tls(data_dir, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed(cert, key, cn="localhost", san="IP:127.0.0.1")
    assert "both" in one_line_error(run(data_dir, "serve", "--tls-cert", str(cert)))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jit_hooks.server.cli",
            "--data-dir",
            str(data_dir),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(proc, port, cert)
    finally:
        proc.terminate()
        proc.wait(10)
    assert os.path.exists(data_dir / "jit.db")


def test_db_upgrade_says_what_it_did(tmp_path):
    r = run(tmp_path / "new", "db", "upgrade")
    assert r.returncode == 0, r.stderr
    assert "migrated from nothing (new database) to revision " in r.stderr
    r = run(tmp_path / "new", "db", "upgrade")
    assert r.returncode == 0 and "already at revision" in r.stderr and "nothing to do" in r.stderr


def test_policy_add_from_stdin(data_dir):
    r = run(data_dir, "policy", "add", "-", input=GOOD)
    assert r.returncode == 0 and "added policy web-prod" in r.stderr, r.stderr
    assert [p["name"] for p in json.loads(ok(data_dir, "policy", "list", "--json"))] == [
        "staging",
        "web-prod",
    ]
    assert "TOML" in one_line_error(run(data_dir, "policy", "add", "-", input="[[policy"))


def test_policy_add_names_the_real_cause(data_dir, tmp_path):
    assert "no such file" in one_line_error(run(data_dir, "policy", "add", str(tmp_path / "no")))
    if os.geteuid() != 0:
        pytest.skip("running the CLI as another user needs root")
    # A policy in root's private directory, read by an unprivileged user (as the
    # service user would be): the cause is permissions, not a missing file.
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "p.toml").write_text(GOOD)
    r = subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(data_dir)]
        + ["policy", "add", str(private / "p.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        user=65534,
        group=65534,
        extra_groups=[],
        # `su nobody` keeps root's $USER: the name comes from the uid, not from it.
        env={**os.environ, "USER": "root", "LOGNAME": "root"},
    )
    line = one_line_error(r)
    assert "permission denied for user nobody (uid 65534)" in line, line
    assert "policy add - <" in line


def test_audit_actor_is_the_unix_user_of_the_uid_not_USER(data_dir):
    """`su` keeps root's $USER, and anyone can set it: the audit's cli:<user> comes
    from the uid (mallory here is only an environment variable)."""
    import pwd

    r = subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(data_dir)]
        + ["user", "add", "erin", "--role", "requester"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "USER": "mallory", "LOGNAME": "mallory", "LNAME": "mallory"},
    )
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(data_dir / "jit.db") as db:
        (actor,) = db.execute(
            "SELECT actor FROM audit_events WHERE kind = 'user.added' ORDER BY seq DESC"
        ).fetchone()
    assert actor == "cli:" + pwd.getpwuid(os.geteuid()).pw_name
