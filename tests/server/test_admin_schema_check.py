"""`jit-server` admin commands refuse a database stamped current that lacks tables, as serve does.

They used to check the schema revision only: on a database stamped at head by a
build whose migration of that id made other tables, `user list` and the like ran
(and a command touching a missing table failed with a traceback). Now every
command that opens the database asks serve's check (cli.check_schema). A real
database of the suite's backend is migrated to head, tables are dropped, and the
real `jit-server` must exit 1 with one readable line naming them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from jit_hooks.testing.service import start_service


def _admin(svc, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    cmd = [
        sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(svc.data_dir),
        *svc.db_args(), *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=svc.env)


@pytest.fixture
def stopped_service(tmp_path):
    svc = start_service(tmp_path / "server")
    svc.stop()
    return svc


def test_admin_commands_refuse_a_database_without_tables(stopped_service):
    svc = stopped_service
    r = _admin(svc, "user", "list")
    assert r.returncode == 0, r.stderr  # complete database: the check lets it through
    svc.sql("DROP TABLE audit_miss_rows")
    svc.sql("DROP TABLE notify_outbox")
    for args in (("user", "list"), ("host", "add", "web9"), ("audit", "verify")):
        r = _admin(svc, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stdout == ""
        assert "(audit_miss_rows, notify_outbox)" in lines[0], lines[0]
        assert "jit-server db upgrade" in lines[0] and "restore a backup" in lines[0]
    # Nothing was written by the refused `host add`.
    assert svc.sql("SELECT count(*) FROM hosts WHERE name = 'web9'") == [(0,)]


def test_admin_commands_still_refuse_an_old_revision(stopped_service):
    svc = stopped_service
    svc.sql("UPDATE alembic_version SET version_num = '0014_sso_flow_limits'")
    r = _admin(svc, "user", "list")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "jit-server: error: database schema is not current: run `jit-server db upgrade`"
    ]
