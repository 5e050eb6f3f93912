"""A real service with people, hosts and a policy; an HTTP client that signs in to /ui.

test_http.py runs on SQLite and PostgreSQL (tests/utils/backends.py); the
browser tests on SQLite only (test_browser.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from jit_hooks.testing.service import Service, start_service
from tests.server.conftest import World, build_world

COOKIE = "__Host-jit_session"


@pytest.fixture
def ui_world(tmp_path: Path) -> Iterator[World]:
    svc = start_service(tmp_path / "server")  # the module's backend (test_http.py)
    try:
        yield build_world(svc, tmp_path)
    finally:
        svc.stop()


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, f"no hidden field {name} in page"
    return m.group(1)


@dataclass
class Browserless:
    """A cookie-keeping HTTP client for /ui without a browser.

    Cookies are kept by hand: they are Secure, and Python's cookie jar (rightly)
    never sends a Secure cookie over plain http; a browser does on 127.0.0.1.
    """

    svc: Service
    cookies: dict[str, str] = field(default_factory=dict)

    def _keep(self, r: requests.Response) -> None:
        for c in r.raw.headers.getlist("Set-Cookie"):
            name, _, rest = c.partition("=")
            value = rest.split(";", 1)[0]
            if value in ("", '""') or "Max-Age=0" in c:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def request(self, method: str, path: str, **kw) -> requests.Response:  # noqa: ANN003
        headers = kw.pop("headers", {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        r = requests.request(
            method, self.svc.url + path, headers=headers, allow_redirects=False, timeout=10, **kw
        )
        self._keep(r)
        return r

    def get(self, path: str, **kw) -> requests.Response:  # noqa: ANN003
        return self.request("GET", path, **kw)

    def post(self, path: str, data: dict, **kw) -> requests.Response:  # noqa: ANN003
        return self.request("POST", path, data=data, **kw)

    def sign_in(self, token: str) -> None:
        page = self.get("/ui/login")
        r = self.post("/ui/login", {"login_csrf": hidden(page.text, "login_csrf"), "token": token})
        assert r.status_code == 303, r.text
        assert COOKIE in self.cookies

    def csrf(self, path: str = "/ui") -> str:
        return hidden(self.get(path).text, "csrf")


@pytest.fixture
def client_for(ui_world: World):  # noqa: ANN201
    def make(who: str | None = None) -> Browserless:
        c = Browserless(ui_world.svc)
        if who:
            c.sign_in(ui_world.tokens[who])
        return c

    return make
