"""A login the host refuses after the service allowed it (and, with --open-session, recorded
its session) is aborted on the service: no open session is left, and the usage report does
not count it as used (sessions review M2). Real sshd, PAM, hooks and service.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import PASSWORD
from tests.e2e.test_hooksd import hooksd_world  # noqa: F401 (the jit-hooksd sandbox fixture)

ACCOUNT = "jit-pam-account"


def test_host_refusal_after_an_allow_aborts_the_recorded_session(world):
    # This host allows grants of at most 30 minutes; the approval runs for an hour.
    # A password login (the AKC would refuse a key first): the account call allows.
    text = world.box.config_path.read_text()
    world.box.config_path.write_text(
        text.replace("[service]\n", "[service]\nmax_grant = 1800\n", 1)
    )
    rid = world.request("alice", duration=3600)
    world.approve(rid)
    r = world.box.ssh_password(world.login, PASSWORD, "echo ran-ok")
    assert r.returncode == 255 and "ran-ok" not in r.stdout, r
    world.box.sink.wait_for(rf"decision=deny login={world.login} .*reason=grant_too_long", ACCOUNT)

    [account] = world.events("hook.account")
    assert (account["data"]["decision"], account["data"]["session"]) == ("allow", "open")
    conn = account["data"]["connection"]
    [abort] = [e for e in world.events("hook.session") if e["data"]["event"] == "abort"]
    assert (abort["data"]["connection"], abort["data"]["aborted"]) == (conn, 1)
    assert world.svc.sql("SELECT COUNT(*) FROM sessions WHERE request_id = ?", (rid,)) == [(0,)]
    report = world.api("GET", "/api/v1/reports/usage", "admin")
    [entry] = [a for a in report["approvals"] if a["request_id"] == rid]
    assert (entry["used"], entry["sessions"]) == (False, 0)


def test_abort_reaches_only_a_fresh_open_session_of_this_host(world):
    """What a host token can do with abort: only its own, just-opened, still-open sessions."""
    rid = world.request("alice", duration=3600)
    world.approve(rid)
    r = world.box.ssh_password(world.login, PASSWORD, "echo ran-ok")
    assert r.returncode == 0 and "ran-ok" in r.stdout, r
    conn = world.events("hook.account")[-1]["data"]["connection"]
    world.svc.sql("UPDATE sessions SET opened_at = opened_at - 600 WHERE connection = ?", (conn,))
    body = {"event": "abort", "login": world.login, "connection": conn}
    status, ans = world.svc.call("POST", "/api/v1/hook/session", world.host_token, body)
    assert status == 200, ans
    assert world.svc.sql("SELECT COUNT(*) FROM sessions WHERE connection = ?", (conn,)) == [(1,)]
    assert [
        e["data"]["aborted"] for e in world.events("hook.session") if e["data"]["event"] == "abort"
    ] == [0]


@pytest.fixture
def helper_world(hooksd_world):  # noqa: F811
    hooksd_world.reset()
    return hooksd_world


def test_the_abort_also_runs_in_jit_hooksd(helper_world):
    test_host_refusal_after_an_allow_aborts_the_recorded_session(helper_world)
    lines = helper_world.box.sink.messages(ACCOUNT)
    assert lines and all(line.endswith(" via=hooksd") for line in lines), lines
