"""A real OpenID provider (node + oidc-provider, provider.mjs) on 127.0.0.1 for the SSO tests.

``npm ci --omit=dev`` in this directory (scripts/setup) installs it. The
person's side of a sign-in is played by :class:`Person`: an HTTP client that
fills in the provider's own HTML forms (device code, login, consent).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import requests

from jit_hooks.testing.service import free_port
from jit_hooks.testing.tls_certs import make_pki

HERE = Path(__file__).parent
CLIENT_ID = "jit-server"


def available() -> str | None:
    """Why the provider cannot run here (None if it can)."""
    if shutil.which("node") is None:
        return "node is not installed (scripts/setup installs nodejs)"
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        return "oidc-provider is not installed: cd tests/oidc_provider && npm ci --omit=dev"
    return None


@dataclass
class Provider:
    """A running provider: its issuer URL, the CA that signed its certificate, its client."""

    issuer: str
    ca_file: str
    client_secret: str
    proc: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_provider(
    workdir: Path,
    *,
    accounts: dict[str, dict],
    redirect_uris: list[str],
    pki: dict | None = None,
    device_code_ttl: int = 600,
    interval: int | None = None,
) -> Provider:
    workdir.mkdir(parents=True, exist_ok=True)
    pki = pki or make_pki(workdir / "pki")
    cert, key = pki["ok"]  # type: ignore[misc]
    port = free_port()
    secret = "s3cret-" + workdir.name
    conf = {
        "port": port,
        "tls_cert": str(cert),
        "tls_key": str(key),
        "accounts": accounts,
        "device_code_ttl": device_code_ttl,
        "clients": [
            {
                "client_id": CLIENT_ID,
                "client_secret": secret,
                "grant_types": [
                    "authorization_code",
                    "urn:ietf:params:oauth:grant-type:device_code",
                ],
                "response_types": ["code"],
                "redirect_uris": redirect_uris or ["https://127.0.0.1/ui/sso/callback"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
        ],
    }
    if interval is not None:  # the device authorization answer's polling interval
        conf["interval"] = interval
    conf_path = workdir / "provider.json"
    conf_path.write_text(json.dumps(conf))
    log_path = workdir / "provider.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        ["node", str(HERE / "provider.mjs"), str(conf_path)],
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=HERE,
    )
    log.close()
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()  # "ready ISSUER", or EOF if it died
    if not line.startswith("ready "):
        proc.wait(10)
        raise AssertionError(f"oidc provider did not start: {line!r} {log_path.read_text()}")
    return Provider(line.split()[1], str(pki["ca"]), secret, proc, log_path)


# -- the person's side -----------------------------------------------------------


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    id: str = ""


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:  # noqa: ANN001
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(
                Form(a.get("action", ""), a.get("method", "get").lower(), id=a.get("id", ""))
            )
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1].fields[a["name"]] = a.get("value", "")


def forms(html: str) -> list[Form]:
    p = _Forms()
    p.feed(html)
    return p.forms


@dataclass
class Person:
    """Someone at a browser, signing in at the provider ``issuer`` as ``login``.

    Redirects are followed only while they stay at the provider: where the
    provider sends the browser elsewhere (jit-server's callback), the test
    takes over with that URL (:attr:`left_to`).
    """

    issuer: str
    ca_file: str
    login: str
    http: requests.Session = field(default_factory=requests.Session)
    left_to: str | None = None

    def __post_init__(self) -> None:
        self.http.verify = self.ca_file
        self.http.trust_env = False  # no REQUESTS_CA_BUNDLE over our CA, no proxy

    def go(self, method: str, url: str, data: dict | None = None) -> requests.Response:
        for _ in range(10):
            r = self.http.request(method, url, data=data, allow_redirects=False, timeout=30)
            if r.status_code not in (301, 302, 303, 307, 308):
                return r
            url = urljoin(url, r.headers["Location"])
            if not url.startswith(self.issuer + "/"):
                self.left_to = url
                return r
            method, data = "GET", None
        raise AssertionError("too many redirects at the provider")

    def _submit(self, page: requests.Response, extra: dict[str, str]) -> requests.Response:
        found = forms(page.text)
        assert found, f"no form on {page.url}: {page.text[:500]}"
        form = found[0]
        return self.go("POST", urljoin(page.url, form.action), {**form.fields, **extra})

    def through_provider(self, page: requests.Response) -> requests.Response:
        """Fill in the provider's login and consent forms until it lets go of us."""
        for _ in range(6):
            if self.left_to:
                return page
            found = forms(page.text)
            names = {n for f in found for n in f.fields}
            if "login" in names and "password" in names:
                page = self._submit(page, {"login": self.login, "password": "any"})
            elif any(f.fields.get("prompt") == "consent" for f in found):
                page = self._submit(page, {})
            else:
                return page
        raise AssertionError(f"stuck at the provider: {page.url}")

    def enter_device_code(self, uri: str, user_code: str, *, abort: bool = False) -> str:
        """The device page: type the code, confirm (or abort), sign in; the last page's text."""
        page = self.go("GET", uri)
        page = self._submit(page, {"user_code": user_code})  # the code input form
        page = self._submit(page, {"abort": "yes"} if abort else {})  # the confirm form
        page = self.through_provider(page)
        return " ".join(re.sub(r"<[^>]+>", " ", page.text).split())

    def authorize(self, url: str) -> str:
        """Open the authorization URL, sign in and consent; the URL the provider sends us to."""
        self.through_provider(self.go("GET", url))
        assert self.left_to, "the provider did not send the browser back"
        return self.left_to


def wait_for(predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")
