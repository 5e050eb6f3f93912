"""The audit as the running service keeps it: its own fold, its own checkpoints, a key storm.

A real jit-server process over real HTTP on the suite's backend. On PostgreSQL
the hook calls only INSERT their events and the service's fold chains them;
on SQLite they are chained at once and the fold closes miss windows and
exports checkpoints.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jit_hooks.testing.keys import make_key
from jit_hooks.testing.service import start_service
from tests.server.conftest import build_world
from tests.utils.audit_counts import hook_decisions

WINDOW = 3  # seconds: JIT_AUDIT_MISS_WINDOW for these services
FOLD_MS = 100


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("JIT_AUDIT_MISS_WINDOW", str(WINDOW))
    monkeypatch.setenv("JIT_AUDIT_FOLD_INTERVAL_MS", str(FOLD_MS))
    monkeypatch.setenv("JIT_AUDIT_CHECKPOINT_EVENTS", "5")
    monkeypatch.setenv("JIT_AUDIT_SYSLOG", "0")
    svc = start_service(tmp_path / "server")
    try:
        yield build_world(svc, tmp_path)
    finally:
        svc.stop()


def _until(check, what: str, timeout: float = 30.0):  # noqa: ANN001, ANN202
    """Poll until check() is truthy (the fold runs in the background); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_key_storm_is_counted_not_written_row_by_row(world, tmp_path):
    """20 connections x 5 keys nobody registered, for a valid login: every offer is
    accounted for (first events + repeats == 100), rows stay bounded by
    fingerprints x windows, and the chain verifies."""
    w = world
    strangers = [make_key(tmp_path, f"stranger{i}") for i in range(5)]
    before = w.svc.sqlite("SELECT count(*) FROM audit_events")[0][0]

    def offer(i: int) -> int:
        k = strangers[i % 5]
        body = {"login": "deploy", "fingerprint": k.fingerprint, "key_type": k.key_type,
                "key": k.blob}  # fmt: skip
        code, answer = w.call("web1", "POST", "/api/v1/hook/authorized-keys", body)
        assert code == 200 and answer["keys"] == [], answer
        return code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(offer, range(100))) == [200] * 100

    fps = {k.fingerprint for k in strangers}

    def storm_events() -> list[tuple[str, dict]]:
        rows = w.svc.sqlite(
            "SELECT kind, data FROM audit_events WHERE kind LIKE 'hook.authorized_keys%'"
        )
        return [(k, json.loads(d)) for k, d in rows if json.loads(d)["fingerprint"] in fps]

    def settled() -> list | None:
        # Every window of the storm closed and folded: no miss rows left.
        left = w.svc.sqlite("SELECT count(*) FROM audit_miss_rows")[0][0]
        return None if left else storm_events()

    events = _until(settled, "the miss windows to close and fold")
    firsts = [d for k, d in events if k == "hook.authorized_keys"]
    repeats = [d for k, d in events if k == "hook.authorized_keys.repeated"]
    assert all(d["decision"] == "deny" for d in firsts + repeats)
    assert len(firsts) + sum(d["repeats"] for d in repeats) == 100  # every offer counted
    per_fp = {fp: 0 for fp in fps}
    for d in firsts:
        per_fp[d["fingerprint"]] += 1
    for d in repeats:
        per_fp[d["fingerprint"]] += d["repeats"]
    assert per_fp == {fp: 20 for fp in fps}
    # Bounded: at most one first event and one repeat event per fingerprint and window.
    windows = {d["window_start"] for d in repeats} | {1}
    assert len(events) <= 2 * len(fps) * (len(windows) + 1) < 100
    after = w.svc.sqlite("SELECT count(*) FROM audit_events")[0][0]
    assert after - before == len(events)
    out = w.svc.admin("audit", "verify")
    assert "audit chain OK" in out


def test_the_service_folds_and_exports_checkpoints_that_catch_a_cut_tail(world):
    w = world
    _, req = w.request("alice")
    assert w.call("bob", "POST", f"/api/v1/requests/{req['id']}/approve")[0] == 200
    # Twelve audited hook decisions (account checks: repeated AKC allows are counted).
    acct = {"login": "deploy", "fingerprint": w.keys["alice"].fingerprint}
    for _ in range(12):
        code, answer = w.call("web1", "POST", "/api/v1/hook/account", acct)
        assert code == 200 and answer["decision"] == "allow", answer
    head = _until(
        lambda: (
            w.svc.sqlite("SELECT count(*) FROM audit_events WHERE seq IS NULL")[0][0] == 0
            and w.svc.sqlite("SELECT last_id FROM audit_head")[0][0]
        ),
        "the service's fold",
    )
    cps: Path = w.svc.data_dir / "audit-checkpoints.jsonl"

    def checkpointed() -> int | None:
        if not cps.exists():
            return None
        seqs = [json.loads(x)["signed"]["seq"] for x in cps.read_text().splitlines()]
        return max(seqs) if seqs and max(seqs) >= head - 4 else None

    last = _until(checkpointed, "a checkpoint near the head")
    assert "checkpoints match" in w.svc.admin("audit", "verify", "--checkpoints", str(cps))
    w.svc.stop()  # the attacker works on the database at rest
    w.svc.sqlite(f"DELETE FROM audit_events WHERE seq >= {last - 1}")
    row = w.svc.sqlite(f"SELECT hash FROM audit_events WHERE seq = {last - 2}")[0]
    w.svc.sqlite(f"UPDATE audit_head SET last_id = {last - 2}, hash = '{row[0]}'")
    w.svc.admin("audit", "verify")  # the chain alone cannot tell
    r = subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(w.svc.data_dir),
         *w.svc.db_args(), "audit", "verify", "--checkpoints", str(cps)],
        capture_output=True, text=True, env=w.svc.env, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1
    assert f"the chain ends at seq {last - 2}" in r.stderr


@pytest.fixture
def quiet_world(tmp_path, monkeypatch):
    """A service whose fold does not run during the test (10 min interval)."""
    monkeypatch.setenv("JIT_AUDIT_FOLD_INTERVAL_MS", "600000")
    monkeypatch.setenv("JIT_AUDIT_SYSLOG", "0")
    svc = start_service(tmp_path / "server")
    try:
        yield build_world(svc, tmp_path)
    finally:
        svc.stop()


def test_the_api_lists_events_with_their_seq_and_never_fails_on_unfolded_ones(quiet_world):
    """An event the fold has not chained yet (as the PostgreSQL login path leaves them)
    does not make GET /api/v1/audit fail: the events carry seq, and any not yet in the
    chain come last with null seq and hashes (or are folded first)."""
    w = quiet_world
    w.svc.sqlite(
        "INSERT INTO audit_events (at, kind, actor, host, data) "
        "VALUES (1, 'test.unfolded', NULL, NULL, '{}')"
    )
    code, body = w.call("root-admin", "GET", "/api/v1/audit?limit=1000")
    assert code == 200, body
    events = body["events"]
    folded = [e for e in events if e["seq"] is not None]
    assert [e["seq"] for e in folded] == list(range(1, len(folded) + 1))
    assert events[: len(folded)] == folded
    assert all(e["prev_hash"] is None and e["hash"] is None for e in events[len(folded) :])
    assert "audit chain OK" in w.svc.admin("audit", "verify")  # folds first
    code, body = w.call("root-admin", "GET", "/api/v1/audit?limit=1000")
    last = body["events"][-1]
    assert (last["kind"], last["seq"]) == ("test.unfolded", len(body["events"]))


def test_repeated_key_allows_are_counted_and_the_login_is_audited_by_the_account_hook(world):
    """Review finding: anyone holding alice's public key can make sshd ask (a publickey
    query needs no signature); 200 asks wrote 200 'allow' events naming alice. Now the
    key stage is counted like a miss, per (host, login, fingerprint, approval, window)."""
    w = world
    _, req = w.request("alice")
    assert w.call("bob", "POST", f"/api/v1/requests/{req['id']}/approve")[0] == 200
    fp = w.keys["alice"].fingerprint
    before = hook_decisions(w.svc.sqlite)

    def ask(_: int) -> int:
        code, answer = w.akc("web1", "alice")
        assert code == 200 and len(answer["keys"]) == 1, answer
        return code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(ask, range(200))) == [200] * 200
    assert hook_decisions(w.svc.sqlite) - before == 200  # every ask accounted for at once

    def key_events() -> list[tuple[str, str | None, dict]]:
        rows = w.svc.sqlite(
            "SELECT kind, actor, data FROM audit_events WHERE kind LIKE 'hook.authorized_keys%'"
        )
        return [(k, a, json.loads(d)) for k, a, d in rows if json.loads(d)["fingerprint"] == fp]

    def settled() -> list | None:
        left = w.svc.sqlite("SELECT count(*) FROM audit_key_allows")[0][0]
        return None if left else key_events()

    events = _until(settled, "the allow windows to close and fold")
    firsts = [d for k, _, d in events if k == "hook.authorized_keys"]
    repeats = [d for k, _, d in events if k == "hook.authorized_keys.repeated"]
    assert all(d["decision"] == "allow" and d["request_id"] == req["id"] for d in firsts + repeats)
    assert {a for _, a, _ in events} == {"alice"}  # whose key was offered
    assert len(firsts) + sum(d["repeats"] for d in repeats) == 200
    windows = {d["window_start"] for d in repeats}
    assert len(events) <= 2 * (len(windows) + 1) < 20  # bounded, not 200

    # The login decision is the account hook's, audited call by call.
    acct = {"login": "deploy", "fingerprint": fp, "connection": "7:8"}
    for _ in range(2):
        code, answer = w.call("web1", "POST", "/api/v1/hook/account", acct)
        assert code == 200 and answer["decision"] == "allow", answer
    rows = w.svc.sqlite("SELECT actor, data FROM audit_events WHERE kind = 'hook.account'")
    decided = [(a, json.loads(d)) for a, d in rows if json.loads(d).get("fingerprint") == fp]
    assert [(a, d["decision"], d["request_id"]) for a, d in decided] == [
        ("alice", "allow", req["id"])
    ] * 2
    assert "audit chain OK" in w.svc.admin("audit", "verify")
