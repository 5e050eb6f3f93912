"""Grants pinned to source ranges (`jit request --from`), through a real sshd, PAM and service.

The key line carries from="..." (sshd refuses the key from elsewhere) and the
PAM account hook checks PAM_RHOST for every login, so a password login from
outside the ranges is denied too, with reason=source-not-allowed in syslog.
sshd listens on 127.0.0.1; `ssh -b 127.0.0.2` connects from another source
address of Linux's 127/8.
"""

from __future__ import annotations

from tests.e2e.conftest import PASSWORD
from tests.e2e.test_login import ACCOUNT, AKC, assert_denied, assert_in


def pinned(world, cidrs: list[str]) -> int:
    body = {
        "host": "web1",
        "login": world.login,
        "reason": "e2e pinned",
        "duration_seconds": 3600,
        "from_cidrs": cidrs,
    }
    rid = world.api("POST", "/api/v1/requests", "alice", body, expect=201)["id"]
    world.approve(rid)
    return rid


def test_key_login_only_from_the_pinned_address(world):
    rid = pinned(world, ["127.0.0.1/32"])
    assert_in(world.ssh("alice", "echo ran-ok $(id -un)"), world.login)
    world.box.sink.wait_for(rf"decision=allow .*request={rid} .*from=127.0.0.1/32", ident=AKC)
    world.box.sink.wait_for(rf"decision=allow .*request={rid} .*from=127.0.0.1/32", ident=ACCOUNT)
    # The session is recorded against its grant with its source and key (usage report).
    rows = world.svc.sqlite("SELECT rhost, fingerprint FROM sessions WHERE request_id = ?", (rid,))
    assert rows == [("127.0.0.1", world.person("alice").public.fingerprint)]

    # Same key, same approval, another source address: sshd refuses the key line.
    r = world.ssh("alice", "echo ran-ok $(id -un)", extra=("-b", "127.0.0.2"))
    assert_denied(r)
    assert "not from a permitted host" in world.box.log_text()


def test_pinned_elsewhere_denies_key_and_password_logins(world):
    rid = pinned(world, ["10.0.0.0/8"])
    # The key: sshd applies the from= option the hook printed.
    assert_denied(world.ssh("alice", "echo ran-ok $(id -un)"))
    world.box.sink.wait_for(rf"decision=allow .*request={rid} .*from=10.0.0.0/8", ident=AKC)

    # A password never sees a key line: the account call checks the source. The
    # service refuses it first (and records no session); the hook's own check
    # (reason=source-not-allowed) stays as a second line: tests/host/test_pinned.py.
    r = world.box.ssh_password(world.login, PASSWORD, "echo ran-ok $(id -un)")
    assert r.returncode == 255 and "ran-ok" not in r.stdout, r
    world.box.sink.wait_for(
        rf"decision=deny login={world.login} rhost=127.0.0.1 .*reason=service_denied",
        ident=ACCOUNT,
    )
    assert f"approval {rid} does not allow logins from 127.0.0.1" in r.stderr
    [account] = world.events("hook.account")
    assert (account["data"]["decision"], account["data"]["pinned_request"]) == ("deny", rid)
    assert world.svc.sql("SELECT COUNT(*) FROM sessions WHERE request_id = ?", (rid,)) == [(0,)]


def test_unpinned_grant_still_lets_any_source_in(world):
    rid = world.request("alice")
    world.approve(rid)
    assert_in(world.ssh("alice", "echo ran-ok $(id -un)", extra=("-b", "127.0.0.2")), world.login)
