"""`jit-server serve --workers 2`: two real worker processes on one SQLite file.

Concurrent hook calls are spread over both workers; every decision is still
answered correctly and audited once, and the audit hash chain stays intact (each
append is serialised by SQLite's write lock across processes).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from jit_hooks.testing.service import Service, free_port
from tests.server.conftest import build_world
from tests.utils.audit_counts import hook_decisions

CALLS = 60


@pytest.fixture
def two_workers(tmp_path):
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    svc = Service(data_dir=data_dir, port=free_port(), env=dict(os.environ))
    svc.serve_args = ("--workers", "2")
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def _hook_events(svc: Service) -> int:
    """Hook decisions audited: events, plus the repeats of authorized-keys misses and allows
    (counted, then folded into one event when the window closes: tests/utils/audit_counts.py)."""
    return hook_decisions(svc.sqlite)


def _workers(svc: Service) -> list[int]:
    """Pids of the worker processes uvicorn spawned under the `serve` process."""
    assert svc.proc is not None
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == svc.proc.pid and b"spawn_main" in cmd:
            out.append(int(pid))
    return out


def test_two_workers_answer_and_audit_every_hook_call(two_workers, tmp_path):
    w = build_world(two_workers, tmp_path)
    code, req = w.request("alice")
    assert code == 201, req
    code, body = w.call("bob", "POST", f"/api/v1/requests/{req['id']}/approve", {})
    assert code == 200, body
    before = _hook_events(two_workers)

    def check(i: int) -> tuple[int, int, int]:
        who = "alice" if i % 2 else "mallory"  # approved / not approved
        code, body = w.akc("web1", who)
        return i, code, len(body["keys"]) if code == 200 else -1

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(check, range(CALLS)))
    assert [(i, code) for i, code, _ in results if code != 200] == []
    assert all(n == (1 if i % 2 else 0) for i, _code, n in results), results
    assert len(_workers(two_workers)) == 2
    assert _hook_events(two_workers) - before == CALLS
    assert "audit chain OK" in two_workers.admin("audit", "verify")
