"""`jit-server db copy`: a seeded SQLite installation moved to a real PostgreSQL.

The world holds users, keys, hosts, a policy, requests in every state a test
can reach without waiting (approved, pending, denied, cancelled, revoked) and
their audit events. After the copy a service on PostgreSQL answers the same
hook decisions, `audit verify` passes there, new rows get fresh ids (the
sequences were moved) and a non-empty target is refused unless --replace.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from jit_hooks.testing.postgres import PG_BIN
from jit_hooks.testing.service import start_service
from tests.ha.conftest import akc, seed

pytestmark = pytest.mark.slow
TABLES = ("users", "tokens", "keys", "hosts", "policies", "requests", "request_hosts",
          "reviews", "audit_events", "audit_head")  # fmt: skip


def jit_server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def decisions(svc, w) -> list:  # noqa: ANN001
    """What the hooks answer for alice on both hosts (AKC keys and the account decision)."""
    out = []
    for host in ("web1", "web2"):
        status, body = akc(svc, w, host)
        out.append((host, status, body["keys"] if status == 200 else body))
        status, body = svc.call(
            "POST", "/api/v1/hook/account", w.host_tokens[host],
            {"login": "deploy", "fingerprint": w.keys["alice"].fingerprint},
        )  # fmt: skip
        out.append((host, status, body.get("decision"), body.get("reason")))
    return out


def counts(svc) -> dict:  # noqa: ANN001
    return {t: svc.sql(f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


@pytest.fixture
def sqlite_world(tmp_path):
    svc = start_service(tmp_path / "sqlite", database_url=None)
    try:
        w = seed(svc, tmp_path / "keys", approvers=2)
        approved = w.request("alice", "web1")["id"]
        w.approve("bob", approved)
        denied = w.request("alice", "web2", reason="INC-2 denied")["id"]
        assert w.call(w.tokens["bob"], "POST", f"/api/v1/requests/{denied}/deny", {})[0] == 200
        cancelled = w.request("alice", "web2", reason="INC-3 cancelled")["id"]
        assert w.call(w.tokens["alice"], "POST", f"/api/v1/requests/{cancelled}/cancel")[0] == 200
        revoked = w.request("alice", "web2", reason="INC-4 revoked")["id"]
        w.approve("carol", revoked)
        assert w.call(w.tokens["bob"], "POST", f"/api/v1/requests/{revoked}/revoke", {})[0] == 200
        w.request("alice", "web2")  # stays pending (one pending per host+login: the last)
        states = {r[0] for r in svc.sql("SELECT state FROM requests")}
        assert states == {"approved", "pending", "denied", "cancelled", "revoked"}
        yield svc, w
    finally:
        svc.stop()


def test_sqlite_installation_moves_to_postgresql_with_the_same_answers(sqlite_world, pg, tmp_path):
    svc, w = sqlite_world
    before_decisions = decisions(svc, w)
    assert before_decisions[0][2], "alice's key is let in on web1 before the move"
    before = counts(svc)
    svc.stop()  # a move: stop the service, copy, start on PostgreSQL

    url = pg.create_database("moved")
    r = jit_server("db", "copy", "--from", f"sqlite:///{svc.data_dir / 'jit.db'}", "--to", url)
    assert r.returncode == 0, r.stderr
    assert f"audit chain OK on the target: {before['audit_events']} events" in r.stdout

    moved = start_service(tmp_path / "pg", database_url=url)
    try:
        assert counts(moved) == before
        assert "audit chain OK" in moved.admin("audit", "verify")
        w.svc = moved
        assert decisions(moved, w) == before_decisions
        # The sequences were moved past the copied ids: new rows insert fine.
        top = moved.sql("SELECT max(id) FROM requests")[0][0]
        assert w.request("alice", "web1", reason="INC-5 after the move")["id"] == top + 1
        w.user("grace", "approver")
        assert "audit chain OK" in moved.admin("audit", "verify")
    finally:
        moved.stop()

    # The target now holds data: a second copy is refused and changes nothing.
    n = pg.psql("SELECT count(*) FROM requests", db="moved")
    r = jit_server("db", "copy", "--from", f"sqlite:///{svc.data_dir / 'jit.db'}", "--to", url)
    assert r.returncode == 1
    assert "the target already holds data" in r.stderr and "--replace" in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr  # one readable line, no traceback
    assert pg.psql("SELECT count(*) FROM requests", db="moved") == n

    # --replace overwrites it with the source's rows (the request made after the move goes).
    r = jit_server(
        "db", "copy", "--replace", "--from", f"sqlite:///{svc.data_dir / 'jit.db'}", "--to", url
    )
    assert r.returncode == 0, r.stderr
    assert pg.psql("SELECT count(*) FROM requests", db="moved") == str(before["requests"])

    # Backup and restore on PostgreSQL (docs/server.md): pg_dump -Fc, pg_restore into
    # an empty database; the chain verifies there and new ids follow the restored ones.
    dump = tmp_path / "jit.dump"
    conn = ["-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"]
    subprocess.run([str(PG_BIN / "pg_dump"), *conn, "-Fc", "-d", "moved", "-f", str(dump)],
                   check=True, timeout=120)  # fmt: skip
    pg.psql('CREATE DATABASE "restored" TEMPLATE template0')
    subprocess.run([str(PG_BIN / "pg_restore"), *conn, "--no-owner", "-d", "restored", str(dump)],
                   check=True, timeout=120)  # fmt: skip
    restored = pg.url("restored")
    r = jit_server("--database-url", restored, "audit", "verify")
    assert r.returncode == 0 and "audit chain OK" in r.stdout, r.stderr
    for table in TABLES:
        q = f"SELECT count(*) FROM {table}"
        assert pg.psql(q, db="restored") == pg.psql(q, db="moved"), table
    top = int(pg.psql("SELECT max(id) FROM requests", db="restored"))
    assert int(pg.psql("SELECT nextval('requests_id_seq')", db="restored")) == top + 1


def test_a_broken_source_chain_is_refused_and_the_target_stays_empty(sqlite_world, pg):
    svc, _ = sqlite_world
    svc.stop()
    svc.sql("UPDATE audit_events SET data = '{\"forged\":true}' WHERE seq = 2")
    url = pg.create_database("target")
    r = jit_server("db", "copy", "--from", f"sqlite:///{svc.data_dir / 'jit.db'}", "--to", url)
    assert r.returncode == 1
    assert "does not verify on the target" in r.stderr and "event 2" in r.stderr
    # One transaction: nothing of the copy landed (only the migrated, empty schema).
    for table in ("users", "hosts", "requests", "audit_events"):
        assert pg.psql(f"SELECT count(*) FROM {table}", db="target") == "0"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--from", "sqlite:///nonexistent/jit.db"], "no such SQLite file"),
        (["--from", "sqlite://"], "needs a file path"),
    ],
)
def test_bad_sources_are_one_line_errors(args, message, tmp_path):
    r = jit_server("db", "copy", *args, "--to", f"sqlite:///{tmp_path / 'target.db'}")
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "target.db").exists()


def test_unreachable_target_is_a_one_line_error(sqlite_world):
    svc, _ = sqlite_world
    r = jit_server(
        "db", "copy", "--from", f"sqlite:///{svc.data_dir / 'jit.db'}",
        "--to", "postgresql+psycopg://postgres@127.0.0.1:1/nothing",
    )  # fmt: skip
    assert r.returncode == 1 and "OperationalError" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr


def test_a_source_behind_the_schema_is_refused(tmp_path):
    from jit_hooks.server.db import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0003")
    engine.dispose()
    r = jit_server(
        "db", "copy", "--from", f"sqlite:///{tmp_path / 'old.db'}",
        "--to", f"sqlite:///{tmp_path / 'target.db'}",
    )  # fmt: skip
    assert r.returncode == 1 and "the source's schema is not current" in r.stderr, r.stderr


def test_only_the_listed_tables_are_filled_by_the_migrations(tmp_path):
    """An upgraded, unused database counts as empty: its rows are MIGRATION_SEEDED's only."""
    from jit_hooks.server.db import make_engine, upgrade
    from jit_hooks.server.dbcopy import MIGRATION_SEEDED, target_rows

    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        upgrade(engine)
        with engine.begin() as conn:
            assert target_rows(conn) == {}
            seeded = {t for t in MIGRATION_SEEDED if conn.exec_driver_sql(
                f"SELECT count(*) FROM {t}").scalar()}  # fmt: skip
        assert seeded == MIGRATION_SEEDED
    finally:
        engine.dispose()


def test_a_source_table_unknown_to_this_version_is_refused(tmp_path):
    from jit_hooks.server.db import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'src.db'}")
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE mystery (id INTEGER PRIMARY KEY)")
    finally:
        engine.dispose()
    r = jit_server(
        "db", "copy", "--from", f"sqlite:///{tmp_path / 'src.db'}",
        "--to", f"sqlite:///{tmp_path / 'target.db'}",
    )  # fmt: skip
    assert r.returncode == 1 and "does not know: mystery" in r.stderr, r.stderr
