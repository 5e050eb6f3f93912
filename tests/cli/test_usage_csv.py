"""`jit usage` on sources recorded before the service checked rhost (sessions review H2):
the CSV cell cannot start a formula, the table and CSV carry no escape sequence.
Real `jit` processes against a real service; the old row is written with SQL."""

from __future__ import annotations

import csv
import io
import json

import pytest

from jit_hooks.testing.service import start_service
from tests.cli.conftest import POLICY, USERS, World

FORMULA = "-2+3+cmd|' /C calc'!A0"
ESCAPE = '=HYPERLINK("http://evil/")\x1b]2;owned\x07'


@pytest.fixture(scope="module")
def uworld(tmp_path_factory):
    svc = start_service(tmp_path_factory.mktemp("usage-csv"))
    try:
        tokens = {}
        for name, roles in USERS.items():
            svc.admin("user", "add", name, *[a for r in roles for a in ("--role", r)])
            tokens[name] = svc.admin("token", "create", name).strip()
        svc.admin("host", "add", "web1")
        svc.admin("host", "add", "db1", "--label", "env=prod", "--label", "team=db")
        policy = svc.data_dir / "policy.toml"
        policy.write_text(POLICY)
        svc.admin("policy", "add", str(policy))
        yield World(service=svc, tokens=tokens)
    finally:
        svc.stop()


def test_jit_usage_csv_and_table_neutralise_old_sources(uworld, tmp_path):
    svc = uworld.service
    alice = uworld.logged_in(tmp_path, "alice")
    bob = uworld.logged_in(tmp_path, "bob")
    req = json.loads(alice.ok("request", "web1", "-l", "deploy", "-d", "1h", "-r", "x", "--json"))
    bob.ok("approve", str(req["id"]))
    for n, rhost in enumerate((FORMULA, ESCAPE)):
        svc.sql(
            "INSERT INTO sessions (host_id, login, user_id, request_id, connection, rhost, "
            "opened_at) SELECT h.id, r.login, r.requester_id, r.id, ?, ?, r.starts_at "
            "FROM requests r JOIN hosts h ON h.name = 'web1' WHERE r.id = ?",
            (f"9{n}:1", rhost, req["id"]),
        )
    out = bob.ok("usage", "--format", "csv")
    assert "\x1b" not in out and "\x07" not in out
    [row] = [r for r in csv.DictReader(io.StringIO(out)) if r["request_id"] == str(req["id"])]
    assert row["sources"].startswith("'-2+3+cmd"), row
    assert all(not v.startswith(("=", "+", "-", "@")) for v in row.values()), row
    table = bob.ok("usage")
    assert "\x1b" not in table and "\x07" not in table
