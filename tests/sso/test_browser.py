"""'Sign in with SSO' in a real browser (Debian's chromium, headless): the cookies as browsers
treat them - the Lax sign-in cookie comes back with the IdP's redirect, and the Strict
session cookie is in use on the page after the callback.

The provider's certificate comes from the tests' own CA, which chromium does not
know: it runs with --ignore-certificate-errors (this test checks cookies and
redirects; TLS verification to the IdP is jit-server's, checked with ca_file).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sso.conftest import SsoWorld, needs_provider
from tests.utils.browser import chromium, needs_chromium

pytestmark = [needs_provider, pytest.mark.slow, needs_chromium]


@pytest.fixture
def driver() -> Iterator:
    # The test IdP's CA only (module docstring).
    with chromium("--ignore-certificate-errors") as d:
        yield d


def test_sso_sign_in_in_chromium(sso: SsoWorld, driver) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    w, d = sso, driver
    wait = WebDriverWait(d, 30)
    d.get(w.service.url + "/ui/login")
    d.find_element(By.ID, "sso-start").click()
    wait.until(lambda drv: drv.current_url.startswith(w.provider.issuer))
    wait.until(lambda drv: drv.find_elements(By.NAME, "login"))
    d.find_element(By.NAME, "login").send_keys("alice")
    d.find_element(By.NAME, "password").send_keys("any")
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The consent page (the IdP's own), then back to jit-server.
    wait.until(
        lambda drv: (
            drv.current_url.startswith(w.service.url)
            or drv.find_elements(By.CSS_SELECTOR, "input[name=prompt][value=consent]")
        )
    )
    if not d.current_url.startswith(w.service.url):
        d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The callback page moves on to /ui by itself, where the session cookie works.
    wait.until(lambda drv: drv.current_url.rstrip("/") == w.service.url + "/ui")
    wait.until(lambda drv: "alice" in drv.page_source)
    assert "Sign in" not in d.title
    names = {c["name"] for c in d.get_cookies()}
    assert "__Host-jit_session" in names and "__Host-jit_sso" not in names
