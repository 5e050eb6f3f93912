"""`jit-server serve` refuses a database stamped current that lacks a table the code needs.

Revision 0015 was once an empty placeholder: a database upgraded by that build
is stamped at head but has no audit_miss_rows, and the service answered 500 on
every authorized-keys miss (review r3, poc_mixed.py S1). Here a real database
of the suite's backend is migrated to head, the table is dropped, and the real
`serve` process must exit 1 with one readable line naming it, before listening.
"""

from __future__ import annotations

import subprocess
import sys

from jit_hooks.testing.service import start_service


def _serve(svc) -> subprocess.CompletedProcess:  # noqa: ANN001
    cmd = [
        sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(svc.data_dir),
        *svc.db_args(), "serve", "--listen", "127.0.0.1:0",
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=svc.env)


def test_serve_refuses_a_database_without_the_miss_table(tmp_path):
    svc = start_service(tmp_path / "server")
    svc.stop()
    svc.sql("DROP TABLE audit_miss_rows")
    r = _serve(svc)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "audit_miss_rows" in lines[0] and "Traceback" not in r.stderr


def test_serve_starts_on_a_complete_database(tmp_path):
    svc = start_service(tmp_path / "server")
    try:
        assert svc.call("GET", "/healthz")[0] == 200
    finally:
        svc.stop()
