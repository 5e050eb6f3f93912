"""PostgreSQL as a first-class backend: same schema as SQLite, the CLI, several replicas.

Everything runs against the session's real PostgreSQL cluster
(tests/utils/backends.py): two real `jit-server serve` processes on one
database for the replica tests, the real `jit-server` CLI with
``--database-url``. These tests are about PostgreSQL itself, so they run once
(tests/utils/backends.py skips their SQLite variant); the rest of
tests/server runs on both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import inspect

from jit_hooks.server.db import make_engine, upgrade
from jit_hooks.testing.service import Service, free_port, start_service
from tests.server.conftest import build_world

R = "/api/v1/requests"


def _schema(url: str) -> dict:
    """Tables -> columns (generic type, nullable, pk), indexes, uniques, foreign keys."""
    engine = make_engine(url)
    try:
        upgrade(engine)
        insp = inspect(engine)
        out = {}
        for table in sorted(insp.get_table_names()):
            cols = {
                c["name"]: (type(c["type"].as_generic()).__name__, c["nullable"])
                for c in insp.get_columns(table)
            }
            pk = tuple(insp.get_pk_constraint(table)["constrained_columns"])
            idx = sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(table)
                # PostgreSQL also lists the index behind each UNIQUE constraint.
                if "duplicates_constraint" not in i
            )
            uniq = sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table))
            fks = sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in insp.get_foreign_keys(table)
            )
            out[table] = {"columns": cols, "pk": pk, "indexes": idx, "uniques": uniq, "fks": fks}
        return out
    finally:
        engine.dispose()


def test_migrations_build_the_same_schema_on_both(pg, tmp_path: Path):
    on_sqlite = _schema(f"sqlite:///{tmp_path / 'jit.db'}")
    on_pg = _schema(pg.cluster.create_database("schema_cmp"))
    assert set(on_pg) == set(on_sqlite)
    assert "users" in on_pg and "audit_events" in on_pg
    for table in on_sqlite:
        assert on_pg[table] == on_sqlite[table], table


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _ok(url: str, *args: str) -> str:
    r = _cli(url, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("jit-server: error:"), r.stderr
    assert "Traceback" not in r.stderr
    return lines[-1]


def test_every_cli_command_on_postgresql(pg, tmp_path: Path):
    url = pg.cluster.create_database("cli")
    assert "db upgrade" in _one_line_error(_cli(url, "user", "list"))
    _ok(url, "db", "upgrade")
    _ok(url, "db", "upgrade")  # idempotent
    _ok(url, "user", "add", "alice", "--role", "requester", "--role", "approver")
    assert "already exists" in _one_line_error(_cli(url, "user", "add", "alice", "--role", "admin"))
    users = json.loads(_ok(url, "user", "list", "--json"))
    assert users == [
        {"id": 1, "name": "alice", "roles": ["approver", "requester"], "disabled": False}
    ]
    assert _ok(url, "token", "create", "alice").startswith("jitu_")
    host_token = _ok(url, "host", "add", "web1", "--label", "env=prod")
    assert host_token.startswith("jith_")
    assert "already exists" in _one_line_error(_cli(url, "host", "add", "web1"))
    assert _ok(url, "host", "rotate-token", "web1").strip() != host_token.strip()
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[[policy]]\nname = "web"\nhosts = ["web1"]\nlogins = ["deploy"]\n'
        'approvers = { roles = ["approver"] }\n'
    )
    _ok(url, "policy", "add", str(policy))
    assert [p["name"] for p in json.loads(_ok(url, "policy", "list", "--json"))] == ["web"]
    _ok(url, "policy", "remove", "web")
    _ok(url, "host", "remove", "web1")
    assert "unknown host" in _one_line_error(_cli(url, "host", "remove", "web1"))
    _ok(url, "user", "disable", "alice")
    assert "audit chain OK" in _ok(url, "audit", "verify")
    out = tmp_path / "audit.jsonl"
    _ok(url, "audit", "export", "--output", str(out))
    kinds = [json.loads(line)["kind"] for line in out.read_text().splitlines()]
    assert kinds[0] == "user.added" and "host.removed" in kinds


@pytest.fixture
def replicas(tmp_path: Path):
    """Two `jit-server serve` processes on one PostgreSQL database, and a world on them."""
    a = start_service(tmp_path / "a")
    b = Service(data_dir=tmp_path / "b", port=free_port(), env=a.env, database_url=a.database_url)
    b.data_dir.mkdir()
    b.start()
    try:
        yield build_world(a, tmp_path, approvals=2), b
    finally:
        a.stop()
        b.stop()


def _on(w, svc: Service, who: str, method: str, path: str, body=None):  # noqa: ANN001
    token = w.tokens.get(who) or w.host_tokens.get(who)
    return svc.call(method, path, token=token, body=body)


def test_two_of_m_approvals_racing_on_two_replicas_count_both(replicas):
    """bob approves on replica A while carol approves on replica B, at the same moment.

    Without the request row lock (lifecycle._lock), each transaction counts
    only its own review under READ COMMITTED and neither approves: the
    request stays pending with two approvals (a lost review).
    """
    w, b = replicas
    a = w.svc
    rounds = 12
    ids = []
    for _ in range(rounds):
        # One at a time: a person has one pending request per host and login.
        rid = w.request("alice")[1]["id"]
        ids.append(rid)
        gate = threading.Barrier(2)

        def approve(svc: Service, who: str, rid: int = rid, gate=gate):  # noqa: ANN001
            gate.wait()
            return _on(w, svc, who, "POST", f"{R}/{rid}/approve")

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda p: approve(*p), [(a, "bob"), (b, "carol")]))
        assert [code for code, _ in results] == [200, 200], results
    for rid in ids:
        code, req = _on(w, b, "alice", "GET", f"{R}/{rid}")
        assert code == 200
        assert len(req["reviews"]) == 2, req
        assert req["state"] == "approved", req
    approved = a.sql("SELECT count(*) FROM audit_events WHERE kind = 'request.approved'")
    assert approved == [(rounds,)]  # one transition each, never two


def test_a_revoke_on_one_replica_is_seen_by_the_next_hook_call_on_the_other(tmp_path: Path):
    a = start_service(tmp_path / "a")
    b = Service(data_dir=tmp_path / "b", port=free_port(), env=a.env, database_url=a.database_url)
    b.data_dir.mkdir()
    b.start()
    try:
        w = build_world(a, tmp_path, approvals=1)
        _, req = w.request("alice")
        assert _on(w, a, "bob", "POST", f"{R}/{req['id']}/approve")[1]["state"] == "approved"
        k = w.keys["alice"]
        akc = {"login": "deploy", "fingerprint": k.fingerprint, "key_type": k.key_type,
               "key": k.blob}  # fmt: skip
        assert len(_on(w, b, "web1", "POST", "/api/v1/hook/authorized-keys", akc)[1]["keys"]) == 1
        assert _on(w, a, "bob", "POST", f"{R}/{req['id']}/revoke", {})[0] == 200
        assert _on(w, b, "web1", "POST", "/api/v1/hook/authorized-keys", akc)[1]["keys"] == []
        acct = {"login": "deploy", "rhost": "10.0.0.9", "service": "sshd",
                "connection": "1:1", "fingerprint": k.fingerprint}  # fmt: skip
        assert _on(w, b, "web1", "POST", "/api/v1/hook/account", acct)[1]["decision"] == "deny"

        # A policy change made through one replica's database holds on both.
        w.policy(
            '[[policy]]\nname = "web-prod"\nhosts = ["web1"]\nlogins = ["deploy"]\n'
            'requesters = { roles = ["requester"] }\napprovers = { roles = ["approver"] }\n'
            "max_duration = 300\n"
        )
        for svc in (a, b):
            code, body = _on(w, svc, "alice", "POST", R, {"host": "web1", "login": "deploy",
                              "reason": "x", "duration_seconds": 600})  # fmt: skip
            assert (code, body["field"]) == (422, "duration_seconds"), body
    finally:
        a.stop()
        b.stop()


def test_duplicates_racing_on_two_replicas_are_a_clear_409(replicas, tmp_path: Path):
    """The same new key added through both replicas at once: one 201, one 409, never a 500."""
    from jit_hooks.testing.keys import make_key

    w, b = replicas
    for n in range(6):
        line = make_key(tmp_path, f"dup{n}").line
        gate = threading.Barrier(2)

        def add(svc: Service, gate=gate, line=line):  # noqa: ANN001
            gate.wait()
            return _on(w, svc, "alice", "POST", "/api/v1/keys", {"public_key": line})

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(add, [w.svc, b]))
        assert sorted(code for code, _ in results) == [201, 409], results
        refused = next(body for code, body in results if code == 409)
        assert refused["error"] == "conflict" and refused["detail"], refused
