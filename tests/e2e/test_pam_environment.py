"""A login's own ~/.pam_environment can't steer the PAM hooks (real sshd, PAM, service).

The sandbox's PAM file runs ``pam_env.so user_readenv=1`` in the session stack like
Debian 12's /etc/pam.d/sshd, with the hook lines placed by the wiring code. The
login plants PAM_TYPE / PAM_USER / SSH_AUTH_INFO_0 there: had the session hook run
after pam_env (or trusted os.environ, where the first duplicate wins) the open would
be taken for a close, the session bound to carol's approval, or the close reported
as a break-glass one; revoking alice's approval must still end her session.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from tests.e2e.test_enforce import (
    ENFORCE,
    WAIT,
    enforce_once,
    open_session,
    remote_commands,
    session_closed,
    start_session,
    stop,
    wait_until,
)


def test_planted_pam_environment_does_not_steer_the_session_hook(world):
    pw = pwd.getpwnam(world.login)
    planted = Path(pw.pw_dir) / ".pam_environment"
    carol = world.person("carol").public
    planted.write_text(
        "PAM_TYPE DEFAULT=close_session\n"
        f"PAM_USER DEFAULT={world.box.bg_login}\n"
        f'SSH_AUTH_INFO_0 DEFAULT="publickey {carol.key_type} {carol.blob}"\n'
    )
    os.chown(planted, pw.pw_uid, pw.pw_gid)
    rid = world.request("alice")
    world.approve(rid)
    proc = start_session(world, "alice", 1211)
    try:
        # Recorded as an open session of alice's own request ...
        conn = open_session(world, rid, proc)
        # (by the account hook, --open-session: it runs before any session module)
        opens = [e["data"] for e in world.events("hook.account") if e["data"].get("session")]
        assert [(o["connection"], o["login"]) for o in opens] == [(conn, world.login)]
        assert opens[0]["fingerprint"] == world.person("alice").public.fingerprint
        wait_until(lambda: remote_commands(1211), "alice's remote command runs")
        # ... and pam_env did run: the login's shell got the planted values.
        check = world.ssh("alice", 'printf %s "$PAM_TYPE"')
        assert check.returncode == 0, check.stderr
        assert check.stdout == "close_session"

        # So revoking alice's approval ends it.
        world.revoke(rid)
        result = enforce_once(world)
        assert result.returncode == 0, result.stderr
        assert "ended 1," in result.stdout
        proc.wait(timeout=WAIT)
        wait_until(lambda: not remote_commands(1211), "alice's remote command ended")
        wait_until(lambda: session_closed(world, conn), "session closed in the service")
        world.box.sink.wait_for(rf"action=end login={world.login} connection={conn}", ident=ENFORCE)
        # The close hook (after pam_env) still read pam_exec's own PAM_USER/PAM_TYPE.
        closes = [e["data"] for e in world.events("hook.session") if e["data"]["event"] == "close"]
        assert (conn, world.login) in {(c["connection"], c["login"]) for c in closes}
    finally:
        stop(proc, 1211)
        planted.unlink(missing_ok=True)
