"""/ui in a real browser: Debian's chromium, headless, driven by selenium through chromium-driver.

Nothing is downloaded: the driver and browser paths are given explicitly and
Selenium Manager is switched off (SE_OFFLINE). Skipped, saying so, where
chromium or chromium-driver is not installed (scripts/setup installs both).
Screenshots of the queue and a request page go to $JIT_UI_SCREENSHOTS if set
(docs/img/ was made that way), else to the test's temp dir.
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jit_hooks.testing.service import Service, free_port
from tests.server.conftest import World, build_world
from tests.utils.browser import chromium, needs_chromium

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.fixture(scope="module")
def bw(tmp_path_factory) -> Iterator[World]:
    """One service (SQLite) for the module's browser scenarios; each uses its own requests."""
    tmp = tmp_path_factory.mktemp("ui-browser")
    (tmp / "server").mkdir()
    svc = Service(data_dir=tmp / "server", port=free_port(), env=dict(os.environ))
    svc.start()
    try:
        yield build_world(svc, tmp)
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def driver() -> Iterator:
    with chromium("--window-size=1200,900") as d:
        yield d


def _by_id(d, element_id: str):  # noqa: ANN001, ANN202
    from selenium.webdriver.common.by import By

    return d.find_element(By.ID, element_id)


def _wait_url(d, ending: str) -> None:  # noqa: ANN001
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(d, 20).until(lambda drv: drv.current_url.split("?")[0].endswith(ending))


def _click_and_wait(d, element_id: str) -> None:  # noqa: ANN001
    """Click a submit button and wait until the browser has left the page it was on."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    old = d.find_element("tag name", "html")
    _by_id(d, element_id).click()

    def left(_) -> bool:  # noqa: ANN001
        try:
            old.is_enabled()
        except WebDriverException:  # stale, or its node is in no document any more
            return True
        return False

    WebDriverWait(d, 20).until(left)


def sign_in(d, w: World, who: str) -> None:  # noqa: ANN001
    d.get(w.svc.url + "/ui")
    if d.current_url.endswith("/ui"):  # someone is signed in: sign out first
        _click_and_wait(d, "sign-out")
    _wait_url(d, "/ui/login")
    _by_id(d, "token").send_keys(w.tokens[who])
    _click_and_wait(d, "token-submit")
    _wait_url(d, "/ui")
    assert who in d.page_source


def _state(w: World, rid: int) -> str:
    return w.svc.sql("SELECT state FROM requests WHERE id = ?", (rid,))[0][0]


def _no_alert(d) -> bool:  # noqa: ANN001
    from selenium.common.exceptions import NoAlertPresentException

    try:
        d.switch_to.alert.text  # noqa: B018 (raises if there is none)
    except NoAlertPresentException:
        return True
    return False


def test_sign_in_approve_deny_revoke(bw: World, driver):
    d, w = driver, bw
    first = w.request("alice", reason="INC-7 disk full on web1")[1]["id"]
    sign_in(d, w, "bob")
    # The queue lists it; its page shows who, what and why.
    assert f'href="/ui/requests/{first}"' in d.page_source
    d.get(f"{w.svc.url}/ui/requests/{first}")
    assert _by_id(d, "requester").text == "alice"
    assert _by_id(d, "reason").text == "INC-7 disk full on web1"
    _by_id(d, "comment").send_keys("go ahead")
    _click_and_wait(d, "approve")
    _wait_url(d, f"/ui/requests/{first}")
    assert _by_id(d, "state").text == "approved"
    assert "bob approved" in _by_id(d, "reviews").text and "go ahead" in d.page_source
    assert _state(w, first) == "approved"
    # Deny the next one.
    second = w.request("alice", host="web1", reason="INC-8 again")[1]["id"]
    d.get(f"{w.svc.url}/ui/requests/{second}")
    _by_id(d, "comment").send_keys("use the runbook")
    _click_and_wait(d, "deny")
    _wait_url(d, f"/ui/requests/{second}")
    assert _by_id(d, "state").text == "denied"
    assert _state(w, second) == "denied"
    # Revoke the approved one from its page.
    d.get(f"{w.svc.url}/ui/requests/{first}")
    _click_and_wait(d, "revoke")
    _wait_url(d, f"/ui/requests/{first}")
    assert _by_id(d, "state").text == "revoked"
    assert _state(w, first) == "revoked"
    actors = w.svc.sql(
        "SELECT kind, actor FROM audit_events WHERE kind IN "
        "('request.approved', 'request.denied', 'request.revoked') ORDER BY id"
    )
    assert actors[-3:] == [
        ("request.approved", "bob"),
        ("request.denied", "bob"),
        ("request.revoked", "bob"),
    ]


def test_self_approval_refused(bw: World, driver):
    d, w = driver, bw
    rid = w.request("mallory", reason="my own")[1]["id"]
    sign_in(d, w, "mallory")
    d.get(f"{w.svc.url}/ui/requests/{rid}")
    _click_and_wait(d, "approve")
    assert _by_id(d, "error").text == "you cannot review your own request"
    assert _state(w, rid) == "pending"
    assert w.svc.sql("SELECT count(*) FROM reviews WHERE request_id = ?", (rid,))[0][0] == 0
    w.call("mallory", "POST", f"/api/v1/requests/{rid}/cancel")


class _Attacker(http.server.BaseHTTPRequestHandler):
    page = b""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def test_forged_cross_site_post_refused(bw: World, driver):
    """A page on another 127.0.0.1 port auto-submits an approval while bob is signed in.

    Another port is another origin but the same site: SameSite=Strict still
    sends bob's cookie, so the Sec-Fetch-Site/Origin check and the missing CSRF
    token are what refuse it.
    """
    d, w = driver, bw
    rid = w.request("dave", reason="forge target")[1]["id"]
    sign_in(d, w, "bob")
    _Attacker.page = (
        f'<html><body onload="document.forms[0].submit()">'
        f'<form method="post" action="{w.svc.url}/ui/requests/{rid}/approve">'
        f'<input name="comment" value="forged"><input name="csrf" value="guess"></form>'
        f"</body></html>"
    ).encode()
    port = free_port()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Attacker)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        d.get(f"http://127.0.0.1:{port}/")
        _wait_url(d, f"/ui/requests/{rid}/approve")
        assert "Refused: cross-site request" in _by_id(d, "error").text
    finally:
        srv.shutdown()
        srv.server_close()
    assert _state(w, rid) == "pending"
    assert w.svc.sql("SELECT count(*) FROM reviews WHERE request_id = ?", (rid,))[0][0] == 0
    kinds = [k for (k,) in w.svc.sql("SELECT kind FROM audit_events WHERE data LIKE '%forged%'")]
    assert kinds == []
    w.call("dave", "POST", f"/api/v1/requests/{rid}/cancel")


def test_hostile_reason_shown_inert(bw: World, driver):
    d, w = driver, bw
    reason = '<script>alert("pwned")</script><img src=x onerror=alert(1)> restart'
    rid = w.request("alice", reason=reason)[1]["id"]
    # Bidi/zero-width characters are refused by the API today; a stored one is
    # still shown inert (a row from before the rule, put in directly).
    w.svc.sql("UPDATE requests SET reason = ? WHERE id = ?", (reason + " \u202egnp.exe\u200b", rid))
    sign_in(d, w, "bob")
    for path in ("/ui", f"/ui/requests/{rid}"):
        d.get(w.svc.url + path)
        assert _no_alert(d), f"a script ran on {path}"
    text = _by_id(d, "reason").text
    assert text.startswith(reason)  # the markup, as text
    assert "[U+202E]gnp.exe[U+200B]" in text  # the invisible made visible
    w.call("bob", "POST", f"/api/v1/requests/{rid}/deny", {"comment": "test"})


def test_expired_session_sent_back_to_sign_in(bw: World, driver):
    d, w = driver, bw
    sign_in(d, w, "carol")
    w.svc.sql(
        "UPDATE tokens SET last_used_at = last_used_at - 3600 "
        "WHERE kind = 'session' AND revoked_at IS NULL"
    )
    d.get(w.svc.url + "/ui/mine")
    _wait_url(d, "/ui/login")
    assert _by_id(d, "token-submit")


def test_screenshots(bw: World, driver, tmp_path: Path):
    d, w = driver, bw
    rid = w.request(
        "alice", reason="INC-42: /var full on web1, rotate logs", duration_seconds=1800
    )[1]["id"]
    w.request("dave", reason="Deploy hotfix 2.4.1 (CHG-1193)", duration_seconds=3600)
    sign_in(d, w, "bob")
    out = Path(os.environ.get("JIT_UI_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    d.get(w.svc.url + "/ui")
    assert d.save_screenshot(str(out / "ui-queue.png"))
    d.get(f"{w.svc.url}/ui/requests/{rid}")
    assert d.save_screenshot(str(out / "ui-request.png"))
    for name in ("ui-queue.png", "ui-request.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
