"""Hook answers echo their question; key-less logins are audited with no person as actor.

Real service process over HTTP, real SQLite (issue 15 items 4 and 5, server side).
"""

from __future__ import annotations

R = "/api/v1/requests"
AKC = "/api/v1/hook/authorized-keys"
ACCOUNT = "/api/v1/hook/account"
SESSION = "/api/v1/hook/session"


def approved(w, who: str = "alice") -> int:  # noqa: ANN001
    _, req = w.request(who)
    assert w.call("bob", "POST", f"{R}/{req['id']}/approve")[1]["state"] == "approved"
    return req["id"]


def events(w, kind: str) -> list[dict]:  # noqa: ANN001
    got = w.call("root-admin", "GET", "/api/v1/audit?limit=1000")[1]["events"]
    return [e for e in got if e["kind"] == kind]


def akc_body(key, **over) -> dict:  # noqa: ANN001, ANN003
    body = {"login": "deploy", "fingerprint": key.fingerprint, "key_type": key.key_type}
    return body | {"key": key.blob} | over


def test_every_hook_answer_echoes_its_question(world):
    w = world
    request_id = approved(w)
    k = w.keys["alice"]
    status, ans = w.call("web1", "POST", AKC, akc_body(k, host="web1", connection="77:88"))
    assert status == 200 and len(ans["keys"]) == 1
    assert (ans["host"], ans["login"], ans["fingerprint"], ans["connection"]) == (
        "web1",
        "deploy",
        k.fingerprint,
        "77:88",
    )
    # A host without host.name (and an older host) sends neither: the echo still names
    # the token's host, and the connection it did not send as null.
    ans = w.call("web1", "POST", AKC, akc_body(k))[1]
    assert (ans["host"], ans["connection"], len(ans["keys"])) == ("web1", None, 1)
    # The other host's token: its own name, no keys.
    ans = w.call("web2", "POST", AKC, akc_body(k))[1]
    assert (ans["host"], ans["keys"]) == ("web2", [])

    acct = {"host": "web1", "login": "deploy", "rhost": "10.0.0.9", "service": "sshd"}
    acct |= {"connection": "77:88", "fingerprint": k.fingerprint}
    ans = w.call("web1", "POST", ACCOUNT, acct)[1]
    assert ans == {
        "host": "web1",
        "login": "deploy",
        "fingerprint": k.fingerprint,
        "connection": "77:88",
        "decision": "allow",
        "reason": "active approval",
        "request_id": request_id,
        "expires_at": ans["expires_at"],
        "from_cidrs": None,  # the grant is not pinned to source ranges
    }
    opened = {"event": "open", "host": "web1", "login": "deploy", "rhost": "10.0.0.9"}
    opened |= {"connection": "77:88", "key_type": k.key_type, "key": k.blob, "fingerprint": None}
    ans = w.call("web1", "POST", SESSION, opened)[1]
    # The echo is the question as asked (fingerprint null), not what the service derived.
    assert (ans["host"], ans["login"], ans["fingerprint"], ans["connection"]) == (
        "web1",
        "deploy",
        None,
        "77:88",
    )
    assert ans["decision"] == "allow"
    ans = w.call("web1", "POST", SESSION, opened | {"event": "close"})[1]
    assert (ans["host"], ans["login"], ans["connection"]) == ("web1", "deploy", "77:88")

    bg = {"login": "root", "rhost": None, "connection": "77:88", "stage": "account"}
    ans = w.call("web1", "POST", "/api/v1/hook/break-glass", bg | {"report_id": "ab" * 16})[1]
    assert ans == {"recorded": True, "host": "web1", "login": "root", "connection": "77:88"} | {
        "report_id": "ab" * 16,
        "stage": "account",
    }
    assert w.call("web2", "GET", "/api/v1/hook/sessions")[1]["host"] == "web2"


def test_a_host_that_names_itself_wrongly_is_denied_and_audited(world):
    """host.name "web2" on a host holding web1's token: no keys, deny, the audit says why."""
    w = world
    approved(w)
    k = w.keys["alice"]
    ans = w.call("web1", "POST", AKC, akc_body(k, host="web2"))[1]
    assert (ans["host"], ans["keys"]) == ("web1", [])
    acct = {"host": "web2", "login": "deploy", "connection": None, "fingerprint": k.fingerprint}
    ans = w.call("web1", "POST", ACCOUNT, acct)[1]
    assert (ans["host"], ans["decision"]) == ("web1", "deny")
    assert "web2" in ans["reason"]
    last = events(w, "hook.account")[-1]
    assert (last["host"], last["actor"], last["data"]["decision"]) == ("web1", None, "deny")
    assert "web2" in last["data"]["reason"]
    # A malformed name is a 422 naming the field, as for every other bad input.
    status, err = w.call("web1", "POST", ACCOUNT, acct | {"host": "web 1"})
    assert status == 422 and "host" in str(err)


def test_keyless_account_login_names_no_person(world):
    """Password / keyboard-interactive / certificate: allowed by the login account alone."""
    w = world
    first = approved(w)
    second = approved(w, "mallory")  # two people hold the account open
    acct = {"host": "web1", "login": "deploy", "rhost": "192.0.2.7", "service": "sshd"}
    acct |= {"connection": "4242:17", "fingerprint": None}
    ans = w.call("web1", "POST", ACCOUNT, acct)[1]
    assert ans["decision"] == "allow"
    event = events(w, "hook.account")[-1]
    assert event["actor"] is None  # was the approval holder before
    assert event["data"]["via"] == "login-account"
    assert event["data"]["request_ids"] == sorted([first, second])
    assert event["data"]["rhost"] == "192.0.2.7"
    assert event["data"]["connection"] == "4242:17"

    # With the key the AKC accepted, the key's owner is the actor, as before.
    ans = w.call("web1", "POST", ACCOUNT, acct | {"fingerprint": w.keys["alice"].fingerprint})[1]
    assert (ans["decision"], ans["request_id"]) == ("allow", first)
    event = events(w, "hook.account")[-1]
    assert event["actor"] == "alice" and "via" not in event["data"]

    # A session opened without a key (password login): the same rule.
    opened = {"event": "open", "host": "web1", "login": "deploy", "rhost": "192.0.2.7"}
    opened |= {"connection": "4242:17", "key_type": None, "key": None, "fingerprint": None}
    assert w.call("web1", "POST", SESSION, opened)[1]["decision"] == "allow"
    event = events(w, "hook.session")[-1]
    assert event["actor"] is None and event["data"]["via"] == "login-account"
    assert event["data"]["request_ids"] == sorted([first, second])


def test_keyless_login_without_approval_is_denied_with_no_actor(world):
    w = world
    acct = {"login": "deploy", "rhost": "192.0.2.7", "connection": None, "fingerprint": None}
    assert w.call("web1", "POST", ACCOUNT, acct)[1]["decision"] == "deny"
    event = events(w, "hook.account")[-1]
    assert event["actor"] is None and event["data"]["decision"] == "deny"
    assert "via" not in event["data"]
