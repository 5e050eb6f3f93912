"""/ui over plain HTTP (no browser): headers, cookies, sessions, CSRF, one code path."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from jit_hooks.server import store
from tests.ui.conftest import COOKIE, Browserless, hidden
from tests.utils.backends import services_on

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@pytest.fixture(scope="module", autouse=True)
def backend(db_backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on SQLite and on PostgreSQL (tests/utils/backends.py)."""
    with services_on(db_backend, request):
        yield db_backend


def _state(w, rid: int) -> str:  # noqa: ANN001
    return w.svc.sql("SELECT state FROM requests WHERE id = ?", (rid,))[0][0]


def _audit(w, kind: str) -> list[tuple]:  # noqa: ANN001
    return w.svc.sql("SELECT actor, data FROM audit_events WHERE kind = ? ORDER BY id", (kind,))


def test_root_redirects_and_anonymous_is_sent_to_sign_in(ui_world, client_for):
    c = client_for()
    r = c.get("/")
    assert (r.status_code, r.headers["location"]) == (302, "/ui")
    for path in ("/ui", "/ui/mine", "/ui/active", "/ui/requests/1"):
        r = c.get(path)
        assert (r.status_code, r.headers["location"]) == (303, "/ui/login"), path


def test_security_headers_on_pages_and_static(ui_world, client_for):
    c = client_for("bob")
    for path in ("/ui/login", "/ui", "/ui/mine", "/ui/active"):
        r = c.get(path)
        assert r.status_code == 200, path
        h = r.headers
        assert h["Content-Security-Policy"] == CSP, path
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "no-referrer"
        assert h["X-Frame-Options"] == "DENY"
        assert h["Cache-Control"] == "no-store", path
        assert "<script" not in r.text and " on" + "click" not in r.text  # no script at all
    css = c.get("/ui/static/ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["Content-Security-Policy"] == CSP
    assert css.headers["X-Content-Type-Options"] == "nosniff"


def test_session_cookie_flags_and_stored_hashed(ui_world, client_for):
    c = client_for()
    page = c.get("/ui/login")
    login_cookie = [v for v in page.raw.headers.getlist("Set-Cookie")][0]
    assert login_cookie.startswith("__Host-jit_login=")
    r = c.post(
        "/ui/login",
        {"login_csrf": hidden(page.text, "login_csrf"), "token": ui_world.tokens["bob"]},
    )
    assert r.status_code == 303
    set_cookie = [v for v in r.raw.headers.getlist("Set-Cookie") if v.startswith(COOKIE + "=")]
    assert len(set_cookie) == 1
    attrs = {a.strip().lower() for a in set_cookie[0].split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attrs
    assert not any(a.startswith("domain") for a in attrs)
    value = c.cookies[COOKIE]
    rows = ui_world.svc.sql("SELECT token_hash, kind, name FROM tokens WHERE kind = 'session'")
    assert rows == [(hashlib.sha256(value.encode()).hexdigest(), "session", "ui")]
    if ui_world.svc.database_url is None:  # SQLite: the value is nowhere in its files
        db = (ui_world.svc.data_dir / "jit.db").read_bytes()
        wal = ui_world.svc.data_dir / "jit.db-wal"
        assert value.encode() not in db + (wal.read_bytes() if wal.exists() else b"")
    # A session is for the web page only: the API refuses it as a bearer token.
    assert ui_world.svc.call("GET", "/api/v1/me", token=value)[0] == 401
    # ...and lists only API tokens: the session is not one.
    listed = ui_world.svc.call("GET", "/api/v1/tokens", token=ui_world.tokens["bob"])[1]
    assert listed["tokens"] and all(t["name"] != "ui" for t in listed["tokens"])


def test_bad_token_sign_in_refused_and_audited(ui_world, client_for):
    c = client_for()
    page = c.get("/ui/login")
    r = c.post("/ui/login", {"login_csrf": hidden(page.text, "login_csrf"), "token": "jitu_nope"})
    assert r.status_code == 401 and "Sign-in failed" in r.text
    assert COOKIE not in c.cookies
    assert [a for a, _ in _audit(ui_world, "login.failed")] == [None]
    # A host token is no person: refused too.
    page = c.get("/ui/login")
    r = c.post(
        "/ui/login",
        {"login_csrf": hidden(page.text, "login_csrf"), "token": ui_world.host_tokens["web1"]},
    )
    assert r.status_code == 401 and COOKIE not in c.cookies
    # Without the login form's own value (login CSRF): no sign-in, a fresh form.
    fresh = Browserless(ui_world.svc)
    r = fresh.post("/ui/login", {"token": ui_world.tokens["bob"]})
    assert (r.status_code, r.headers["location"]) == (303, "/ui/login?retry=1")
    assert COOKIE not in fresh.cookies


def test_csrf_and_cross_site_posts_refused_nothing_changes(ui_world, client_for):
    w = ui_world
    rid = w.request("alice")[1]["id"]
    bob = client_for("bob")
    carol = client_for("carol")
    url = f"/ui/requests/{rid}/approve"
    token = bob.csrf()
    refused = [
        bob.post(url, {"comment": "x"}),  # no token
        bob.post(url, {"csrf": "0" * 64}),  # wrong token
        bob.post(url, {"csrf": carol.csrf()}),  # another session's token
        bob.post(url, {"csrf": "é" * 64}),  # not even ASCII
        bob.post(url, {"csrf": token}, headers={"Origin": "http://127.0.0.1:1"}),
        bob.post(url, {"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}),
        bob.post(url, {"csrf": token}, headers={"Sec-Fetch-Site": "same-site"}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert all("Refused" in r.text for r in refused)
    assert _state(w, rid) == "pending"
    assert w.svc.sql("SELECT count(*) FROM reviews")[0][0] == 0
    # The same form with its token, from our own origin: accepted.
    ok = bob.post(
        url, {"csrf": token}, headers={"Origin": w.svc.url, "Sec-Fetch-Site": "same-origin"}
    )
    assert (ok.status_code, ok.headers["location"]) == (303, f"/ui/requests/{rid}?done=approve")
    assert _state(w, rid) == "approved"


def test_self_approval_refused_with_the_api_message_and_audited(ui_world, client_for):
    w = ui_world
    rid = w.request("mallory")[1]["id"]  # mallory is requester and approver
    api_status, api_body = w.call("mallory", "POST", f"/api/v1/requests/{rid}/approve", {})
    assert api_status == 403
    m = client_for("mallory")
    r = m.post(f"/ui/requests/{rid}/approve", {"csrf": m.csrf()})
    assert r.status_code == 403
    assert api_body["detail"] == "you cannot review your own request"
    assert api_body["detail"] in r.text
    assert _state(w, rid) == "pending"
    refusals = _audit(w, "review.refused")
    assert [a for a, _ in refusals] == ["mallory", "mallory"]  # API, then the page
    assert refusals[0][1] == refusals[1][1]  # the same audit record both ways


def test_every_action_is_audited_with_the_user_as_actor(ui_world, client_for):
    w = ui_world
    bob, alice = client_for("bob"), client_for("alice")
    r1 = w.request("alice")[1]["id"]
    assert bob.post(f"/ui/requests/{r1}/approve", {"csrf": bob.csrf(), "comment": "ok"}).ok
    assert bob.post(f"/ui/requests/{r1}/revoke", {"csrf": bob.csrf(), "comment": "done"}).ok
    r2 = w.request("alice")[1]["id"]
    assert bob.post(f"/ui/requests/{r2}/deny", {"csrf": bob.csrf(), "comment": "no"}).ok
    r3 = w.request("alice")[1]["id"]
    assert alice.post(f"/ui/requests/{r3}/cancel", {"csrf": alice.csrf()}).ok
    assert [_state(w, r) for r in (r1, r2, r3)] == ["revoked", "denied", "cancelled"]
    seen = w.svc.sql(
        "SELECT kind, actor FROM audit_events WHERE kind LIKE 'review.%' OR kind LIKE 'request.%'"
        " OR kind LIKE 'ui.%' ORDER BY id"
    )
    for kind, actor in (
        ("ui.signed_in", "bob"),
        ("ui.signed_in", "alice"),
        ("review.approve", "bob"),
        ("request.approved", "bob"),
        ("request.revoked", "bob"),
        ("review.deny", "bob"),
        ("request.denied", "bob"),
        ("request.cancelled", "alice"),
    ):
        assert (kind, actor) in seen, (kind, actor)
    assert bob.post("/ui/logout", {"csrf": bob.csrf()}).status_code == 303
    assert ("ui.signed_out", "bob") in w.svc.sql("SELECT kind, actor FROM audit_events")
    # The same request page the API shows: the reviews with their comments.
    page = bob.get(f"/ui/requests/{r1}")
    assert page.status_code == 303  # signed out: back to sign-in
    page = client_for("carol").get(f"/ui/requests/{r1}")
    assert 'id="state">revoked' in page.text and "approved at" in page.text


def test_session_ends_idle_after_lifetime_signout_and_disable(ui_world, client_for):
    w = ui_world
    for age in ("last_used_at = last_used_at - 1800", "created_at = created_at - 43200"):
        c = client_for("bob")
        assert c.get("/ui").status_code == 200
        w.svc.sql(f"UPDATE tokens SET {age} WHERE kind = 'session' AND revoked_at IS NULL")
        r = c.get("/ui")
        assert (r.status_code, r.headers["location"]) == (303, "/ui/login"), age
        assert COOKIE not in c.cookies  # and the browser is told to forget it
        w.svc.sql("UPDATE tokens SET revoked_at = 1 WHERE kind = 'session'")
    # Signed out: the old cookie is dead even if a copy was kept.
    c = client_for("bob")
    kept = dict(c.cookies)
    assert c.post("/ui/logout", {"csrf": c.csrf()}).headers["location"] == "/ui/login"
    replay = Browserless(w.svc, kept)
    assert replay.get("/ui").status_code == 303
    # A disabled user's session answers nothing either.
    c = client_for("carol")
    w.svc.admin("user", "disable", "carol")
    assert c.get("/ui").status_code == 303


def test_session_ends_with_the_api_token_it_was_started_with(ui_world, client_for):
    """A session started with an API token is no longer than the token: revoking the
    token or reaching its end ends the session too (it used to live on 12 h)."""
    w = ui_world
    for case in ("revoked", "expired"):
        token = w.svc.admin("token", "create", "bob", "--name", case, "--expires", "90d").strip()
        [(tid, token_end)] = w.svc.sql("SELECT id, expires_at FROM tokens WHERE name = ?", (case,))
        c = Browserless(w.svc)
        c.sign_in(token)
        assert c.get("/ui").status_code == 200
        [(source, session_end)] = w.svc.sql(
            "SELECT source_token_id, expires_at FROM tokens"
            " WHERE kind = 'session' AND revoked_at IS NULL"
        )
        assert (source, session_end) == (tid, token_end)  # capped at the token's end
        if case == "revoked":
            w.svc.admin("token", "revoke", str(tid))
        else:  # reach its end without waiting: move it into the past
            w.svc.sql("UPDATE tokens SET expires_at = expires_at - 91 * 86400 WHERE id = ?", (tid,))
        assert w.svc.call("GET", "/api/v1/me", token)[0] == 401
        r = c.get("/ui")
        assert (r.status_code, r.headers["location"]) == (303, "/ui/login"), case
        w.svc.sql("UPDATE tokens SET revoked_at = 1 WHERE kind = 'session'")


def test_hostile_text_is_inert(ui_world, client_for):
    w = ui_world
    rid = w.request("alice", reason='<script>alert("x")</script> <img src=x>')[1]["id"]
    # The API refuses bidi and zero-width characters; a row from before that rule
    # (or written around it) must still be shown inert: put one in directly.
    w.svc.sql(
        "UPDATE requests SET reason = ? WHERE id = ?",
        ('<script>alert("x")</script> fix \u202egnp.exe\u200b', rid),
    )
    bob = client_for("bob")
    for page in (bob.get("/ui"), bob.get(f"/ui/requests/{rid}")):
        assert page.status_code == 200
        assert "<script>" not in page.text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
        assert "\u202e" not in page.text and "\u200b" not in page.text
        assert "[U+202E]" in page.text and "[U+200B]" in page.text


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"), reason="needs root")
def test_password_sign_in_through_pam(ui_world, client_for):
    """The same password check as POST /api/v1/login (real PAM, service "login")."""
    from tests.server.conftest import Admin

    w = ui_world
    name, password = "jitui" + secrets.token_hex(4), "pw-" + secrets.token_urlsafe(12)
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        c = client_for()

        def attempt(pw: str):  # noqa: ANN202
            page = c.get("/ui/login")
            form = {"login_csrf": hidden(page.text, "login_csrf"), "username": name}
            return c.post("/ui/login", form | {"password": pw})

        # A unix user unknown to jit is refused like a wrong password, audited.
        assert attempt(password).status_code == 401
        admin = Admin(w.svc)
        try:
            admin(store.add_user, name=name, roles=["approver"])
        finally:
            admin.close()
        assert attempt(password + "x").status_code == 401
        assert COOKIE not in c.cookies
        r = attempt(password)
        assert (r.status_code, r.headers["location"]) == (303, "/ui")
        assert c.get("/ui").status_code == 200
        # No API token behind it: the interactive sign-in TTL caps it (12 h default).
        [(created, end)] = w.svc.sql(
            "SELECT created_at, expires_at FROM tokens WHERE kind = 'session'"
            " AND revoked_at IS NULL"
        )
        assert end == created + 12 * 3600
        failed = [json.loads(d) for _, d in _audit(w, "login.failed")]
        assert [f["user"] for f in failed] == [name, name]
        assert ("ui.signed_in", name) in w.svc.sql("SELECT kind, actor FROM audit_events")
    finally:
        subprocess.run(["userdel", name], check=False)


def test_others_requests_stay_hidden(ui_world, client_for):
    """A requester who is no approver sees nothing of another's request, as in the API."""
    w = ui_world
    rid = w.request("alice", reason="MARKER-secret-7")[1]["id"]
    assert w.call("dave", "GET", f"/api/v1/requests/{rid}")[0] == 404
    dave = client_for("dave")
    page = dave.get(f"/ui/requests/{rid}")
    assert page.status_code == 404 and "MARKER-secret-7" not in page.text
    assert "MARKER-secret-7" not in dave.get("/ui").text + dave.get("/ui/active").text
    for action in ("approve", "deny", "revoke", "cancel"):
        r = dave.post(f"/ui/requests/{rid}/{action}", {"csrf": dave.csrf()})
        assert r.status_code == 404 and "MARKER-secret-7" not in r.text, action
    assert _state(w, rid) == "pending"
    assert w.svc.sql("SELECT count(*) FROM reviews")[0][0] == 0
