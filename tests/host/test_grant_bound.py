"""Every allow carries an end within service.max_grant, on both PAM hooks (review finding 5).

An allow with ``expires_at: null`` used to pass the account hook (grant_too_long(None)
was False), and the session hook never applied max_grant at all. The fault server
stands in for the service (it echoes the question like the real one).
"""

from __future__ import annotations

import time

import pytest

from jit_hooks.host.login import pam_account, pam_session
from tests.host.conftest import *  # noqa: F403 - fixtures (config, fault, sink, ...)
from tests.host.test_pam import pam_env  # noqa: F401 - fixture

YEAR_2200 = 7258118400


def allow(expires_at):
    return {"decision": "allow", "reason": "ok", "request_id": 7, "expires_at": expires_at}


def run_hook(stage, config, pam_env):  # noqa: F811
    if stage == "account":
        pam_env()
        return pam_account.main(["--config", config.path])
    pam_env("open_session")
    return pam_session.main(["--config", config.path])


@pytest.mark.parametrize("stage", ["account", "session"])
@pytest.mark.parametrize(
    ("expires_at", "reason"), [(None, "bad_answer"), (YEAR_2200, "grant_too_long")]
)
def test_allow_without_a_bounded_end_denies(
    stage,
    expires_at,
    reason,
    config,
    fault,
    pam_env,  # noqa: F811
    sink,
    capsys,
):
    fault.answer = allow(expires_at)
    assert run_hook(stage, config, pam_env) == 1
    assert "access denied" in capsys.readouterr().out
    sink.wait_for(f"decision=deny .*reason={reason}")


@pytest.mark.parametrize("stage", ["account", "session"])
def test_allow_within_max_grant_passes(stage, config, fault, pam_env, sink):  # noqa: F811
    fault.answer = allow(int(time.time()) + 600)
    assert run_hook(stage, config, pam_env) == 0
    sink.wait_for("decision=allow")
