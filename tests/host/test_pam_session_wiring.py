"""The session opened by the account hook (--open-session) and the PAM lines that wire it:
what the hook sends, what it refuses, and how `enable` upgrades an older wiring."""

from __future__ import annotations

import time

from jit_hooks.host.admin import pamconf
from jit_hooks.host.admin.layout import Layout
from jit_hooks.host.login import connection, pam_account
from tests.host.test_pam import ALLOW, DENY, record_key
from tests.host.test_pam import pam_env as _pam_env

pam_env = _pam_env  # the fixture, shared with test_pam.py

LAYOUT = Layout()
# The block `jit-hooks enable` wrote before --open-session (a session-open hook).
LEGACY_BLOCK = (
    "# BEGIN jit-hooks: written by `jit-hooks enable`, removed by `jit-hooks disable`\n"
    "account required pam_exec.so quiet stdout /usr/bin/jit-pam-account\n"
    "session required pam_exec.so quiet type=open_session /usr/bin/jit-pam-session\n"
    "session optional pam_exec.so quiet type=close_session /usr/bin/jit-pam-session\n"
    "# END jit-hooks\n"
)
DEBIAN_LIKE = (
    "@include common-auth\naccount required pam_nologin.so\n@include common-account\n"
    "session required pam_env.so user_readenv=1 envfile=/etc/default/locale\n"
    "@include common-session\n@include common-password\n"
)


def test_open_session_is_sent_with_the_key_of_the_connection(config, fault, pam_env, keypair):
    _, pub = keypair
    record_key(config, pub, login="deploy")
    fault.answer = ALLOW
    pam_env()
    assert pam_account.main(["--config", config.path, "--open-session"]) == 0
    body = fault.requests[0].json()
    assert body["open_session"] is True
    assert body["connection"] == connection.connection_id()
    assert body["fingerprint"] == pub.fingerprint


def test_without_the_flag_no_session_is_asked_for(config, fault, pam_env):
    fault.answer = ALLOW
    pam_env()
    assert pam_account.main(["--config", config.path]) == 0
    assert "open_session" not in fault.requests[0].json()  # an older service refuses the field


def test_a_denied_open_denies_the_login(config, fault, pam_env, sink, capsys):
    fault.answer = DENY
    pam_env()
    assert pam_account.main(["--config", config.path, "--open-session"]) == 1
    assert capsys.readouterr().out.startswith("jit: access denied:")
    sink.wait_for(r"decision=deny .*session=open .*reason=service_denied", ident="jit-pam-account")


def test_an_unknown_argument_denies_before_asking(config, fault, pam_env, sink):
    fault.answer = ALLOW
    pam_env()
    assert pam_account.main(["--config", config.path, "--open-sesion"]) == 1
    assert fault.requests == []
    sink.wait_for(r"decision=deny .*reason=bad_argument", ident="jit-pam-account")


def test_block_has_no_session_open_hook_and_one_close_hook():
    for break_glass in (set(), {"breakglass"}):
        block = pamconf.render_pam_block(LAYOUT, break_glass)
        assert "type=open_session" not in block
        assert block.count("type=close_session /usr/bin/jit-pam-session\n") == 1
        accounts = [ln for ln in block.splitlines() if "jit-pam-account" in ln]
        assert accounts and all(
            ln.endswith("/usr/bin/jit-pam-account --open-session") for ln in accounts
        )


def test_enabling_again_upgrades_the_legacy_block_and_disable_restores():
    legacy = pamconf.add_pam_block(DEBIAN_LIKE, LEGACY_BLOCK)
    assert "type=open_session" in legacy
    block = pamconf.render_pam_block(LAYOUT, set())
    upgraded = pamconf.add_pam_block(legacy, block)
    assert "type=open_session" not in upgraded
    assert upgraded == pamconf.add_pam_block(DEBIAN_LIKE, block)
    assert pamconf.remove_pam_block(upgraded) == DEBIAN_LIKE


def test_session_hook_left_from_the_legacy_wiring_still_closes(config, fault, pam_env, sink):
    """pam_session itself is unchanged: hosts not yet re-enabled keep their open hook."""
    from jit_hooks.host.login import pam_session

    fault.answer = {**ALLOW, "expires_at": int(time.time()) + 3600}
    pam_env("close_session")
    assert pam_session.main(["--config", config.path]) == 0
    assert fault.requests[0].json()["event"] == "close"
