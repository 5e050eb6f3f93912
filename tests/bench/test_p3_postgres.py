"""P3pg harness: its CPU, lock-wait and error counters see real work; a quick run gives all figures.

No timing asserts: the figures are checked for presence and sanity, not size.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.pglocks import LOCK_LOG_CONF, LockSampler, LockWaitLog
from bench.procstat import tree_cpu_seconds
from jit_hooks.testing import postgres

REPO = Path(__file__).resolve().parent.parent.parent

needs_pg = pytest.mark.skipif(
    not postgres.available(), reason="PostgreSQL 15 server binaries missing (scripts/setup)"
)


def test_tree_cpu_counts_a_grandchild_that_has_exited(tmp_path):
    # sh runs a CPU-bound child, reaps it, then idles: the child's time must still
    # count (through sh's cutime), as a PostgreSQL backend that ended mid-round does.
    spin = tmp_path / "spin.py"
    spin.write_text(
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
    )
    sh = subprocess.Popen(
        ["sh", "-c", f'"{sys.executable}" "{spin}"; echo done; exec sleep 30'],
        stdout=subprocess.PIPE,
    )
    try:
        assert sh.stdout is not None and sh.stdout.readline() == b"done\n"
        assert tree_cpu_seconds([sh.pid]) >= 0.25
        assert tree_cpu_seconds([sh.pid], exclude=frozenset({sh.pid})) == 0
    finally:
        sh.kill()
        sh.wait()


@pytest.fixture
def cluster():
    # Its own temp dir, not tmp_path: another pytest session on the machine may
    # prune old pytest-of-root/pytest-N directories while this one runs.
    c = postgres.make_cluster().init(extra_conf=LOCK_LOG_CONF).start()
    try:
        yield c
    finally:
        c.destroy()


@needs_pg
def test_lock_counters_see_a_real_row_lock_wait(cluster):
    import psycopg

    url = f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres"
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute("CREATE TABLE hot (id int PRIMARY KEY, n int)")
        setup.execute("INSERT INTO hot VALUES (1, 0)")
    waitlog = LockWaitLog(cluster.log_path)
    sampler = LockSampler(url).start()
    sampler.bucket = "case"
    holder = psycopg.connect(url)
    waiter = psycopg.connect(url)
    try:
        holder.execute("SELECT n FROM hot WHERE id = 1 FOR UPDATE")

        def update() -> None:
            waiter.execute("UPDATE hot SET n = n + 1 WHERE id = 1")
            waiter.commit()

        blocked = threading.Thread(target=update)
        blocked.start()
        # Hold the row until PostgreSQL has logged the wait (the sampler sees it meanwhile).
        deadline = time.monotonic() + 30
        while "still waiting for" not in cluster.log_path.read_text():
            assert time.monotonic() < deadline, cluster.log_path.read_text()[-2000:]
            time.sleep(0.05)
        holder.commit()
        blocked.join(30)
    finally:
        sampler.bucket = None
        sampler.stop()
        holder.close()
        waiter.close()
    with psycopg.connect(url, autocommit=True) as other, pytest.raises(psycopg.Error):
        other.execute("SELECT 1/0")
    deadline = time.monotonic() + 30
    while "division by zero" not in cluster.log_path.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    logged = waitlog.read()
    assert logged["errors"] == {"division by zero": 1}
    assert logged["waits"] == 1
    assert any("UPDATE hot SET" in kind for kind in logged["kinds"])
    seen = sampler.report("case")
    assert seen["samples"] > 0
    assert seen["waits"] == 1  # one episode, however many samples it spanned
    assert any(k.startswith("transactionid ShareLock") and "UPDATE hot" in k for k in seen["top"])
    assert waitlog.read()["waits"] == 0  # read once: the next round starts from zero


@needs_pg
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk missing (./scripts/bench installs it)")
def test_quick_p3pg_run_reports_every_figure(tmp_path):
    out = tmp_path / "results.json"
    r = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "P3pg", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())["benchmarks"]["P3pg"]
    assert "error" not in res
    names = [
        "SQLite, 1 replica",
        "PostgreSQL, 1 replica",
        "PostgreSQL, 2 replicas",
        "PostgreSQL, 1 replica, async commit",
        "SQLite, fleet",
        "PostgreSQL, 1 replica, fleet",
        "SQLite, deny storm",
        "PostgreSQL, 1 replica, deny storm",
    ]
    assert list(res["cases"]) == names
    for name in names:
        case = res["cases"][name]
        assert case["rounds"] == 2 and case["n"] > 0 and case["rps"] > 0
        assert 0 < case["median"] <= case["p99"] <= case["max"]
        assert case["cpu_s_per_1k_service"] > 0
        assert 0 < case["checks_per_cpu_s"] < float("inf")
        assert res["lock_waits"][name]["sampled"]["samples"] > 0
        assert case["lock_waits_logged"] >= 0 and case["lock_waits_sampled"] >= 0
    for name in names:
        if name.startswith("PostgreSQL"):
            assert res["cases"][name]["cpu_s_per_1k_postgres"] > 0
    # Every call was audited on both databases and both chains verify.
    assert res["audit_verify"] == {"SQLite": None, "PostgreSQL": None}
    measures = [row["measure"] for row in res["rows"]]
    assert "PostgreSQL 1 replica / SQLite: hook checks/s" in measures
    assert "PostgreSQL 2 replicas / 1 replica: hook checks/s" in measures
    assert "fleet shape: PostgreSQL 1 replica / SQLite" in measures
    assert "deny storm: PostgreSQL 1 replica / SQLite" in measures
    # Each load shape reports its lock waits (0 is the target, not asserted: a figure).
    for shape in ("one key", "fleet", "deny storm"):
        assert f"{shape}: lock waits, logged + sampled (PG rounds)" in measures
    assert all(row.get("ratio", 1) > 0 for row in res["rows"])
    assert "PostgreSQL, 2 replicas: PostgreSQL CPU-s per 1,000 checks" in r.stdout
