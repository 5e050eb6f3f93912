"""`jit request --from`, `jit extend`, `jit drop`, `jit usage` and `jit-server report usage`,
run as real processes against a real service (its own: the policy allows extensions)."""

from __future__ import annotations

import csv
import io
import json
import subprocess

import pytest

from jit_hooks.testing.service import start_service
from tests.cli.conftest import USERS, World
from tests.cli.test_jit import one_error_line

POLICY = """
[[policy]]
name = "web-ext"
hosts = ["web1"]
logins = ["deploy"]
requesters = { roles = ["requester"] }
approvers = { roles = ["approver"] }
approvals_required = 1
max_duration = 14400
reason_required = false
max_extension = 3600
extension_approvals = 1
allowed_from = ["10.0.0.0/8", "192.0.2.0/24"]
"""


@pytest.fixture(scope="module")
def gworld(tmp_path_factory):
    svc = start_service(tmp_path_factory.mktemp("grants-service"))
    try:
        tokens = {}
        for name, roles in USERS.items():
            svc.admin("user", "add", name, *[a for r in roles for a in ("--role", r)])
            tokens[name] = svc.admin("token", "create", name).strip()
        tokens["web1"] = svc.admin("host", "add", "web1").strip()
        policy = svc.data_dir / "policy.toml"
        policy.write_text(POLICY)
        svc.admin("policy", "add", str(policy))
        yield World(service=svc, tokens=tokens)
    finally:
        svc.stop()


def request(j, *extra: str) -> dict:
    out = j.ok("request", "web1", "-l", "deploy", "-d", "1h", "--json", *extra)
    return json.loads(out)


def test_request_from_extend_drop(gworld, tmp_path):
    alice = gworld.logged_in(tmp_path, "alice")
    bob = gworld.logged_in(tmp_path, "bob")

    r = alice("request", "web1", "-l", "deploy", "-d", "1h", "--from", "10.0.0.1/8")
    assert r.returncode == 1 and "from_cidrs" in one_error_line(r.stderr)
    r = alice("request", "web1", "-l", "deploy", "-d", "1h", "--from", "172.16.0.0/12")
    assert r.returncode == 1 and "outside the ranges" in one_error_line(r.stderr)
    req = request(alice, "--from", "192.0.2.9,10.0.0.0/8", "--from", "10.0.0.0/8")
    assert req["from_cidrs"] == ["10.0.0.0/8", "192.0.2.9/32"]
    rid = str(req["id"])
    ends = json.loads(bob.ok("approve", rid, "--json"))["ends_at"]

    # Somebody else's grant: refused with one line.
    r = bob("extend", rid, "--for", "30m")
    assert r.returncode == 1 and "requester" in one_error_line(r.stderr)
    out = alice.ok("extend", rid, "--for", "30m", "-r", "still on it")
    assert "waits for 1 approval" in out
    assert "extension:" in alice.ok("show", rid) and "+30m pending" in alice.ok("show", rid)
    review = json.loads(bob.ok("list", "--review", "--json"))
    assert [x["id"] for x in review] == [req["id"]]
    assert "(+30m asked)" in bob.ok("list", "--review")
    bob.ok("approve", rid)
    shown = json.loads(alice.ok("show", rid, "--json"))
    assert (shown["ends_at"], shown["extended_seconds"]) == (ends + 1800, 1800)
    assert "extended by: 30m" in alice.ok("show", rid).replace("  ", " ")
    r = alice("extend", rid, "--for", "31m")
    assert r.returncode == 1 and "at most 1800" in one_error_line(r.stderr)

    r = bob("drop", rid)
    assert r.returncode == 1 and "requester" in one_error_line(r.stderr)
    assert "dropped" in alice.ok("drop", rid)
    assert json.loads(alice.ok("show", rid, "--json"))["state"] == "dropped"
    r = alice("drop", rid)
    assert r.returncode == 1 and "dropped" in one_error_line(r.stderr)


def test_usage_report_csv_and_json(gworld, tmp_path):
    svc = gworld.service
    alice = gworld.logged_in(tmp_path, "alice")
    bob = gworld.logged_in(tmp_path, "bob")
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    added = json.loads(alice.ok("keys", "add", f"{key}.pub", "--json"))
    used = request(alice, "--from", "10.1.2.0/24")  # the policy has allowed_from: pins
    bob.ok("approve", str(used["id"]))
    # A host reports one session of the used grant, from 10.1.2.3 with alice's key.
    parts = (tmp_path / "id.pub").read_text().split()
    body = {"event": "open", "login": "deploy", "rhost": "10.1.2.3", "connection": "21:21",
            "key_type": parts[0], "key": parts[1], "fingerprint": added["fingerprint"]}  # fmt: skip
    status, ans = svc.call("POST", "/api/v1/hook/session", gworld.tokens["web1"], body)
    assert (status, ans["decision"]) == (200, "allow"), ans
    status, _ = svc.call(
        "POST", "/api/v1/hook/session", gworld.tokens["web1"], body | {"event": "close"}
    )
    assert status == 200
    # Fixed times (the report's arithmetic, not the clock, is under test).
    svc.sql("UPDATE sessions SET opened_at = closed_at - 600 WHERE connection = '21:21'")
    alice.ok("drop", str(used["id"]))
    unused = request(alice, "--from", "10.1.2.0/24")
    bob.ok("approve", str(unused["id"]))

    carol = gworld.logged_in(tmp_path, "carol")  # admin
    rows = list(csv.DictReader(io.StringIO(carol.ok("usage", "--format", "csv"))))
    by_id = {int(r["request_id"]): r for r in rows}
    u = by_id[used["id"]]
    assert (u["used"], u["sessions"], u["sources"], u["keys"]) == (
        "yes", "1", "10.1.2.3", added["fingerprint"],
    )  # fmt: skip
    # An approver learns how many keys someone else used, not which.
    rows = list(csv.DictReader(io.StringIO(bob.ok("usage", "--format", "csv"))))
    assert {int(r["request_id"]): r["keys"] for r in rows}[used["id"]] == "key-1"
    assert (u["total_seconds"], u["longest_seconds"], u["state"]) == ("600", "600", "dropped")
    assert (by_id[unused["id"]]["used"], by_id[unused["id"]]["sessions"]) == ("no", "0")

    report = json.loads(bob.ok("usage", "--format", "json", "--since", "1d"))
    assert unused["id"] in report["summary"]["never_used"]
    assert used["id"] not in report["summary"]["never_used"]
    table = bob.ok("usage")
    assert "never used" in table and f"#{unused['id']}" in table

    # The admin CLI gives the same report, CSV and JSON.
    rows = list(csv.DictReader(io.StringIO(svc.admin("report", "usage", "--format", "csv"))))
    assert {int(r["request_id"]): r["used"] for r in rows}[used["id"]] == "yes"
    report = json.loads(svc.admin("report", "usage", "--format", "json", "--since", "2000-01-01"))
    [entry] = [a for a in report["approvals"] if a["request_id"] == used["id"]]
    assert entry["keys"] == [added["fingerprint"]] and entry["hosts"] == ["web1"]
    # A date in the future: nothing reached it.
    empty = json.loads(svc.admin("report", "usage", "--format", "json", "--since", "2199-01-01"))
    assert empty["approvals"] == []

    # A requester does not see the report.
    r = alice("usage")
    assert r.returncode == 1 and "approver" in one_error_line(r.stderr)


def test_since_is_a_date_or_a_span_ago():
    import click

    from jit_hooks.server.report_cli import parse_since

    assert parse_since("2026-11-01", 0) == 1793491200  # UTC midnight
    assert parse_since("2d", 1_000_000) == 1_000_000 - 2 * 86400
    with pytest.raises(click.BadParameter, match="neither"):
        parse_since("yesterday", 0)
