"""Root's `serve` (and `audit pubkey/checkpoint/archive`, which make the signing
key) on the service user's data directory is refused, and init, run
as root on such a directory, says to run the service as its owner.

serve makes the audit signing key and checkpoints (and SQLite's WAL files) in the
data directory, 0600 to whoever runs it. Run once as root (init's next steps said
`jit-server --data-dir /var/lib/jit-server serve ...`, run as root), they were
root's, and the packaged service, started later as jit-server, failed its audit
folding on every round (PermissionError on audit-signing.key).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jit_hooks.testing.service import free_port
from tests.server.test_cli import ok, one_line_error, run

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.fixture(autouse=True)
def _sqlite_only(db_backend: str) -> None:
    if db_backend != "sqlite":
        pytest.skip("the data dir's SQLite file")


def test_root_serve_on_a_users_data_dir_is_refused_before_writing(tmp_path):
    d = tmp_path / "data"
    ok(d, "db", "upgrade")
    for p in (d, *d.rglob("*")):
        os.chown(p, NOBODY, NOBODY)
    before = sorted(p.name for p in d.iterdir())
    r = subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(d),
         "serve", "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,  # the old code served on (until this timeout)
    )  # fmt: skip
    line = one_line_error(r)
    assert f"{d} belongs to nobody: run the service as nobody" in line, line
    assert sorted(p.name for p in d.iterdir()) == before  # no audit key made as root


def test_init_as_root_on_a_users_data_dir_says_to_serve_as_its_owner(tmp_path):
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    os.chown(d, NOBODY, NOBODY)
    r = run(d, "init", "--name", "localhost")
    assert r.returncode == 0, r.stderr
    assert f"1. run the service: runuser -u nobody -- jit-server --data-dir {d} serve" in r.stderr


def test_init_by_the_owner_says_to_serve_plainly(tmp_path):
    d = tmp_path / "data"
    r = run(d, "init", "--name", "localhost")
    assert r.returncode == 0, r.stderr
    assert f"1. run the service: jit-server --data-dir {d} serve" in r.stderr


@pytest.mark.parametrize("command", [("audit", "pubkey"), ("audit", "checkpoint")])
def test_root_audit_key_commands_on_a_users_data_dir_are_refused(tmp_path, command):
    # The old code made audit-signing.key root's 0600 there; the service, as the
    # directory's owner, then refused that key on every fold.
    d = tmp_path / "data"
    ok(d, "db", "upgrade")
    for p in (d, *d.rglob("*")):
        os.chown(p, NOBODY, NOBODY)
    before = sorted(p.name for p in d.iterdir())
    line = one_line_error(run(d, *command))
    assert line == (
        f"jit-server: error: {d} belongs to nobody: run `runuser -u nobody -- jit-server "
        f"{' '.join(command)}`; as root, the audit signing key it makes there would be "
        "root's and unreadable to the service"
    )
    assert sorted(p.name for p in d.iterdir()) == before
    assert not (d / "audit-signing.key").exists()


def test_root_audit_pubkey_on_its_own_data_dir_makes_the_key(tmp_path):
    d = tmp_path / "data"
    ok(d, "db", "upgrade")
    assert ok(d, "audit", "pubkey").startswith("-----BEGIN PUBLIC KEY-----")
    assert (d / "audit-signing.key").stat().st_uid == 0
