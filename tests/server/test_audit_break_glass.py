"""Break-glass reports are recorded once per (host, report id), by a unique key.

Review finding: the duplicate check searched the audit log (check-then-insert), so
concurrent copies of one report could both pass, and a copy arriving after the
events were archived was recorded again.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.server.conftest import World


def _report(report_id: str, login: str = "root") -> dict:
    return {"login": login, "rhost": "192.0.2.7", "connection": None, "stage": "account",
            "report_id": report_id}  # fmt: skip


def _events(w: World, report_id: str) -> int:
    return w.svc.sql(
        "SELECT count(*) FROM audit_events WHERE kind = 'hook.break_glass' AND data LIKE ?",
        (f'%"report":"{report_id}"%',),
    )[0][0]


def test_concurrent_copies_of_one_report_record_one_event(world: World) -> None:
    for _ in range(5):
        rid = uuid.uuid4().hex
        answers: list = []
        start = threading.Barrier(16)

        def send(rid: str = rid, answers: list = answers, start: threading.Barrier = start) -> None:
            start.wait()
            answers.append(world.call("web1", "POST", "/api/v1/hook/break-glass", _report(rid)))

        threads = [threading.Thread(target=send) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert _events(world, rid) == 1
        assert [s for s, _ in answers] == [200] * 16, answers
        assert all(a["recorded"] for _, a in answers)
        assert world.svc.sql(
            "SELECT count(*) FROM break_glass_reports WHERE report_id = ?", (rid,)
        ) == [(1,)]
    # The same id from another host is that host's own report.
    assert world.call("web2", "POST", "/api/v1/hook/break-glass", _report(rid))[0] == 200
    assert _events(world, rid) == 2


def test_a_report_resent_after_archiving_is_not_recorded_again(
    world: World, tmp_path: Path
) -> None:
    rid = uuid.uuid4().hex
    assert world.call("web1", "POST", "/api/v1/hook/break-glass", _report(rid))[0] == 200
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    world.svc.admin("audit", "archive", "--before", tomorrow, "--out", str(tmp_path / "a.gz"))
    assert _events(world, rid) == 0  # archived
    status, ans = world.call("web1", "POST", "/api/v1/hook/break-glass", _report(rid))
    assert (status, ans["recorded"]) == (200, True)
    assert _events(world, rid) == 0  # the spool's late copy is not a second use
    world.svc.admin("audit", "verify", "--archive", str(tmp_path / "a.gz"))
