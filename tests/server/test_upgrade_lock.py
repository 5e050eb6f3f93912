"""`jit-server db upgrade` run by several replicas at once: one migrates, the others wait.

Real `jit-server db upgrade` processes started together on a fresh database:
on PostgreSQL a throwaway cluster of this module's own (initdb in a temp dir,
a free port on 127.0.0.1), whose cluster-wide advisory locks no other test
shares; on SQLite a fresh file. Every process must exit 0 and the schema must
be at head, each migration applied once (the version table holds one row).
Without the advisory lock (db.upgrade) the PostgreSQL processes race each
other's CREATE TABLEs and all but one fail.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from jit_hooks.server.db import make_engine, schema_is_current
from jit_hooks.testing import postgres

PROCESSES = 4


@pytest.fixture(scope="module")
def cluster(db_backend: str):
    if db_backend != "postgresql":
        yield None
        return
    if not postgres.available():
        pytest.skip("needs PostgreSQL 15")
    with postgres.make_cluster().init().start() as c:
        yield c


def _upgrades_at_once(url: str) -> list[subprocess.CompletedProcess]:
    cmd = [sys.executable, "-m", "jit_hooks.server.cli", "--database-url", url, "db", "upgrade"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(PROCESSES)
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_replicas_upgrading_together_all_succeed_and_migrate_once(
    db_backend: str, cluster, tmp_path: Path
):
    if db_backend == "postgresql":
        url = cluster.create_database("upgrade_race")
    else:
        url = f"sqlite:///{tmp_path / 'jit.db'}"
    runs = _upgrades_at_once(url)
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    said = [r.stderr.strip().splitlines()[-1] for r in runs]
    # At least one of them did the work; the ones that waited found it done.
    assert any("migrated from nothing" in s for s in said), said
    assert all("migrated from nothing" in s or "nothing to do" in s for s in said), said
    engine = make_engine(url)
    try:
        assert schema_is_current(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
            # The audit head is made by a migration exactly once.
            assert conn.execute(text("SELECT count(*) FROM audit_head")).scalar() == 1
    finally:
        engine.dispose()
