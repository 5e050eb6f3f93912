"""Key login scenarios with the hooks served by a real jit-hooksd (``SshdSandbox(hooksd=True)``).

The same scenarios as test_login.py / test_faults.py (their test bodies are run
here against a second sandbox whose wrappers are thin clients of a running
helper), plus proof that every hook line came from the helper (``via=hooksd``)
and none from an in-process fallback.
"""

from __future__ import annotations

import pytest

from jit_hooks.testing.service import start_service
from tests.e2e import test_faults, test_login, test_notices
from tests.e2e.conftest import WORLD_ENV, make_box, setup_world
from tests.e2e.test_faults import (  # noqa: F401 (fixtures, on our world)
    fault,
    legacy_wiring,
    session_fails,
)

IDENTS = ("jit-authorized-keys", "jit-pam-account", "jit-pam-session")


@pytest.fixture(scope="module")
def hooksd_world(tmp_path_factory):
    sandbox = make_box(hooksd=True)
    svc = None
    try:
        svc = start_service(tmp_path_factory.mktemp("e2e-hooksd-server"), env=WORLD_ENV)
        yield setup_world(svc, sandbox)
    finally:
        if svc:
            svc.stop()
        sandbox.close()


@pytest.fixture
def world(hooksd_world):
    hooksd_world.reset()
    assert hooksd_world.box.daemon.proc.poll() is None, hooksd_world.box.daemon.log_text()
    yield hooksd_world
    # Whatever the hooks logged since the scenario last cleared the sink came from the
    # helper (the scenarios assert the lines they need).
    lines = [line for ident in IDENTS for line in hooksd_world.box.sink.messages(ident)]
    assert lines and all(line.endswith(" via=hooksd") for line in lines), lines


def assert_via_hooksd(world, *idents):
    """Each of ``idents`` logged, and every line of it came from the helper."""
    for ident in idents:
        lines = world.box.sink.messages(ident)
        assert lines, f"no {ident} line"
        assert all(line.endswith(" via=hooksd") for line in lines), lines


def test_approved_key_login(world):
    test_login.test_approved_request_lets_the_key_in(world)
    assert_via_hooksd(world, *IDENTS)


def test_unapproved_key_is_denied_with_a_reason(world):
    test_login.test_no_request_is_denied(world)
    assert_via_hooksd(world, "jit-authorized-keys")


def test_password_login_through_the_account_hook(world):
    test_login.test_password_login_needs_an_approval(world)
    # The close_session hook runs after the client has gone: wait for its line.
    world.box.sink.wait_for(r"decision=close event=close", ident="jit-pam-session")
    assert_via_hooksd(world, "jit-pam-account", "jit-pam-session")


def test_notice_of_an_ended_session_at_next_login(world):
    # The helper runs as jit-hooks: it reads root's 0640 root:jit-hooks notice and removes it.
    test_notices.check_notice_after_revoke(world)
    assert_via_hooksd(world, "jit-pam-account")


def test_revoked_approval_is_denied(world):
    test_login.test_revoked_approval_is_denied(world)
    assert_via_hooksd(world, "jit-authorized-keys")


def test_failing_session_hook_gives_no_shell(world, session_fails):  # noqa: F811
    test_faults.test_failing_session_hook_gives_no_shell(world, session_fails)
    world.box.sink.wait_for(r"decision=deny event=open .*reason=http_500", ident="jit-pam-session")
    assert_via_hooksd(world, *IDENTS)
