"""Logins through a real sshd + PAM + hooks + service: who gets in, and the audit trail."""

from __future__ import annotations

AKC = "jit-authorized-keys"
ACCOUNT = "jit-pam-account"
SESSION = "jit-pam-session"


def assert_denied(result):
    assert result.returncode == 255, (result.returncode, result.stdout, result.stderr)
    assert "ran-ok" not in result.stdout


def test_approved_request_lets_the_key_in(world):
    rid = world.request("alice")
    world.approve(rid)
    r = world.ssh("alice", "echo", "ran-ok", "$(id -un)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ran-ok", world.login]
    sink = world.box.sink
    sink.wait_for(rf"decision=allow login={world.login} .*request={rid}", ident=AKC)
    sink.wait_for(rf"decision=allow login={world.login} .*request={rid}", ident=ACCOUNT)
    sink.wait_for(rf"decision=allow event=open login={world.login}", ident=SESSION)
    kinds = {e["kind"] for e in world.events()}
    assert {"hook.authorized_keys", "hook.account", "hook.session"} <= kinds
    assert "Accepted publickey for " + world.login in world.box.log_text()


def test_no_request_is_denied(world):
    assert_denied(world.ssh("alice", "echo", "ran-ok"))
    world.box.sink.wait_for(r"decision=deny .*reason=no_approval", ident=AKC)
    assert world.events("hook.authorized_keys")
