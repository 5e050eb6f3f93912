"""The web page's "Sign in with SSO": authorization code + PKCE through the real provider."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.oidc_provider import Person, wait_for
from tests.sso.conftest import SsoWorld, needs_provider
from tests.ui.conftest import COOKIE, Browserless

SSO_COOKIE = "__Host-jit_sso"

pytestmark = [needs_provider, pytest.mark.usefixtures("backend")]


def begin(sso: SsoWorld) -> tuple[Browserless, str]:
    """The browser clicks "Sign in with SSO"; returns it and the IdP URL it is sent to."""
    browser = Browserless(sso.service)
    page = browser.get("/ui/login")
    assert 'href="/ui/sso/start"' in page.text
    r = browser.get("/ui/sso/start")
    assert r.status_code == 303
    assert SSO_COOKIE in browser.cookies
    return browser, r.headers["Location"]


def back_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_web_sign_in_with_pkce(sso: SsoWorld) -> None:
    browser, idp_url = begin(sso)
    query = parse_qs(urlsplit(idp_url).query)
    assert idp_url.startswith(sso.provider.issuer + "/")
    assert query["code_challenge_method"] == ["S256"]
    assert query["state"][0] and query["nonce"][0] and query["code_challenge"][0]
    back = Person(sso.provider.issuer, sso.provider.ca_file, "alice").authorize(idp_url)
    assert back.startswith(sso.service.url + "/ui/sso/callback?")
    started = browser.cookies[SSO_COOKIE]
    r = browser.get(back_path(back))
    assert r.status_code == 200, r.text
    assert COOKIE in browser.cookies and SSO_COOKIE not in browser.cookies
    page = browser.get("/ui")
    assert page.status_code == 200 and "alice" in page.text
    # No API token behind the session: the interactive TTL (12 h default) caps it.
    [(created, end)] = sso.service.sql(
        "SELECT created_at, expires_at FROM tokens WHERE kind = 'session'"
    )
    assert end == created + 12 * 3600
    assert sso.service.sql("SELECT roles FROM users WHERE name = 'alice'") == [
        ("approver requester",)
    ]
    assert any(
        '"sso-web"' in r[0]
        for r in sso.service.sql("SELECT data FROM audit_events WHERE kind = 'login.sso'")
    )
    # The code and state are good once: the same callback again signs nobody in.
    again = Browserless(sso.service, cookies={SSO_COOKIE: started})
    assert again.get(back_path(back)).status_code == 400


def test_callback_needs_the_browser_that_started(sso: SsoWorld) -> None:
    # A sign-in started in one browser and finished in another (login CSRF: an
    # attacker's code pushed into the victim's browser) is refused.
    _, idp_url = begin(sso)
    back = Person(sso.provider.issuer, sso.provider.ca_file, "alice").authorize(idp_url)
    victim, _ = begin(sso)
    r = victim.get(back_path(back))
    assert r.status_code == 400
    assert COOKIE not in victim.cookies
    assert sso.service.sql("SELECT count(*) FROM tokens WHERE kind = 'session'") == [(0,)]


def test_refused_person_gets_the_sign_in_page(sso: SsoWorld) -> None:
    browser, idp_url = begin(sso)
    back = Person(sso.provider.issuer, sso.provider.ca_file, "dave").authorize(idp_url)
    r = browser.get(back_path(back))
    assert r.status_code == 403
    assert "None of your groups gives you a role in jit." in r.text
    assert COOKIE not in browser.cookies
    # The service's own log says why (docs/server.md: one line per refusal).
    wait_for(lambda: "sso web sign-in refused: reason=no_role" in sso.service.log_path.read_text())
