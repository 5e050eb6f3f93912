"""Authorization matrix: every route x role x ownership against the real service over HTTP.

The routes come from the app's own route table (``create_app``), so a route
added without a row here fails ``test_every_route_has_expectations``. Each cell
makes fresh objects where the call changes state, asserts the exact status,
and asserts that no foreign data (other hosts, other users' keys and requests,
any token) appears in the body.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest

from jit_hooks.server.app import create_app
from jit_hooks.server.settings import Settings
from tests.security.conftest import ROLE_USER, ROLES, SecWorld
from tests.utils.report import record

USERS = ("requester", "approver", "admin")
DEAD = {"anonymous": 401, "disabled": 401, "revoked": 401, "host_removed": 401}
USER_GATE = {**DEAD, "host_a": 403, "host_b": 403}  # user routes, for non-users
HOOK_GATE = {**DEAD, "requester": 403, "approver": 403, "admin": 403}  # hook routes
ALL_200 = {r: 200 for r in ROLES}


def users(status: int | dict[str, int]) -> dict[str, int]:
    per = status if isinstance(status, dict) else {u: status for u in USERS}
    return {**per, **USER_GATE}


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    # ownership ("-" | "mine" | "other") -> role -> status; a role missing from
    # an ownership row has no such object (e.g. an admin owns no requests).
    expect: dict[str, dict[str, int]] = field(hash=False)
    query: str = ""

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}{'?' + self.query if self.query else ''}"


REQ = "/api/v1/requests/{request_id}"
UI_ACTIONS = ("approve", "deny", "revoke", "cancel")
PROBES = [
    Probe("GET", "/healthz", {"-": ALL_200}),
    Probe("GET", "/metrics", {"-": ALL_200}),
    Probe("GET", "/openapi.json", {"-": ALL_200}),
    Probe("POST", "/api/v1/login", {"-": {r: 401 for r in ROLES}}),
    # SSO is off in this world (no oidc.toml): 404 sso_unavailable to everyone, any
    # token or none (its /ui pages lead to the sign-in page). With SSO on: tests/sso/.
    *[
        Probe("POST", p, {"-": {r: 404 for r in ROLES}})
        for p in ("/api/v1/login/sso/device", "/api/v1/login/sso/device/token")
    ],
    Probe("GET", "/api/v1/me", {"-": users(200)}),
    Probe("POST", "/api/v1/keys", {"-": users(201)}),
    Probe("GET", "/api/v1/keys", {"-": users(200)}),
    Probe(
        "DELETE",
        "/api/v1/keys/{key_id}",
        {"mine": {u: 204 for u in USERS}, "other": users(404)},
    ),
    Probe(
        "POST", "/api/v1/requests", {"-": users({"requester": 201, "approver": 201, "admin": 403})}
    ),
    Probe("GET", "/api/v1/requests", {"-": users(200)}),
    Probe("GET", "/api/v1/requests", {"-": users(200)}, query="scope=review"),
    Probe(
        "GET",
        "/api/v1/requests",
        {"-": users({"requester": 403, "approver": 403, "admin": 200})},
        query="scope=all",
    ),
    Probe(
        "GET",
        REQ,
        {
            "mine": {"requester": 200, "approver": 200},
            "other": users({"requester": 404, "approver": 200, "admin": 200}),
        },
    ),
    *[
        Probe(
            "POST",
            REQ + f"/{action}",
            {
                "mine": {"requester": 403, "approver": 403},  # no self-approval
                "other": users({"requester": 404, "approver": 200, "admin": 403}),
            },
        )
        for action in ("approve", "deny")
    ],
    Probe(
        "POST",
        REQ + "/revoke",
        {
            "mine": {"requester": 200, "approver": 200},
            "other": users({"requester": 404, "approver": 200, "admin": 200}),
        },
    ),
    Probe(
        "POST",
        REQ + "/cancel",
        {
            "mine": {"requester": 200, "approver": 200},
            "other": users({"requester": 404, "approver": 403, "admin": 403}),
        },
    ),
    # The matrix's policy allows no extensions: the owner's 403 is the policy's
    # (extensions themselves: tests/server/test_grants.py); nobody else may ask.
    Probe(
        "POST",
        REQ + "/extend",
        {
            "mine": {"requester": 403, "approver": 403},
            "other": users({"requester": 404, "approver": 403, "admin": 403}),
        },
    ),
    Probe(
        "POST",
        REQ + "/drop",
        {
            "mine": {"requester": 200, "approver": 200},
            "other": users({"requester": 404, "approver": 403, "admin": 403}),
        },
    ),
    Probe(
        "GET",
        "/api/v1/reports/usage",
        {"-": users({"requester": 403, "approver": 200, "admin": 200})},
    ),
    Probe("GET", "/api/v1/audit", {"-": users({"requester": 403, "approver": 403, "admin": 200})}),
    Probe("GET", "/api/v1/tokens", {"-": users(200)}),
    Probe(
        "DELETE",
        "/api/v1/tokens/{token_id}",
        {
            "mine": {u: 204 for u in USERS},
            "other": users({"requester": 404, "approver": 404, "admin": 204}),
        },
    ),
    Probe("POST", "/api/v1/logout", {"-": users(204)}),  # with a fresh token of the user
    # The web page takes no bearer token: without its session cookie every caller
    # is sent (303, followed here) to the sign-in page, which names nobody.
    # Sessions, CSRF and the pages themselves: tests/ui/.
    *[
        Probe(m, p, {"-": ALL_200})
        for m, p in (
            ("GET", "/"),
            ("GET", "/ui"),
            ("GET", "/ui/mine"),
            ("GET", "/ui/active"),
            ("GET", "/ui/login"),
            ("POST", "/ui/login"),
            ("POST", "/ui/logout"),
            ("GET", "/ui/sso/start"),
            ("GET", "/ui/sso/callback"),
            ("GET", "/ui/requests/{request_id}"),
            *(("POST", f"/ui/requests/{{request_id}}/{a}") for a in UI_ACTIONS),
        )
    ],
    *[
        Probe(m, f"/api/v1/hook/{name}", {"-": {"host_a": 200, "host_b": 200, **HOOK_GATE}})
        for m, name in (
            ("POST", "authorized-keys"),
            ("POST", "account"),
            ("POST", "session"),
            ("POST", "break-glass"),
            ("GET", "ping"),
            ("GET", "sessions"),
            ("GET", "stream"),  # answered 200 opens the stream: only its first event is read
        )
    ],
]

CELLS = [
    pytest.param(p, own, role, id=f"{p.id} [{own}] {role}")
    for p in PROBES
    for own, row in p.expect.items()
    for role in ROLES
    if role in row
]


def route_table() -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, HEAD aside."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        app = create_app(Settings(database_url=f"sqlite:///{d}/routes.db"))
        out: set[tuple[str, str]] = set()

        def add(path: str, methods) -> None:  # noqa: ANN001
            out.update((m, path) for m in methods or () if m != "HEAD")

        for r in app.routes:
            if hasattr(r, "effective_route_contexts"):  # FastAPI >= 0.12x included routers
                for c in r.effective_route_contexts():
                    add(c.path, getattr(c, "methods", None))
            elif hasattr(r, "routes"):  # a mounted sub-app or older included router
                for sub in r.routes:
                    add(sub.path, getattr(sub, "methods", None))
            else:
                add(r.path, getattr(r, "methods", None))
        app.state.ctx.engine.dispose()
    return out


def test_every_route_has_expectations(secworld: SecWorld):
    served = route_table()
    expected = {(p.method, p.path) for p in PROBES}
    assert served, "route table came back empty: the enumeration is broken"
    assert served - expected == set(), "routes without an authorization row"
    assert expected - served == set(), "rows for routes that no longer exist"
    # The published contract names no route the app does not serve either.
    status, spec = secworld.w.call(None, "GET", "/openapi.json")
    assert status == 200
    published = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert published <= served


# -- one cell --------------------------------------------------------------------


def prepare(sw: SecWorld, probe: Probe, own: str, role: str) -> tuple[str, object]:
    """The concrete path and body of a cell, with fresh objects where it mutates."""
    user = ROLE_USER[role] if own == "mine" else "frank"
    alice = sw.w.keys["alice"]
    path = probe.path
    body: object = None
    if "{key_id}" in path:
        key_id, _ = sw.new_key(user)
        path = path.replace("{key_id}", str(key_id))
    elif "{token_id}" in path:
        path = path.replace("{token_id}", str(fresh_token(sw, user)[0]))
    elif "{request_id}" in path:
        live = path.endswith(("/revoke", "/extend", "/drop"))  # act on an approved grant
        make = sw.approved_request if live else sw.new_request
        path = path.replace("{request_id}", str(make(user)))
        if path.endswith("/extend"):
            body = {"duration_seconds": 60, "reason": "matrix"}
        elif probe.method == "POST" and not path.endswith(("/cancel", "/drop")):
            body = {"comment": "matrix"}
    elif path == "/api/v1/login":
        # A NUL is refused before PAM is asked: the failure path, without PAM's delay.
        body = {"username": "alice", "password": "wrong\x00"}
    elif path == "/api/v1/login/sso/device/token":
        body = {"handle": "matrix"}
    elif path == "/api/v1/keys" and probe.method == "POST":
        body = {"public_key": sw.fresh_key_line()}
    elif path == "/api/v1/requests" and probe.method == "POST":
        body = {"host": "web1", "login": "deploy", "reason": "matrix", "duration_seconds": 600}
        if ROLE_USER.get(role):  # an earlier cell's pending request would make this a 409
            sw.clear_pending(ROLE_USER[role])  # type: ignore[arg-type]
    elif path == "/api/v1/hook/authorized-keys":
        body = sw.w.akc_query("alice")
    elif path == "/api/v1/hook/account":
        body = {"login": "deploy", "fingerprint": alice.fingerprint, "connection": "10:20"}
    elif path == "/api/v1/hook/session":
        body = {
            "event": "open",
            "login": "deploy",
            "connection": "10:20",
            "key_type": alice.key_type,
            "key": alice.blob,
        }
    elif path == "/api/v1/hook/break-glass":
        body = {"login": "breakglass", "stage": "account"}
    if probe.query:
        path += "?" + probe.query
    return path, body


def fresh_token(sw: SecWorld, user: str) -> tuple[int, str]:
    """A new token of ``user`` (so revoking it spares the role's own); (id, token)."""
    tok = sw.svc.admin("token", "create", user).strip()
    sw.w.secrets.append(tok)
    _, text = raw_call(sw, "GET", "/api/v1/tokens", tok, None)
    return next(t["id"] for t in json.loads(text)["tokens"] if t["current"]), tok


def raw_call(sw: SecWorld, method: str, path: str, token: str | None, body) -> tuple[int, str]:  # noqa: ANN001
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(sw.svc.url + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.headers.get_content_type() == "text/event-stream":
                return r.status, first_event_data(r)
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def first_event_data(r) -> str:  # noqa: ANN001
    """The data of an event stream's first event (the stream itself never ends)."""
    data = []
    while (line := r.readline().decode()) not in ("\n", ""):
        if line.startswith("data:"):
            data.append(line[5:].strip())
    return "\n".join(data)


def forbidden_text(sw: SecWorld, role: str) -> set[str]:
    """Strings that must never appear in an answer to ``role``."""
    w = sw.w
    fps = {name: k.fingerprint for name, k in w.keys.items()}
    out: set[str] = set(w.secrets)  # no token ever comes back (login is refused here)
    if role in ("anonymous", "disabled", "revoked", "host_removed"):
        out |= sw.all_markers() | set(fps.values()) | {"web1", "web2", "alice", "frank"}
    elif role == "host_b":
        out |= sw.all_markers() | set(fps.values()) | {"web1", "alice", "frank", "bob"}
        out.add(w.keys["alice"].blob)
    elif role == "host_a":
        out |= sw.all_markers() | {"web2", "frank", "bob"}
        out |= {fp for name, fp in fps.items() if name != "alice"}
    elif role == "requester":
        out |= set().union(*(m for owner, m in sw.markers.items() if owner != "alice"))
        out |= {fp for name, fp in fps.items() if name != "alice"}
    elif role == "approver":  # sees others' requests to review them, never their keys
        out |= {fp for name, fp in fps.items() if name != "bob"}
    return out


def unasked(text: str, body: object) -> str:
    """A hook answer without its echo of the question (the caller's own words, no leak)."""
    try:
        answer = json.loads(text)
    except ValueError:
        return text
    if not isinstance(answer, dict) or not isinstance(body, dict):
        return text
    echoed = {k for k in ("login", "fingerprint", "connection") if k in body}
    return json.dumps({k: v for k, v in answer.items() if k not in echoed or v != body[k]})


@pytest.mark.parametrize(("probe", "own", "role"), CELLS)
def test_cell(secworld: SecWorld, probe: Probe, own: str, role: str):
    path, body = prepare(secworld, probe, own, role)
    token = secworld.token(role)
    if probe.path == "/api/v1/logout" and role in USERS:
        token = fresh_token(secworld, ROLE_USER[role])[1]
    status, text = raw_call(secworld, probe.method, path, token, body)
    expected = probe.expect[own][role]
    assert status == expected, f"{probe.id} as {role} ({own}): {status} {text[:300]}"
    leaked = sorted(s for s in forbidden_text(secworld, role) if s in unasked(text, body))
    assert leaked == [], f"foreign data in the answer to {role}: {leaked}"
    record(authz_cells=1)
    if status >= 400:
        err = json.loads(text)
        assert isinstance(err.get("error"), str) and isinstance(err.get("detail"), str)
        return
    if probe.path.startswith("/api/v1/hook/"):
        check_hook_answer(secworld, probe, role, json.loads(text))
    elif probe.path == "/api/v1/logout":  # positive control: the token is dead now
        assert raw_call(secworld, "GET", "/api/v1/me", token, None)[0] == 401
    elif probe.path == "/api/v1/me":
        assert json.loads(text)["name"] == ROLE_USER[role]
    elif probe.path == "/api/v1/requests" and probe.method == "GET" and not probe.query:
        mine = json.loads(text)["requests"]
        assert all(r["requester"] == ROLE_USER[role] for r in mine)
    elif probe.path.startswith(REQ):
        # Positive control: the marker check above would see a leak if there were one.
        owner = ROLE_USER[role] if own == "mine" else "frank"
        assert json.loads(text)["requester"] == owner
        assert json.loads(text)["reason"].split()[-1] in secworld.markers[owner]


def check_hook_answer(sw: SecWorld, probe: Probe, role: str, answer: dict) -> None:
    """Host A gets alice's approval on web1; host B gets nothing about it."""
    on_a = role == "host_a"
    name = probe.path.rsplit("/", 1)[1]
    if name == "authorized-keys":
        assert len(answer["keys"]) == (1 if on_a else 0)
    elif name in ("account", "session"):
        assert answer["decision"] == ("allow" if on_a else "deny")
    elif name in ("ping", "stream"):  # the stream's first event is its sync, for this host
        assert answer["host"] == ("web1" if on_a else "web2")
    elif name == "sessions":  # only this host's own sessions, never host A's on B
        assert all(s["connection"] != "10:20" for s in answer["end"] + answer["active"]) or on_a
    else:
        assert answer["recorded"] is True and answer["host"] == ("web1" if on_a else "web2")
