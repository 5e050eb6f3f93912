"""The hooks' LeanRoute fast path answers byte for byte what FastAPI's own handler answers.

jit_hooks/server/leanroute.py takes a request with ``Content-Type:
application/json`` and a Bearer token; any other content type (here
``application/json; charset=utf-8``, which FastAPI parses the same) goes to
FastAPI's handler. Each case is sent both ways to the real service and the
status, Content-Type and body bytes must be equal; each answered decision is
audited once per call either way.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from tests.utils.audit_counts import hook_decisions

LEAN = "application/json"
FASTAPI = "application/json; charset=utf-8"
R = "/api/v1/requests"


def _raw(svc, path: str, body: bytes, content_type: str | None, auth: str | None):  # noqa: ANN001
    u = urlsplit(svc.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    headers = {} if content_type is None else {"Content-Type": content_type}
    if auth is not None:
        headers["Authorization"] = auth
    try:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.getheader("content-type"), r.read()
    finally:
        conn.close()


def _both(w, path: str, body, auth: str | None):  # noqa: ANN001
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    lean = _raw(w.svc, path, raw, LEAN, auth)
    full = _raw(w.svc, path, raw, FASTAPI, auth)
    assert lean == full, (path, body)
    return lean


def _hook_events(w) -> int:  # noqa: ANN001
    """Hook decisions audited: events, plus the repeats of authorized-keys misses and allows
    (counted, then folded into one event when the window closes: tests/utils/audit_counts.py)."""
    return hook_decisions(w.svc.sqlite)


def test_fast_path_answers_exactly_like_fastapi(world):
    w = world
    _, req = w.request()
    assert w.call("bob", "POST", f"{R}/{req['id']}/approve")[1]["state"] == "approved"
    web1 = f"Bearer {w.host_tokens['web1']}"
    k = w.keys["alice"]
    akc = {"login": "deploy", "fingerprint": k.fingerprint, "key_type": k.key_type, "key": k.blob}
    before = _hook_events(w)

    status, ctype, body = _both(w, "/api/v1/hook/authorized-keys", akc, web1)
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body)["keys"][0]["fingerprint"] == k.fingerprint
    # A deny, and the other host's token (learns nothing about web1).
    _both(w, "/api/v1/hook/authorized-keys", {**akc, "login": "root"}, web1)
    other = _both(w, "/api/v1/hook/authorized-keys", akc, f"Bearer {w.host_tokens['web2']}")
    assert json.loads(other[2])["keys"] == []
    acct = {"login": "deploy", "rhost": "10.0.0.9", "service": "sshd", "connection": "4242:17",
            "fingerprint": k.fingerprint}  # fmt: skip
    assert json.loads(_both(w, "/api/v1/hook/account", acct, web1)[2])["decision"] == "allow"
    opened = {"event": "open", "login": "deploy", "rhost": "10.0.0.9", "connection": "4242:17",
              "key_type": k.key_type, "key": k.blob, "fingerprint": k.fingerprint}  # fmt: skip
    assert json.loads(_both(w, "/api/v1/hook/session", opened, web1)[2])["decision"] == "allow"
    closed = {**opened, "event": "close"}
    assert json.loads(_both(w, "/api/v1/hook/session", closed, web1)[2])["decision"] == "allow"
    # Six cases, each sent twice: every answered decision audited once per call.
    assert _hook_events(w) - before == 12


VALID = "valid"  # alice's key, offered for deploy


@pytest.mark.parametrize(
    ("body", "auth", "status"),
    [
        (b"{not json", "host", 400),
        (b"", "host", 422),
        (b"[]", "host", 422),
        ({"login": "deploy"}, "host", 422),
        ({"login": "x" * 500}, "host", 422),
        (VALID, None, 401),
        (VALID, "Basic abc", 401),
        (VALID, "Bearer", 401),
        (VALID, "Bearer jith_wrong", 401),
        (VALID, "user", 403),
    ],
)
def test_errors_are_fastapis_own(shared_world, body, auth, status):
    """Bad bodies and tokens get the same 4xx JSON either way (never a 500)."""
    w = shared_world
    k = w.keys["alice"]
    akc = {"login": "deploy", "fingerprint": k.fingerprint, "key_type": k.key_type, "key": k.blob}
    if body == VALID:
        body = akc
    elif isinstance(body, dict) and "login" in body and len(body) == 1 and len(body["login"]) > 99:
        body = {**akc, **body}
    auth = {"host": f"Bearer {w.host_tokens['web1']}", "user": f"Bearer {w.tokens['alice']}"}.get(
        auth, auth
    )
    got_status, ctype, raw = _both(w, "/api/v1/hook/authorized-keys", body, auth)
    assert (got_status, ctype) == (status, "application/json")
    assert set(json.loads(raw)) == {"error", "detail", "field"}
