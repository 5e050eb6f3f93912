"""Next-login notices with the real sshd, ssh, PAM and service (host/login/notices.py).

A session without a pty (``ssh host cmd``) has no terminal to be told on. When
enforce ends it (its approval revoked), the user's next login on the host shows
one line on stderr saying why, once. A pty session is warned on its terminal
instead and records no notice.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess

from tests.e2e.test_enforce import (
    enforce_once,
    open_session,
    remote_commands,
    start_session,
    stop,
    wait_until,
)

ACCOUNT = "jit-pam-account"


def notice_path(world):
    return world.box.spool_dir / f"notice-{world.login}.json"


def end_by_revoke(world, rid: int, proc, seconds: int) -> str:  # noqa: ANN001
    """Revoke the session's approval and end it with one enforce pass; the
    session's ssh client exits. Returns enforce's syslog line for the session."""
    try:
        open_session(world, rid, proc)
        wait_until(lambda: remote_commands(seconds), "the remote command runs")
        world.revoke(rid)
        result = enforce_once(world)
        assert result.returncode == 0, result.stderr
        assert "ended 1," in result.stdout
        proc.wait(timeout=30)
        return world.box.sink.wait_for(
            rf"action=end login={world.login} .*request={rid} why=revoked",
            ident="jit-hooks-enforce",
        )
    finally:
        stop(proc, seconds)


def check_notice_after_revoke(world) -> None:
    """The scenario (also run through jit-hooksd by test_hooksd.py)."""
    rid = world.request("alice")
    world.approve(rid)
    seconds = 1207
    proc = start_session(world, "alice", seconds)  # no pty: `ssh host sleep N`
    line = end_by_revoke(world, rid, proc, seconds)
    assert "notice=recorded" in line, line

    st = os.lstat(notice_path(world))
    assert stat.S_ISREG(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o640

    # A new approval; the next login shows the notice on stderr, once.
    again = world.request("alice")
    world.approve(again)
    first = world.ssh("alice", "echo", "in", log_level="INFO")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "in\n"
    shown = [line for line in first.stderr.splitlines() if "previous session" in line]
    assert len(shown) == 1, first.stderr
    assert re.fullmatch(
        rf"jit: your previous session on web1 as {world.login} was ended "
        rf"20[0-9][0-9]-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-5][0-9] UTC: approval {rid} revoked",
        shown[0],
    ), shown
    assert not notice_path(world).exists()
    world.box.sink.wait_for(
        rf"login={world.login} notice=shown request={rid} why=revoked", ident=ACCOUNT
    )

    second = world.ssh("alice", "echo", "in", log_level="INFO")
    assert second.returncode == 0, second.stderr
    assert "previous session" not in second.stderr


def test_non_pty_session_ended_by_revoke_is_told_at_next_login(world):
    check_notice_after_revoke(world)


def test_pty_session_records_no_notice(world):
    rid = world.request("alice")
    world.approve(rid)
    key = world.person("alice").key_path
    args = world.box.ssh_args(
        world.login, "-tt", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "PasswordAuthentication=no",
    )  # fmt: skip
    seconds = 1208
    proc = subprocess.Popen(
        [*args, f"sleep {seconds}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = end_by_revoke(world, rid, proc, seconds)
    assert "notice=" not in line
    assert not notice_path(world).exists()


def test_login_near_the_end_of_its_approval_is_told_how_to_extend(world):
    rid = world.request("alice", duration=300)  # inside the 600 s warning mark
    world.approve(rid)
    r = world.ssh("alice", "echo", "in", log_level="INFO")
    assert r.returncode == 0 and r.stdout == "in\n", r.stderr
    told = [line for line in r.stderr.splitlines() if line.startswith("jit: ")]
    assert len(told) == 1, r.stderr
    assert re.fullmatch(
        rf"jit: your access as {world.login}@web1 ends at [0-2][0-9]:[0-5][0-9] UTC "
        rf"\(in about [45] min, request {rid}\)\. To keep it: jit extend {rid} --for 30m",
        told[0],
    ), told


def test_login_far_from_the_end_is_told_nothing(world):
    rid = world.request("alice", duration=3600)
    world.approve(rid)
    r = world.ssh("alice", "echo", "in", log_level="INFO")
    assert r.returncode == 0 and r.stdout == "in\n", r.stderr
    assert not [line for line in r.stderr.splitlines() if line.startswith("jit: ")], r.stderr


def test_another_person_on_the_same_login_is_not_shown_the_notice(world):
    """The notice is bound to the ended session's key: carol, approved for the same
    login with her own key, neither reads alice's notice nor uses it up."""
    rid = world.request("alice")
    world.approve(rid)
    seconds = 1209
    proc = start_session(world, "alice", seconds)
    end_by_revoke(world, rid, proc, seconds)
    assert notice_path(world).exists()

    world.approve(world.request("carol"))
    carol = world.ssh("carol", "echo", "in", log_level="INFO")
    assert carol.returncode == 0 and carol.stdout == "in\n", carol.stderr
    assert "previous session" not in carol.stderr
    assert notice_path(world).exists()

    world.approve(world.request("alice"))
    alice = world.ssh("alice", "echo", "in", log_level="INFO")
    assert alice.returncode == 0, alice.stderr
    assert f"approval {rid} revoked" in alice.stderr
    assert not notice_path(world).exists()
