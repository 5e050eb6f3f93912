"""`jit login --sso` end to end: real CLI, real jit-server, real OpenID provider (device grant)."""

from __future__ import annotations

import re
import stat
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.oidc_provider import Person, wait_for
from tests.sso.conftest import SsoWorld, needs_provider, start_sso_world

pytestmark = [needs_provider, pytest.mark.usefixtures("backend")]


def start_login(sso: SsoWorld, home: Path) -> tuple[subprocess.Popen, str, str]:
    """Run `jit login --sso`; return it with the verification URI and user code it printed."""
    proc = sso.jit(home, "login", "--sso", "--url", sso.service.url)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    m = re.match(r"To sign in, open (\S+) and enter the code (\S+)$", line.strip())
    assert m, f"unexpected first line: {line!r} {proc.stderr.read() if proc.poll() else ''}"
    return proc, m.group(1), m.group(2)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


def events(sso: SsoWorld, kind: str) -> list[str]:
    return [r[0] for r in sso.service.sql("SELECT data FROM audit_events WHERE kind = ?", (kind,))]


def test_device_login_signs_in_with_roles_from_groups(sso: SsoWorld, tmp_path: Path) -> None:
    home = tmp_path / "home-alice"
    proc, uri, code = start_login(sso, home)
    assert uri == sso.provider.issuer + "/device"
    page = Person(sso.provider.issuer, sso.provider.ca_file, "alice").enter_device_code(uri, code)
    assert "Sign-in Success" in page
    rc, err = finish(proc)
    assert rc == 0, err
    assert "as alice (roles: approver, requester)" in err
    # The token is stored like `jit login` stores it (0600) and works.
    config = home / ".config" / "jit" / "config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    token = tomllib.loads(config.read_text())["token"]
    status, me = sso.service.call("GET", "/api/v1/me", token)
    assert status == 200 and me["name"] == "alice"
    # groups -> roles: sre gives requester + approver (alice had requester only).
    assert sso.service.sql("SELECT roles FROM users WHERE name = 'alice'") == [
        ("approver requester",)
    ]
    assert any('"alice"' in d and '"sso"' in d for d in events(sso, "user.roles_set"))
    # The SSO token has the interactive TTL (default 12 h), counted from its creation.
    [(created, expires, name)] = sso.service.sql(
        "SELECT t.created_at, t.expires_at, t.name FROM tokens t JOIN users u"
        " ON u.id = t.user_id WHERE u.name = 'alice' AND t.kind = 'user'"
    )
    assert (expires - created, name) == (12 * 3600, "sso")
    [data] = events(sso, "login.sso")
    assert '"sso-device"' in data
    # The flow is used up.
    assert sso.service.sql("SELECT count(*) FROM sso_flows") == [(0,)]


def refused(sso: SsoWorld, tmp_path: Path, login: str, **kw) -> tuple[int, str]:  # noqa: ANN003
    proc, uri, code = start_login(sso, tmp_path / f"home-{login}")
    Person(sso.provider.issuer, sso.provider.ca_file, login).enter_device_code(uri, code, **kw)
    return finish(proc)


def no_tokens(sso: SsoWorld, login: str) -> bool:
    return sso.service.sql(
        "SELECT count(*) FROM tokens t JOIN users u ON u.id = t.user_id WHERE u.name = ?",
        (login,),
    ) == [(0,)]


def test_no_mapped_group_is_refused(sso: SsoWorld, tmp_path: Path) -> None:
    # Not linked to dave's IdP account: refused, and nothing of jit user dave changes.
    rc, err = refused(sso, tmp_path, "dave")
    assert rc != 0
    assert err.strip().splitlines()[-1] == (
        "jit: error: SSO sign-in refused: none of your identity provider groups gives a role"
        " in jit; ask a jit admin"
    )
    assert no_tokens(sso, "dave")
    assert sso.service.sql("SELECT roles FROM users WHERE name = 'dave'") == [("requester",)]
    assert any('"no_role"' in d and '"dave"' in d for d in events(sso, "login.failed"))
    # The service's own log says why (docs/server.md: one line per refusal).
    wait_for(lambda: "sso sign-in refused: reason=no_role" in sso.service.log_path.read_text())


def test_a_linked_user_in_no_mapped_group_loses_roles_and_sso_tokens(
    sso: SsoWorld, tmp_path: Path
) -> None:
    """dave is linked and holds a token from an earlier SSO sign-in; the IdP has since
    taken him out of every mapped group. His next sign-in is refused and takes his
    roles and SSO tokens (his other tokens stay: an admin disables the user)."""
    from jit_hooks.server import oidc_signin
    from jit_hooks.server.auth import UserPrincipal
    from tests.server.conftest import Admin

    sso.service.admin("sso", "link", "dave", "--subject", "dave")
    [(uid,)] = sso.service.sql("SELECT id FROM users WHERE name = 'dave'")
    admin = Admin(sso.service)
    try:  # the token an earlier sign-in (with a mapped group) would have issued
        with admin.engine.begin() as conn:
            earlier = oidc_signin.issue_token(
                conn, user=UserPrincipal(uid, "dave", frozenset()), ttl=3600, now=int(time.time())
            )
    finally:
        admin.close()
    other = sso.service.admin("token", "create", "dave", "--name", "cron").strip()
    assert sso.service.call("GET", "/api/v1/me", earlier)[0] == 200
    rc, err = refused(sso, tmp_path, "dave")
    assert rc != 0
    assert "none of your identity provider groups" in err.strip().splitlines()[-1]
    assert sso.service.sql("SELECT roles FROM users WHERE name = 'dave'") == [("",)]
    status, body = sso.service.call("GET", "/api/v1/me", earlier)
    assert status == 401, body
    assert sso.service.call("GET", "/api/v1/me", other)[0] == 200
    assert any(
        '"no_role"' in d and '"sso_tokens_revoked":1' in d for d in events(sso, "user.roles_set")
    )


def test_the_last_admin_in_no_mapped_group_keeps_admin(sso: SsoWorld, tmp_path: Path) -> None:
    sso.service.admin("user", "set-roles", "dave", "admin,requester")
    sso.service.admin("sso", "link", "dave", "--subject", "dave")
    rc, _ = refused(sso, tmp_path, "dave")
    assert rc != 0
    assert sso.service.sql("SELECT roles FROM users WHERE name = 'dave'") == [("admin",)]


def test_unknown_user_is_refused_and_not_created(sso: SsoWorld, tmp_path: Path) -> None:
    rc, err = refused(sso, tmp_path, "erin")
    assert rc != 0
    assert "your account is not a jit user" in err.strip().splitlines()[-1]
    assert sso.service.sql("SELECT count(*) FROM users WHERE name = 'erin'") == [(0,)]
    assert any('"unknown_user"' in d for d in events(sso, "login.failed"))


def test_denied_at_the_provider_is_refused(sso: SsoWorld, tmp_path: Path) -> None:
    rc, err = refused(sso, tmp_path, "alice", abort=True)
    assert rc != 0
    assert "denied at the identity provider" in err.strip().splitlines()[-1]
    assert no_tokens(sso, "alice")
    assert any('"denied"' in d for d in events(sso, "login.failed"))


def test_expired_code_is_refused(tmp_path: Path) -> None:
    # The provider's device codes live 2 s here; nobody enters this one.
    w = start_sso_world(tmp_path, device_code_ttl=2)
    try:
        proc, _, _ = start_login(w, tmp_path / "home")
        rc, err = finish(proc)
        assert rc != 0
        assert "expired" in err.strip().splitlines()[-1]
        assert any('"expired"' in d for d in events(w, "login.failed"))
    finally:
        w.service.stop()
        w.provider.stop()


def test_unknown_users_are_created_when_configured(tmp_path: Path) -> None:
    w = start_sso_world(tmp_path, create_users="true")
    try:
        rc, err = refused(w, tmp_path, "erin")
        assert rc == 0, err
        assert w.service.sql("SELECT roles FROM users WHERE name = 'erin'") == [
            ("approver requester",)
        ]
        assert any('"erin"' in d for d in events(w, "user.added"))
    finally:
        w.service.stop()
        w.provider.stop()


def test_sso_token_expires_after_its_ttl(tmp_path: Path) -> None:
    # The service's interactive token lifetime (JIT_USER_TOKEN_TTL) applies to SSO tokens.
    w = start_sso_world(tmp_path, env={"JIT_USER_TOKEN_TTL": "3"})
    try:
        home = tmp_path / "home-alice"
        proc, uri, code = start_login(w, home)
        Person(w.provider.issuer, w.provider.ca_file, "alice").enter_device_code(uri, code)
        rc, err = finish(proc)
        assert rc == 0, err
        [(created, expires)] = w.service.sql(
            "SELECT created_at, expires_at FROM tokens WHERE kind = 'user' AND name = 'sso'"
        )
        assert expires - created == 3

        def refused_as_expired() -> bool:
            r = w.run(home, "tokens", "list")
            return r.returncode != 0 and "your session expired, run jit login" in r.stderr

        wait_for(refused_as_expired, timeout=60)
    finally:
        w.service.stop()
        w.provider.stop()


def test_another_idp_account_with_the_same_name_is_refused(sso: SsoWorld, tmp_path: Path) -> None:
    # jit user alice is linked to her IdP subject (conftest: jit-server sso link).
    proc, uri, code = start_login(sso, tmp_path / "home-alice")
    Person(sso.provider.issuer, sso.provider.ca_file, "alice").enter_device_code(uri, code)
    assert finish(proc)[0] == 0
    assert sso.service.sql("SELECT sub FROM sso_identities") == [("alice",)]
    # Another account whose preferred_username is also "alice" (a different sub).
    rc, err = refused(sso, tmp_path, "alice-impostor")
    assert rc != 0
    assert "belongs to another identity provider account" in err.strip().splitlines()[-1]
    assert any('"identity_mismatch"' in d for d in events(sso, "login.failed"))
    assert sso.service.sql("SELECT count(*) FROM tokens WHERE kind = 'user' AND name = 'sso'") == [
        (1,)
    ]


def test_groups_never_take_admin_from_the_last_admin(sso: SsoWorld, tmp_path: Path) -> None:
    # alice is the only admin; her IdP groups (sre) do not give admin.
    sso.service.admin("user", "set-roles", "alice", "admin")
    proc, uri, code = start_login(sso, tmp_path / "home-alice")
    Person(sso.provider.issuer, sso.provider.ca_file, "alice").enter_device_code(uri, code)
    rc, err = finish(proc)
    assert rc != 0
    assert "you are the last jit admin" in err.strip().splitlines()[-1]
    assert sso.service.sql("SELECT roles FROM users WHERE name = 'alice'") == [("admin",)]
    assert any('"last_admin"' in d for d in events(sso, "login.failed"))


def test_an_existing_user_is_not_bound_by_an_idp_name_alone(sso: SsoWorld, tmp_path: Path) -> None:
    """A jit user made before SSO (erin, say the first admin) is not taken over by
    whoever the IdP calls erin: refused until an admin links the subject, audited."""
    sso.service.admin("user", "add", "erin", "--role", "approver")
    rc, err = refused(sso, tmp_path / "first", "erin")
    assert rc != 0
    assert "not linked to this identity provider account" in err.strip().splitlines()[-1]
    assert "jit-server sso link erin --subject erin" in err
    assert no_tokens(sso, "erin")
    assert sso.service.sql("SELECT roles FROM users WHERE name = 'erin'") == [("approver",)]
    assert sso.service.sql(
        "SELECT count(*) FROM sso_identities s JOIN users u ON u.id = s.user_id"
        " WHERE u.name = 'erin'"
    ) == [(0,)]
    assert any('"not_linked"' in d and '"sub":"erin"' in d for d in events(sso, "login.failed"))
    # The admin step, audited with who did it; then erin signs in.
    sso.service.admin("sso", "link", "erin", "--subject", "erin")
    linked = [d for d in events(sso, "user.sso_bound") if '"erin"' in d]
    assert len(linked) == 1 and '"via":"admin"' in linked[0]
    rc, err = refused(sso, tmp_path / "second", "erin")
    assert rc == 0, err


def test_existing_users_are_linked_on_first_sign_in_when_configured(tmp_path: Path) -> None:
    w = start_sso_world(tmp_path, link_existing_users="true")
    try:
        w.service.admin("user", "add", "erin", "--role", "requester")
        rc, err = refused(w, tmp_path, "erin")
        assert rc == 0, err
        assert w.service.sql(
            "SELECT s.sub FROM sso_identities s JOIN users u ON u.id = s.user_id"
            " WHERE u.name = 'erin'"
        ) == [("erin",)]
    finally:
        w.service.stop()
        w.provider.stop()


def test_email_names_only_verified_addresses_in_our_domains(tmp_path: Path) -> None:
    """username_claim = "email": erin@attacker.example and an unverified erin@example.org
    are not jit user erin (even with link_existing_users on, where a match binds)."""
    w = start_sso_world(
        tmp_path,
        username_claim='"email"',
        email_domains='["Example.org"]',
        link_existing_users="true",
    )
    try:
        w.service.admin("user", "add", "erin", "--role", "requester")
        for login, why in (("mallory", "domain is not one jit accepts"), ("ursula", "verified")):
            rc, err = refused(w, tmp_path, login)
            assert rc != 0
            assert why in err.strip().splitlines()[-1]
        assert no_tokens(w, "erin")
        assert w.service.sql("SELECT count(*) FROM sso_identities WHERE sub != 'alice'") == [(0,)]
        failed = events(w, "login.failed")
        assert any('"email_domain"' in d for d in failed)
        assert any('"unverified_email"' in d for d in failed)
        rc, err = refused(w, tmp_path / "erin", "erin")  # erin@example.org, verified
        assert rc == 0, err
        assert "as erin" in err
    finally:
        w.service.stop()
        w.provider.stop()


def test_email_usernames_need_email_domains(tmp_path: Path) -> None:
    """The service does not start with username_claim = "email" and no allow-list."""
    with pytest.raises(AssertionError, match="needs email_domains"):
        start_sso_world(tmp_path, username_claim='"email"')


def _post(url: str, path: str, body: dict | None, source: str = "127.0.0.1") -> tuple[int, dict]:
    """One POST from a chosen loopback source address (127.0.0.2 is another client)."""
    import http.client
    import json
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30, source_address=(source, 0))
    try:
        data = json.dumps(body or {}).encode()
        conn.request("POST", path, data, {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def test_device_sign_ins_are_capped_per_client_and_overall(tmp_path: Path) -> None:
    """The unauthenticated start is bounded: 3 live flows per client address, 5 in all;
    past that 429 with a JSON body, and the IdP is not asked."""
    w = start_sso_world(tmp_path, max_device_flows="5", max_device_flows_per_client="3")
    start = "/api/v1/login/sso/device"
    try:
        for _ in range(3):
            assert _post(w.service.url, start, None)[0] == 200
        status, body = _post(w.service.url, start, None)
        assert status == 429, body
        assert body["error"] == "too_many_sign_ins" and "your address" in body["detail"]
        for _ in range(2):  # another client still gets in, up to the overall cap
            assert _post(w.service.url, start, None, source="127.0.0.2")[0] == 200
        status, body = _post(w.service.url, start, None, source="127.0.0.2")
        assert (status, body["error"]) == (429, "too_many_sign_ins")
        assert w.service.sql("SELECT count(*) FROM sso_flows") == [(5,)]
    finally:
        w.service.stop()
        w.provider.stop()


def test_early_polls_are_answered_slow_down_without_asking_the_idp(tmp_path: Path) -> None:
    # An IdP that announces no interval (RFC 8628: 5 s): six polls fit in it on a busy machine.
    sso = start_sso_world(tmp_path, interval=None)
    try:
        status, started = _post(sso.service.url, "/api/v1/login/sso/device", None)
        assert status == 200
        assert started["interval"] == 5
        poll = "/api/v1/login/sso/device/token"
        before = sso.provider.log_path.read_text().count("grant.error")
        answers = [_post(sso.service.url, poll, {"handle": started["handle"]}) for _ in range(6)]
        assert [s for s, _ in answers] == [202] * 6
        assert all(b["status"] == "pending" for _, b in answers)
        # The first went to the IdP (authorization_pending); the rest came too soon.
        assert [b["slow_down"] for _, b in answers[1:]] == [5] * 5
        wait_for(lambda: sso.provider.log_path.read_text().count("grant.error") >= before + 1)
        assert sso.provider.log_path.read_text().count("grant.error") == before + 1
    finally:
        sso.service.stop()
        sso.provider.stop()
