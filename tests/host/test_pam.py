"""jit-pam-account and jit-pam-session, run in-process against a real local server."""

from __future__ import annotations

import os
import time

import pytest

from jit_hooks.host import paths
from jit_hooks.host.login import connection, pam_account, pam_session

# Ends an hour ahead: within the host's default max_grant (24 h).
ALLOW = {
    "decision": "allow",
    "reason": "approved",
    "request_id": 7,
    "expires_at": int(time.time()) + 3600,
}
DENY = {
    "decision": "deny",
    "reason": "no active approval\nfor deploy",
    "request_id": None,
    "expires_at": None,
}


@pytest.fixture
def pam_env(monkeypatch):
    def set_env(pam_type="account", user="deploy", auth_info=None):
        monkeypatch.setenv("PAM_TYPE", pam_type)
        monkeypatch.setenv("PAM_USER", user)
        monkeypatch.setenv("PAM_RHOST", "127.0.0.1")
        monkeypatch.setenv("PAM_SERVICE", "sshd")
        if auth_info is None:
            monkeypatch.delenv("SSH_AUTH_INFO_0", raising=False)
        else:
            monkeypatch.setenv("SSH_AUTH_INFO_0", auth_info)

    return set_env


def record_key(config, pub, *, login: str) -> None:
    """What the AKC leaves for this connection after printing ``pub`` for ``login``."""
    connection.record_accepted(
        config.state_dir,
        connection.connection_id(),
        login=login,
        key_type=pub.key_type,
        fingerprint=pub.fingerprint,
        request_id=7,
        expires_at=4102444800,
    )


def test_account_allow_with_recorded_key(config, fault, pam_env, sink, capsys, keypair):
    _, pub = keypair
    record_key(config, pub, login="deploy")
    fault.answer = ALLOW
    pam_env()
    assert pam_account.main(["--config", config.path]) == 0
    body = fault.requests[0].json()
    assert body == {
        "host": "web1",
        "login": "deploy",
        "rhost": "127.0.0.1",
        "service": "sshd",
        "connection": connection.connection_id(),
        "fingerprint": pub.fingerprint,
    }
    assert capsys.readouterr().out == ""
    sink.wait_for("decision=allow login=deploy", ident="jit-pam-account")


def test_account_without_key_asks_by_login(config, fault, pam_env):
    fault.answer = ALLOW
    pam_env()
    assert pam_account.main(["--config", config.path]) == 0
    assert fault.requests[0].json()["fingerprint"] is None


def test_account_record_for_other_login_denies(config, fault, pam_env, keypair, capsys):
    _, pub = keypair
    record_key(config, pub, login="root")
    fault.answer = ALLOW
    pam_env()
    assert pam_account.main(["--config", config.path]) == 1
    assert fault.requests == []
    assert "access denied" in capsys.readouterr().out


def test_account_deny_prints_sanitised_reason(config, fault, pam_env, sink, capsys):
    fault.answer = DENY
    pam_env()
    assert pam_account.main(["--config", config.path]) == 1
    assert capsys.readouterr().out == "jit: access denied: no active approvalfor deploy\n"
    sink.wait_for("decision=deny .*reason=service_denied")


@pytest.mark.parametrize("fault_name", ["status", "garbage", "hang"])
def test_account_service_failure_denies(config, fault, pam_env, sink, capsys, fault_name):
    fault.fault, fault.status = fault_name, 503
    pam_env()
    assert pam_account.main(["--config", config.path]) == 1
    assert "access denied" in capsys.readouterr().out
    sink.wait_for("decision=deny")


def test_account_bad_login_denies(config, fault, pam_env):
    pam_env(user="../../x")
    assert pam_account.main(["--config", config.path]) == 1
    assert fault.requests == []


def test_account_break_glass_allowed_while_service_down(write_config, pam_env, sink, tmp_path):
    path = write_config(["http://127.0.0.1:1"], break_glass=["breakglass"])
    pam_env(user="breakglass")
    assert pam_account.main(["--config", path]) == 0
    sink.wait_for("decision=allow .*reason=break_glass")
    sink.wait_for("event=break_glass_report .*reported=no")
    pri = [p for p, _i, m in sink.lines if "reason=break_glass" in m][0]
    assert pri & 7 == 1  # LOG_ALERT


def test_account_break_glass_reported(write_config, fault, pam_env, sink):
    fault.answer = {"recorded": True}
    path = write_config([fault.url], break_glass=["breakglass"])
    pam_env(user="breakglass")
    assert pam_account.main(["--config", path]) == 0
    assert fault.requests[0].json()["stage"] == "account"
    sink.wait_for("event=break_glass_report .*reported=yes")


def test_session_open_sends_key_from_auth_info(config, fault, pam_env, keypair, sink):
    _, pub = keypair
    fault.answer = ALLOW
    pam_env("open_session", auth_info=f"publickey {pub.key_type} {pub.blob}\n")
    assert pam_session.main(["--config", config.path]) == 0
    body = fault.requests[0].json()
    assert body["event"] == "open" and body["fingerprint"] == pub.fingerprint
    assert body["key"] == pub.blob and body["connection"] == connection.connection_id()
    sink.wait_for("decision=allow event=open", ident="jit-pam-session")


def test_session_open_denied(config, fault, pam_env, capsys):
    fault.answer = DENY
    pam_env("open_session")
    assert pam_session.main(["--config", config.path]) == 1
    assert "access denied" in capsys.readouterr().out


def test_session_open_service_down_denies(write_config, pam_env):
    pam_env("open_session")
    assert pam_session.main(["--config", write_config(["http://127.0.0.1:1"])]) == 1


def test_session_close_never_fails(write_config, pam_env, sink):
    pam_env("close_session")
    assert pam_session.main(["--config", write_config(["http://127.0.0.1:1"])]) == 0
    sink.wait_for("decision=close .*reported=no")


def test_session_wrong_type_denies(config, pam_env):
    pam_env("auth")
    assert pam_session.main(["--config", config.path]) == 1


def test_auth_key_parsing(keypair):
    _, pub = keypair
    assert pam_session.auth_key("") is None
    assert pam_session.auth_key("password\n") is None
    info = f"publickey ssh-rsa AAAA\npublickey {pub.key_type} {pub.blob}\n"
    assert pam_session.auth_key(info).fingerprint == pub.fingerprint
    assert pam_session.auth_key("publickey ssh-ed25519-cert-v01@openssh.com AAAA") is None


def test_hooks_ignore_a_config_path_from_the_environment(config, fault, pam_env, monkeypatch):
    # pam_exec passes the PAM environment, which the login user can add to
    # (~/.pam_environment): it must not pick the config (service URL, token file).
    if os.path.exists(paths.CONFIG_PATH):
        pytest.skip(f"{paths.CONFIG_PATH} exists on this machine")
    fault.answer = ALLOW
    pam_env(pam_type="open_session")
    monkeypatch.setenv(paths.CONFIG_ENV, config.path)
    assert pam_account.main([]) == 1
    assert pam_session.main([]) == 1
    assert fault.requests == []
    assert pam_account.main(["--config", config.path]) == 1  # PAM_TYPE is not account
    pam_env()
    assert pam_account.main(["--config", config.path]) == 0
    assert len(fault.requests) == 1


ECHO_CASES = [
    ({"login": "root"}, "login=root"),
    ({"host": "web2"}, "host=web2"),
    ({"fingerprint": "SHA256:" + "B" * 43}, "fingerprint=SHA256:" + "B" * 43),
    ({"connection": "1:2"}, "connection=1:2"),
    ({"connection": None}, "connection=null"),
    ({"login": "x\nLast login: yesterday"}, "login=invalid"),
    (None, "echo=missing"),  # a service older than the echo
]


def _answer_for_another_question(fault, echo) -> None:  # noqa: ANN001
    fault.answer = dict(ALLOW)
    if echo is None:
        fault.echo = False
    else:
        fault.answer |= echo


@pytest.mark.parametrize("echo, mismatch", ECHO_CASES)
def test_account_answer_to_another_question_denies(
    config, fault, pam_env, sink, capsys, echo, mismatch
):
    """An allow meant for another login, host, key or connection is not applied."""
    _answer_for_another_question(fault, echo)
    pam_env()
    assert pam_account.main(["--config", config.path]) == 1
    out = capsys.readouterr().out
    assert out == "jit: access denied: the service answered another question\n"
    field, _, answered = mismatch.partition("=")
    line = sink.wait_for("decision=deny .*reason=mismatch", ident="jit-pam-account")
    assert f"mismatch={field} answered={answered}" in line
    assert "Last login" not in "\n".join(sink.messages())


@pytest.mark.parametrize("echo, mismatch", ECHO_CASES)
def test_session_open_answer_to_another_question_denies(
    config, fault, pam_env, keypair, sink, capsys, echo, mismatch
):
    _, pub = keypair
    _answer_for_another_question(fault, echo)
    pam_env("open_session", auth_info=f"publickey {pub.key_type} {pub.blob}\n")
    assert pam_session.main(["--config", config.path]) == 1
    assert "access denied" in capsys.readouterr().out
    field, _, answered = mismatch.partition("=")
    line = sink.wait_for("decision=deny .*reason=mismatch", ident="jit-pam-session")
    assert f"mismatch={field} answered={answered}" in line


def test_account_allow_logs_the_echoed_host(write_config, fault, pam_env, sink):
    """Without host.name the hook sends no name and accepts (and logs) the service's."""
    from pathlib import Path

    path = write_config([fault.url])
    Path(path).write_text(Path(path).read_text().replace('[host]\nname = "web1"\n', ""))
    fault.answer = ALLOW | {"host": "web7.example.com"}
    pam_env()
    assert pam_account.main(["--config", path]) == 0
    assert fault.requests[0].json()["host"] is None
    sink.wait_for("decision=allow .*host=web7.example.com", ident="jit-pam-account")


@pytest.mark.parametrize("broken", ["text", "ending_text"])
def test_a_failing_notice_never_changes_an_allow(
    config, fault, pam_env, sink, capsys, monkeypatch, keypair, broken
):
    """Fault injection (a bug in the notice code can't be produced with the shipped code):
    rebuilding the next-login notice or the ending line raises. The login is still
    allowed, the failure is logged as notice=error, and the other line is still printed."""
    from jit_hooks.host.login import notices

    def boom(*args: object, **kwargs: object) -> str:
        raise RuntimeError("injected")

    _, pub = keypair
    record_key(config, pub, login="deploy")  # a notice is bound to the login's key
    notice = {"login": "deploy", "request_id": 5, "reason": "revoked", "at": int(time.time())}
    monkeypatch.setattr(notices, "take", lambda spool_dir, login, fingerprint: dict(notice))
    monkeypatch.setattr(notices, broken, boom)
    fault.answer = ALLOW | {"expires_at": int(time.time()) + 300}  # inside the 600 s mark
    pam_env()
    assert pam_account.main(["--config", config.path]) == 0
    sink.wait_for("decision=allow login=deploy", ident="jit-pam-account")
    sink.wait_for("login=deploy notice=error error=RuntimeError", ident="jit-pam-account")
    kept = "jit: your access as" if broken == "text" else "jit: your previous session"
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(kept), out
