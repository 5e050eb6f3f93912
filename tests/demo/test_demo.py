"""scripts/demo: --help only explains; the demo itself runs end to end (real sshd, ssh, service)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
DEMO = REPO / "scripts" / "demo.py"


def test_help_does_not_run_the_demo(tmp_path):
    r = subprocess.run(
        [sys.executable, str(DEMO), "--help"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "usage: scripts/demo" in r.stdout
    assert "== 1." not in r.stdout
    # A run would have made its work directory in TMPDIR.
    assert list(tmp_path.iterdir()) == []


def test_unknown_option_is_refused():
    r = subprocess.run([sys.executable, str(DEMO), "--nope"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "unrecognized arguments: --nope" in r.stderr


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the demo starts a real sshd with its own PAM")
def test_demo_runs_end_to_end():
    r = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    for needle in (
        "== 7. bob (approver) reviews and approves",
        "== 10. If the service is down, logins are denied (fail closed)",
        "Demo complete: request -> approve -> ssh -> revoke -> denied.",
        # The local webhook receiver got the notifications, signatures checked.
        "webhook receiver <- request.created (signature verified",
        "webhook receiver <- request.approved (signature verified",
        "/ui/requests/",
    ):
        assert needle in out
    # The narrated audit listing ends with a verified chain.
    assert "audit chain OK" in out
