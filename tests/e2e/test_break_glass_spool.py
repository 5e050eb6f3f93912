"""Break-glass during an outage reaches the audit later: spooled on the host, delivered once.

Real sshd, real ssh, real PAM hooks, the real service stopped and started again,
and the real `jit-hooks enforce --once` as the systemd timer runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

ACCOUNT = "jit-pam-account"


def enforce_once(world) -> subprocess.CompletedProcess:
    box = world.box
    return subprocess.run(
        [sys.executable, "-m", "jit_hooks.cli.admin", "enforce", "--once", "--root",
         str(box.root), "--config", str(box.config_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def spooled(world) -> dict[str, dict]:
    return {
        p.name: json.loads(p.read_text())
        for p in sorted(world.box.spool_dir.iterdir())
        if p.name.startswith("bg-")
    }


def test_break_glass_during_an_outage_reaches_the_audit_once(world, tmp_path):
    box, svc = world.box, world.svc
    for p in box.spool_dir.iterdir():  # left by earlier outage tests
        p.unlink()
    svc.stop()
    before = int(time.time())
    r = box.ssh(box.bg_login, world.person("breakglass"), "echo ran-ok $(id -un)")
    after = int(time.time())
    assert r.returncode == 0 and r.stdout.split() == ["ran-ok", box.bg_login], r
    box.sink.wait_for(r"event=break_glass_report reported=no spooled=bg-", ident=ACCOUNT)

    # On disk, root-only: the directory 0700, each report 0600, nothing else in it.
    reports = spooled(world)
    assert {r["stage"] for r in reports.values()} == {"account"}  # no session-open hook
    assert os.stat(box.spool_dir).st_mode & 0o777 == 0o700
    for name, report in reports.items():
        assert os.stat(box.spool_dir / name).st_mode & 0o777 == 0o600
        assert report["login"] == box.bg_login and before <= report["at"] <= after
    # The service is still down: enforce delivers nothing, keeps everything.
    r = enforce_once(world)
    assert r.returncode == 1 and set(spooled(world)) == set(reports)

    svc.start()
    up = int(time.time())
    copies = tmp_path / "copies"
    shutil.copytree(box.spool_dir, copies)
    r = enforce_once(world)
    assert r.returncode == 0, r.stderr
    assert "break-glass reports: delivered 1, discarded 0, left 0" in r.stdout
    assert spooled(world) == {}
    events = world.events("hook.break_glass")
    assert len(events) == 1
    by_report = {e["data"]["report"]: e for e in events}
    assert set(by_report) == {r["report_id"] for r in reports.values()}
    for report in reports.values():
        event = by_report[report["report_id"]]
        assert event["data"]["login_at"] == report["at"]  # the original login time
        assert event["data"]["login"] == box.bg_login
        assert event["data"]["stage"] == report["stage"]
        assert event["actor"] is None and event["at"] >= up

    # Delivered again (a flush that died before removing its files): still one event each.
    for p in copies.iterdir():
        shutil.copy2(p, box.spool_dir / p.name)
    r = enforce_once(world)
    assert r.returncode == 0 and "delivered 1" in r.stdout, r.stdout + r.stderr
    r = enforce_once(world)
    assert r.returncode == 0 and "break-glass" not in r.stdout
    assert len(world.events("hook.break_glass")) == 1


def test_a_planted_report_is_discarded_not_delivered(world):
    box = world.box
    for p in box.spool_dir.iterdir():
        p.unlink()
    # A symlink and a malformed file in the spool: neither is ever followed or sent.
    (box.spool_dir / f"bg-1-{'a' * 32}.json").symlink_to("/etc/passwd")
    bad = box.spool_dir / f"bg-2-{'b' * 32}.json"
    bad.write_text('{"login": "root"}')
    bad.chmod(0o600)
    r = enforce_once(world)
    assert r.returncode == 0, r.stderr
    assert "delivered 0, discarded 2, left 0" in r.stdout
    assert world.events("hook.break_glass") == []
    assert list(box.spool_dir.iterdir()) == []
    box.sink.wait_for(r"event=break_glass_flush discarded=bg-1-a+\.json reason=unsafe_or_malformed")
