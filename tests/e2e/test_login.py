"""Logins through a real sshd + PAM + hooks + service: who gets in, and the audit trail.

Every test asserts the observable outcome (the command ran, or ssh failed) and
that the hooks really ran (their log lines; PAM falls back silently otherwise),
and, where the service was reachable, the audit event it recorded.
"""

from __future__ import annotations

import re
import time

from tests.e2e.conftest import PASSWORD

AKC = "jit-authorized-keys"
ACCOUNT = "jit-pam-account"
SESSION = "jit-pam-session"


def assert_in(result, login):
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert result.stdout.split() == ["ran-ok", login]


def assert_denied(result):
    assert result.returncode == 255, (result.returncode, result.stdout, result.stderr)
    assert "ran-ok" not in result.stdout
    assert "Permission denied" in result.stderr


def decisions(world, kind):
    return [(e["data"]["decision"], e["data"].get("request_id")) for e in world.events(kind)]


def test_approved_request_lets_the_key_in(world):
    rid = world.request("alice")
    world.approve(rid)
    assert_in(world.ssh("alice", "echo ran-ok $(id -un)"), world.login)
    sink = world.box.sink
    sink.wait_for(rf"decision=allow login={world.login} .*request={rid}", ident=AKC)
    # The account hook opened the session (--open-session): no session-open hook ran.
    sink.wait_for(
        rf"decision=allow login={world.login} .*session=open .*request={rid}", ident=ACCOUNT
    )
    sink.wait_for(rf"decision=close event=close login={world.login} .*reported=yes", ident=SESSION)
    # sshd ran the AKC twice (find the key, verify the signature): the second run
    # reprinted the first answer without asking the service again.
    assert decisions(world, "hook.authorized_keys") == [("allow", rid)]
    sink.wait_for(rf"decision=allow login={world.login} .*reused=yes", ident=AKC)
    assert decisions(world, "hook.account") == [("allow", rid)]
    assert [e["data"]["event"] for e in world.events("hook.session")] == ["close"]
    account = world.events("hook.account")[0]["data"]
    assert account["fingerprint"] == world.person("alice").public.fingerprint
    assert account["session"] == "open"
    # The session is bound to the key's owner and her approval, and closed at logout.
    rows = world.svc.sqlite(
        "SELECT s.request_id, u.name, s.connection, s.closed_at FROM sessions s "
        "JOIN users u ON u.id = s.user_id WHERE s.request_id = ?",
        (rid,),
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [(rid, "alice", account["connection"])]
    assert rows[0][3] is not None
    assert f"Accepted publickey for {world.login}" in world.box.log_text()


def test_no_request_is_denied(world):
    assert_denied(world.ssh("alice", "echo ran-ok"))
    world.box.sink.wait_for(r"decision=deny .*reason=no_approval", ident=AKC)
    assert decisions(world, "hook.authorized_keys") == [("deny", None)]
    assert world.events("hook.account") == []


def test_pending_request_is_denied(world):
    world.request("alice")
    assert_denied(world.ssh("alice", "echo ran-ok"))
    world.box.sink.wait_for(r"decision=deny .*reason=no_approval", ident=AKC)
    assert decisions(world, "hook.authorized_keys") == [("deny", None)]


def test_expired_approval_is_denied(world):
    rid = world.request("alice", duration=4)
    world.approve(rid)
    assert_in(world.ssh("alice", "echo ran-ok $(id -un)"), world.login)
    deadline = time.monotonic() + 30
    while world.api("GET", f"/api/v1/requests/{rid}", "alice")["state"] != "expired":
        assert time.monotonic() < deadline, "request never expired"
        time.sleep(0.5)
    world.box.sink.clear()
    assert_denied(world.ssh("alice", "echo ran-ok"))
    world.box.sink.wait_for(r"decision=deny .*reason=no_approval", ident=AKC)
    assert decisions(world, "hook.authorized_keys")[-1] == ("deny", None)


def test_revoked_approval_is_denied(world):
    rid = world.request("alice")
    world.approve(rid)
    assert_in(world.ssh("alice", "echo ran-ok $(id -un)"), world.login)
    world.revoke(rid)
    world.box.sink.clear()
    assert_denied(world.ssh("alice", "echo ran-ok"))
    world.box.sink.wait_for(r"decision=deny .*reason=no_approval", ident=AKC)
    assert decisions(world, "hook.authorized_keys")[-1] == ("deny", None)
    assert world.events("request.revoked")


def test_approval_for_another_login_is_denied(world):
    world.approve(world.request("alice", login=world.box.other_login))
    assert_denied(world.ssh("alice", "echo ran-ok"))  # as world.login
    world.box.sink.wait_for(rf"decision=deny login={world.login} .*reason=no_approval", ident=AKC)
    assert decisions(world, "hook.authorized_keys") == [("deny", None)]


def test_approval_for_another_host_is_denied(world):
    world.approve(world.request("alice", host="web2"))
    assert_denied(world.ssh("alice", "echo ran-ok"))
    world.box.sink.wait_for(r"decision=deny .*reason=no_approval", ident=AKC)
    assert decisions(world, "hook.authorized_keys") == [("deny", None)]
    assert {e["host"] for e in world.events("hook.authorized_keys")} == {"web1"}


def test_someone_elses_key_is_denied(world):
    world.approve(world.request("alice"))
    assert_denied(world.ssh("carol", "echo ran-ok"))
    fp = world.person("carol").public.fingerprint
    world.box.sink.wait_for(
        rf"decision=deny .*fingerprint={re.escape(fp)} .*reason=no_approval", ident=AKC
    )
    assert decisions(world, "hook.authorized_keys") == [("deny", None)]


def test_unregistered_key_is_denied(world):
    world.approve(world.request("alice"))
    stranger = world.box.people.setdefault("stranger", world.box.person("stranger"))
    assert_denied(world.box.ssh(world.login, stranger, "echo ran-ok"))
    world.box.sink.wait_for(r"decision=deny .*reason=no_approval", ident=AKC)


def test_service_stopped_denies(world):
    world.approve(world.request("alice"))
    world.svc.stop()
    assert_denied(world.ssh("alice", "echo ran-ok"))
    world.box.sink.wait_for(r"decision=deny .*reason=refused", ident=AKC)
    assert "AuthorizedKeysCommand" in world.box.log_text()


def test_password_login_needs_an_approval(world):
    r = world.box.ssh_password(world.login, PASSWORD, "echo ran-ok $(id -un)")
    assert r.returncode == 255 and "ran-ok" not in r.stdout, r
    world.box.sink.wait_for(
        rf"decision=deny login={world.login} .*reason=service_denied", ident=ACCOUNT
    )
    assert decisions(world, "hook.account") == [("deny", None)]
    # The account hook's one-line reason reaches the ssh user.
    assert "jit: access denied" in r.stderr

    rid = world.request("alice")
    world.approve(rid)
    world.box.sink.clear()
    r = world.box.ssh_password(world.login, PASSWORD, "echo ran-ok $(id -un)")
    assert_in(r, world.login)
    world.box.sink.wait_for(rf"decision=allow login={world.login} .*request={rid}", ident=ACCOUNT)
    account = world.events("hook.account")[-1]["data"]
    assert account["decision"] == "allow" and account["fingerprint"] is None
    assert f"Accepted password for {world.login}" in world.box.log_text()
    # No key, no person: the session is held open by the login's approval, as the
    # session hook recorded it (a key-less session names no key owner).
    assert account["session"] == "open" and account["via"] == "login-account"
    rows = world.svc.sqlite(
        "SELECT request_id FROM sessions WHERE connection = ?", (account["connection"],)
    )
    assert [r[0] for r in rows] == [rid]


def test_wrong_password_never_reaches_the_account_hook(world):
    world.approve(world.request("alice"))
    r = world.box.ssh_password(world.login, "wrong-password", "echo ran-ok")
    assert r.returncode == 255 and "ran-ok" not in r.stdout
    assert world.events("hook.account") == []
    # Our PAM stack (pam_unix) did check it: the sandbox's PAM file is in use.
    assert f"Failed password for {world.login}" in world.box.log_text()


def test_dead_first_url_then_healthy_service_lets_in(world):
    from jit_hooks.testing.sshd import free_port

    world.box.configure([f"http://127.0.0.1:{free_port()}", world.svc.url], world.host_token)
    rid = world.request("alice")
    world.approve(rid)
    assert_in(world.ssh("alice", "echo ran-ok $(id -un)"), world.login)
    world.box.sink.wait_for(rf"decision=allow login={world.login} .*request={rid}", ident=ACCOUNT)


def test_no_token_in_any_hook_log_or_sshd_log(world):
    world.approve(world.request("alice"))
    assert_in(world.ssh("alice", "echo ran-ok $(id -un)"), world.login)
    assert_denied(world.ssh("carol", "echo ran-ok"))
    world.box.sink.wait_for(r"decision=close", ident=SESSION)
    logs = "\n".join(world.box.sink.messages()) + world.box.log_text()
    secret = world.host_token.split("_", 1)[1]
    assert secret not in logs and world.host_token not in logs
    for token in world.tokens.values():
        assert token not in logs
