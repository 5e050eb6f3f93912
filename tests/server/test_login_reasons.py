"""Password sign-in failures say why in the service's log (the caller only hears
"invalid username or password"): real service, real PAM."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest


def test_pam_refusal_is_logged_with_its_reason(service):
    status, _ = service.call(
        "POST", "/api/v1/login", body={"username": "nobody-here", "password": "wrong"}
    )
    assert status == 401
    deadline = time.monotonic() + 10
    while "refused by PAM" not in service.log_path.read_text():
        assert time.monotonic() < deadline, service.log_path.read_text()
        time.sleep(0.1)
    (line,) = [x for x in service.log_path.read_text().splitlines() if "refused by PAM" in x]
    assert "user='nobody-here'" in line and "service=login" in line and "reason='" in line
    assert "wrong" not in line  # never the password


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
def test_unreadable_shadow_is_named():
    """As an unprivileged user (like a service user), PAM's pam_unix cannot check
    another user's password: the log line says so."""
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "from jit_hooks.server.routes.login import pam_check\n"
        "print(pam_check('root', 'not-the-password', 'login'))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        user=65534,
        group=65534,
        extra_groups=[],
        cwd="/",
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert r.returncode == 0, r.stderr
    assert "cannot read /etc/shadow" in r.stdout and "uid 65534" in r.stdout, r.stdout
    assert r.stdout.strip().endswith("False")
