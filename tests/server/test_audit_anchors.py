"""Anchors outside the database (issue 15 item 2): signed checkpoints and archives.

Real `jit-server` processes on a real SQLite file; the attacks are the outside
review's: cut the tail and rewrite the head, wipe everything, rewrite history.
A chain alone cannot see the first and third; the checkpoints must.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jit_hooks.server import audit


class Cli:
    """`jit-server` on a data dir (key, checkpoints) and a fresh database of the suite's backend."""

    def __init__(self, data_dir: Path) -> None:
        from jit_hooks.testing import service

        self.data_dir = data_dir
        self.env = {**os.environ, "JIT_AUDIT_SYSLOG": "0"}
        factory = getattr(service, "database_factory", None)
        self.url = factory() if factory else f"sqlite:///{data_dir / 'jit.db'}"
        self.db_args = ["--database-url", self.url] if factory else []

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(self.data_dir),
             *self.db_args, *args],
            capture_output=True, text=True, timeout=60, env=self.env,
        )  # fmt: skip
        if ok is not None:
            assert (r.returncode == 0) == ok, r.stderr + r.stdout
        return r

    def sql(self, stmt: str, **params: object) -> list:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url)
        try:
            with engine.begin() as conn:
                r = conn.execute(text(stmt), params)
                return [tuple(row) for row in r] if r.returns_rows else []
        finally:
            engine.dispose()

    @property
    def checkpoints(self) -> Path:
        return self.data_dir / "audit-checkpoints.jsonl"


@pytest.fixture
def cli(tmp_path) -> Cli:
    """Six audited changes and two checkpoints (seq 4 and 6) of the suite's backend.

    Set up in-process (as `jit-server` would: store functions, then a fold) to
    spare a dozen process starts per test; the second checkpoint is made by the CLI.
    """
    from jit_hooks.server import checkpoints, fold, store
    from jit_hooks.server.db import make_engine, upgrade

    c = Cli(tmp_path / "srv")
    c.data_dir.mkdir(mode=0o700)
    engine = make_engine(c.url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            for name in ("alice", "bob", "carol"):
                store.add_user(conn, name=name, roles=["requester"], actor="t", now=1000)
            store.add_host(conn, name="web1", labels={}, actor="t", now=1001)
        fold.fold_now(engine, now=1002)
        key = checkpoints.load_key(c.data_dir / "audit-signing.key")
        with engine.begin() as conn:
            doc = checkpoints.make(conn, key, now=1002)
        checkpoints.export(doc, file=c.checkpoints, to_syslog=False)  # seq 4
        with engine.begin() as conn:
            store.add_user(conn, name="dave", roles=["approver"], actor="t", now=1003)
            store.disable_user(conn, name="carol", actor="t", now=1004)
    finally:
        engine.dispose()
    c("audit", "checkpoint")  # seq 6
    return c


def _rechain(cli: Cli, upto: int) -> None:
    """What an attacker with the database does after an edit: recompute every hash and the head."""
    rows = cli.sql("SELECT seq, at, kind, actor, host, data FROM audit_events ORDER BY seq")
    prev = audit.GENESIS
    for seq, at, kind, actor, host, data in rows[:upto]:
        h = audit.event_hash(
            id=seq, at=at, kind=kind, actor=actor, host=host, data=data, prev_hash=prev
        )
        cli.sql(
            "UPDATE audit_events SET prev_hash = :p, hash = :h WHERE seq = :s", p=prev, h=h, s=seq
        )
        prev = h
    cli.sql("UPDATE audit_head SET last_id = :s, hash = :h", s=min(upto, len(rows)), h=prev)


def test_intact_chain_matches_its_checkpoints(cli):
    lines = cli.checkpoints.read_text().splitlines()
    assert [json.loads(x)["signed"]["seq"] for x in lines] == [4, 6]
    assert oct(cli.checkpoints.stat().st_mode & 0o777) == "0o600"
    assert oct((cli.data_dir / "audit-signing.key").stat().st_mode & 0o777) == "0o600"
    r = cli("audit", "verify", "--checkpoints", str(cli.checkpoints))
    assert "audit chain OK: 6 events" in r.stdout and "2 checkpoints match" in r.stdout


def test_cut_tail_with_rewritten_head_is_caught_by_the_checkpoints(cli):
    """Reviewer's attack 1: delete the last events and move audit_head back."""
    cli.sql("DELETE FROM audit_events WHERE seq > 5")  # carol's disabling goes
    _rechain(cli, 5)
    cli("audit", "verify")  # the chain alone still looks whole (5 events, 5 users+hosts)
    r = cli("audit", "verify", "--checkpoints", str(cli.checkpoints), ok=False)
    assert "checkpoint 2 (seq 6" in r.stderr and "the chain ends at seq 5" in r.stderr
    assert "cut off or the log was wiped" in r.stderr


def test_wipe_is_caught_with_and_without_checkpoints(cli):
    """Reviewer's attack 2: delete every event and the head (then put an empty head back)."""
    cli.sql("DELETE FROM audit_events")
    cli.sql("DELETE FROM audit_head")
    r = cli("audit", "verify", ok=False)
    assert "chain head record is missing" in r.stderr
    cli.sql("INSERT INTO audit_head (id, last_id, hash) VALUES (1, 0, :h)", h=audit.GENESIS)
    r = cli("audit", "verify", ok=False)
    assert "holds 0 events" in r.stderr and "5 users, hosts and requests" in r.stderr
    r = cli("audit", "verify", "--checkpoints", str(cli.checkpoints), ok=False)
    assert "checkpoint 1 (seq 4" in r.stderr and "checkpoint 2 (seq 6" in r.stderr


def test_rewritten_history_is_caught_by_the_checkpoints(cli):
    cli.sql("UPDATE audit_events SET actor = 'cli:nobody' WHERE seq = 2")
    _rechain(cli, 6)
    cli("audit", "verify")  # internally consistent again
    r = cli("audit", "verify", "--checkpoints", str(cli.checkpoints), ok=False)
    assert "event 4 has another hash: rewritten" in r.stderr
    assert "event 6 has another hash: rewritten" in r.stderr


def test_forged_checkpoint_is_refused(cli, tmp_path):
    other = Cli(tmp_path / "other")
    other("db", "upgrade")
    other("audit", "checkpoint")
    r = cli("audit", "verify", "--checkpoints", str(other.checkpoints), ok=False)
    assert "checkpoint 1: bad signature" in r.stderr
    doc = json.loads(cli.checkpoints.read_text().splitlines()[0])
    doc["signed"]["seq"] = 5  # moved to another event: the signature no longer holds
    forged = tmp_path / "forged.jsonl"
    forged.write_text(json.dumps(doc) + "\n")
    r = cli("audit", "verify", "--checkpoints", str(forged), ok=False)
    assert "bad signature" in r.stderr


def test_pubkey_verifies_without_the_private_key(cli, tmp_path):
    pub = tmp_path / "audit.pub"
    pub.write_text(cli("audit", "pubkey").stdout)
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    (cli.data_dir / "audit-signing.key").rename(tmp_path / "away.key")
    cli("audit", "verify", "--checkpoints", str(cli.checkpoints), "--pubkey", str(pub))


# -- archives (issue 15 item 2, retention) ------------------------------------------


def _tomorrow() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).date().isoformat()


def test_archive_moves_events_out_and_verify_joins_them(cli, tmp_path):
    out = tmp_path / "audit-1.jsonl.gz"
    cli("audit", "archive", "--before", _tomorrow(), "--out", str(out))
    assert cli.sql("SELECT count(*) FROM audit_events") == [(0,)]
    assert cli.sql("SELECT first_seq, last_seq, events FROM audit_archives") == [(1, 6, 6)]
    cli("host", "add", "web2")
    cli("audit", "checkpoint")  # seq 7
    cps = str(cli.checkpoints)
    # Without the archive: fine, the chain starts at the marker ...
    r = cli("audit", "verify")
    assert "1 events (seq 7-7)" in r.stdout and "starts at seq 7" in r.stderr
    # ... but checkpoints older than the marker need the archive.
    r = cli("audit", "verify", "--checkpoints", cps, ok=False)
    assert "older than the database's chain start (seq 7)" in r.stderr
    r = cli("audit", "verify", "--checkpoints", cps, "--archive", str(out))
    assert "3 checkpoints match" in r.stdout and "6 archived events in 1 archives" in r.stdout


def test_tampered_or_foreign_archive_fails(cli, tmp_path):
    out = tmp_path / "a.jsonl.gz"
    cli("audit", "archive", "--before", _tomorrow(), "--out", str(out))
    lines = gzip.decompress(out.read_bytes()).decode().splitlines()
    event = json.loads(lines[1])
    event["actor"] = "cli:nobody"
    lines[1] = json.dumps(event, sort_keys=True, separators=(",", ":"))
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    r = cli("audit", "verify", "--archive", str(bad), ok=False)
    assert "does not chain (tampered)" in r.stderr
    del lines[-2]  # drop the newest archived event
    bad.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    r = cli("audit", "verify", "--archive", str(bad), ok=False)
    assert "tampered" in r.stderr
    cli("audit", "verify", "--archive", str(out))


def test_archive_refuses_bad_date_and_existing_file(cli, tmp_path):
    r = cli("audit", "archive", "--before", "yesterday", "--out", str(tmp_path / "x"), ok=False)
    assert "expected a date" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "x").write_text("")
    r = cli("audit", "archive", "--before", _tomorrow(), "--out", str(tmp_path / "x"), ok=False)
    assert "never overwritten" in r.stderr
    assert cli.sql("SELECT count(*) FROM audit_events") == [(6,)]


def test_checkpoints_of_several_replica_keys_verify_with_all_their_pubkeys(cli, tmp_path):
    """Replicas that do not share a key: each signs its own checkpoints; verify takes
    every replica's public key (--pubkey repeated) and still refuses an unknown one."""
    from sqlalchemy import create_engine

    from jit_hooks.server import checkpoints

    key_b = checkpoints.load_key(tmp_path / "replica-b.key")
    engine = create_engine(cli.url)
    try:
        with engine.begin() as conn:
            doc = checkpoints.make(conn, key_b, now=2000)
    finally:
        engine.dispose()
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(cli.checkpoints.read_text() + json.dumps(doc) + "\n")
    pub_a, pub_b = tmp_path / "a.pub", tmp_path / "b.pub"
    pub_a.write_text(cli("audit", "pubkey").stdout)
    pub_b.write_text(checkpoints.public_pem(key_b))
    r = cli("audit", "verify", "--checkpoints", str(mixed), "--pubkey", str(pub_a),
            "--pubkey", str(pub_b))  # fmt: skip
    assert "3 checkpoints match" in r.stdout
    r = cli("audit", "verify", "--checkpoints", str(mixed), "--pubkey", str(pub_a), ok=False)
    assert "checkpoint 3: bad signature" in r.stderr


# -- review findings: forged archive markers, key and archive file hygiene -------------


def test_wipe_behind_a_forged_archive_marker_fails(cli):
    """Review PoC: delete every event and plant one audit_archives row claiming they were
    archived (it chains the head's hash and keeps the event count); nothing signed backs it."""
    (last, head_hash), = cli.sql("SELECT last_id, hash FROM audit_head")  # fmt: skip
    cli.sql("DELETE FROM audit_events")
    cli.sql(
        "INSERT INTO audit_archives (first_seq, last_seq, prev_hash, last_hash, events, at, "
        "file, digest) VALUES (1, :s, :g, :h, :s, 1005, '/nowhere.gz', '00')",
        s=last, g=audit.GENESIS, h=head_hash,
    )  # fmt: skip
    r = cli("audit", "verify", ok=False)
    assert "archive marker not backed by a signed manifest" in r.stderr
    r = cli("audit", "verify", "--checkpoints", str(cli.checkpoints), ok=False)
    assert "archive marker not backed by a signed manifest" in r.stderr
    # The checkpoint at the forged marker's last seq no longer matches its DB-supplied hash.
    assert "checkpoint 2 (seq 6" in r.stderr and "possible tampering" in r.stderr


def test_a_moved_archive_marker_fails_against_its_signed_manifest(cli, tmp_path):
    """A genuine marker edited to hide events deleted after the archive."""
    out = tmp_path / "a.jsonl.gz"
    cli("audit", "archive", "--before", _tomorrow(), "--out", str(out))
    (manifest,) = cli.sql("SELECT manifest FROM audit_archives")[0]
    assert json.loads(manifest)["signed"]["last_seq"] == 6  # the signed manifest is kept
    cli("host", "add", "web2")  # seq 7
    cli("host", "add", "web3")  # seq 8
    cli("audit", "verify")  # the signed manifest vouches for the start at seq 7
    (h7,) = cli.sql("SELECT hash FROM audit_events WHERE seq = 7")[0]
    cli.sql("DELETE FROM audit_events WHERE seq = 7")
    cli.sql("UPDATE audit_archives SET last_seq = 7, last_hash = :h, events = 7", h=h7)
    r = cli("audit", "verify", ok=False)
    assert "another hash than the signed archive manifest" in r.stderr
    r = cli("audit", "verify", "--archive", str(out), ok=False)
    assert "do not join" in r.stderr


def test_marker_without_a_key_to_check_it_fails(cli, tmp_path):
    out = tmp_path / "a.jsonl.gz"
    cli("audit", "archive", "--before", _tomorrow(), "--out", str(out))
    (cli.data_dir / "audit-signing.key").rename(tmp_path / "away.key")
    r = cli("audit", "verify", ok=False)
    assert "archive marker not backed by a signed manifest" in r.stderr
    pub = tmp_path / "a.pub"
    from jit_hooks.server import checkpoints

    pub.write_text(checkpoints.public_pem(checkpoints.load_key(tmp_path / "away.key")))
    cli("audit", "verify", "--pubkey", str(pub))
    cli("audit", "verify", "--archive", str(out), "--pubkey", str(pub))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_a_signing_key_others_can_reach_is_refused(cli, mode):
    key = cli.data_dir / "audit-signing.key"
    key.chmod(mode)
    r = cli("audit", "checkpoint", ok=False)
    assert f"mode {mode:04o}" in r.stderr and "chmod 600" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_signing_key_of_another_user_or_a_symlink_is_refused(cli, tmp_path):
    key = cli.data_dir / "audit-signing.key"
    os.chown(key, 4321, -1)
    r = cli("audit", "checkpoint", ok=False)
    assert "owned by uid 4321" in r.stderr
    os.chown(key, os.geteuid(), -1)
    key.rename(tmp_path / "real.key")
    key.symlink_to(tmp_path / "real.key")
    r = cli("audit", "checkpoint", ok=False)
    assert "symlink is refused" in r.stderr


def test_archive_never_follows_a_symlink_at_its_staging_name(cli, tmp_path):
    out = tmp_path / "a.jsonl.gz"
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "a.jsonl.gz.tmp").symlink_to(victim)
    r = cli("audit", "archive", "--before", _tomorrow(), "--out", str(out), ok=False)
    assert "exists" in r.stderr and "Traceback" not in r.stderr
    assert victim.read_text() == "keep me" and not out.exists()
    assert cli.sql("SELECT count(*) FROM audit_events") == [(6,)]


def test_archive_file_appears_only_after_the_commit(cli, tmp_path):
    """The marker insert fails (a trigger: a real database error inside the transaction):
    the events stay in the database and no archive file claims them."""
    if cli.url.startswith("sqlite"):
        cli.sql(
            "CREATE TRIGGER no_archive BEFORE INSERT ON audit_archives "
            "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
        )
    else:
        cli.sql(
            "CREATE FUNCTION no_archive() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by test trigger'; END $$"
        )
        cli.sql(
            "CREATE TRIGGER no_archive BEFORE INSERT ON audit_archives "
            "FOR EACH ROW EXECUTE FUNCTION no_archive()"
        )
    out = tmp_path / "a.jsonl.gz"
    r = cli("audit", "archive", "--before", _tomorrow(), "--out", str(out), ok=False)
    assert "refused by test trigger" in r.stderr
    assert not out.exists() and not (tmp_path / "a.jsonl.gz.tmp").exists()
    assert cli.sql("SELECT count(*) FROM audit_events") == [(6,)]
    cli("audit", "verify", "--checkpoints", str(cli.checkpoints))
