"""Fixtures for the security suite: a real service seeded with every role under test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jit_hooks.testing.seed import World, make_key
from jit_hooks.testing.service import start_service
from tests.utils.backends import services_on


@pytest.fixture(scope="module", autouse=True)
def backend(db_backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on SQLite and on PostgreSQL (tests/utils/backends.py)."""
    with services_on(db_backend, request):
        yield db_backend


# Role under test -> the user behind it (None: not a user token).
ROLE_USER = {
    "anonymous": None,
    "requester": "alice",
    "approver": "bob",  # approver AND requester: so it can own requests (self-approval)
    "admin": "admin",
    "host_a": None,
    "host_b": None,
    "disabled": "dave",
    "revoked": None,  # host A's token before its rotation
    "host_removed": None,  # the token of a host that was removed
}
ROLES = tuple(ROLE_USER)


@dataclass
class SecWorld:
    w: World
    keydir: Path
    role_tokens: dict[str, str | None] = field(default_factory=dict)
    # Unique text put into every request's reason, by owner: foreign-data probes.
    markers: dict[str, set[str]] = field(default_factory=dict)
    _n: itertools.count = field(default_factory=itertools.count)

    @property
    def svc(self):  # noqa: ANN201
        return self.w.svc

    def token(self, role: str) -> str | None:
        return self.role_tokens[role]

    def clear_pending(self, owner: str) -> None:
        """Cancel the owner's pending requests: a person has one pending request per
        host and login, and a cell that asks again must not get that 409."""
        tok = self.w.tokens[owner]
        status, body = self.w.call(tok, "GET", "/api/v1/requests?scope=mine&state=pending")
        if status != 200:  # a disabled user: nothing it could ask for anyway
            return
        for r in body["requests"]:
            self.w.call(tok, "POST", f"/api/v1/requests/{r['id']}/cancel")

    def new_request(self, owner: str, host: str = "web1") -> int:
        self.clear_pending(owner)
        marker = f"MARK{owner.upper()}{next(self._n):04d}"
        self.markers.setdefault(owner, set()).add(marker)
        return self.w.request(owner, host=host, reason=f"ticket {marker}")["id"]

    def approved_request(self, owner: str) -> int:
        rid = self.new_request(owner)
        self.w.approve("carol", rid)
        return rid

    def new_key(self, owner: str) -> tuple[int, str]:
        """Register a fresh key for ``owner``; (key id, fingerprint)."""
        key = make_key(self.keydir, f"{owner}-{next(self._n)}")
        status, body = self.w.call(
            self.w.tokens[owner], "POST", "/api/v1/keys", {"public_key": key.line}
        )
        assert status == 201, body
        return body["id"], key.fingerprint

    def fresh_key_line(self) -> str:
        return make_key(self.keydir, f"fresh-{next(self._n)}").line

    def all_markers(self) -> set[str]:
        return set().union(*self.markers.values()) if self.markers else set()


def build_security_world(tmp: Path) -> SecWorld:
    svc = start_service(tmp / "server")
    w = World(svc)
    w.user("alice", "requester")
    w.user("bob", "approver", "requester")
    w.user("carol", "approver")  # does the set-up approvals; not a role under test
    w.user("frank", "requester")  # owns the "other" objects; not a role under test
    w.user("admin", "admin")
    w.user("dave", "requester")
    w.host("web1", "env=prod")
    w.host("web2", "env=prod")
    w.host("web3", "env=prod")
    w.policy()
    keydir = tmp / "keys"
    keydir.mkdir()
    for name in ("alice", "bob", "frank", "dave"):
        w.add_key(name, keydir)
    sw = SecWorld(w, keydir)
    # alice holds an approval on web1 (host A): what host B must never learn about.
    sw.approved_request("alice")
    sw.new_request("dave")
    svc.admin("user", "disable", "dave")
    revoked = w.rotate("web1")
    svc.admin("host", "remove", "web3")
    sw.role_tokens = {
        "anonymous": None,
        "requester": w.tokens["alice"],
        "approver": w.tokens["bob"],
        "admin": w.tokens["admin"],
        "host_a": w.host_tokens["web1"],
        "host_b": w.host_tokens["web2"],
        "disabled": w.tokens["dave"],
        "revoked": revoked,
        "host_removed": w.host_tokens["web3"],
    }
    return sw


@pytest.fixture(scope="module")
def secworld(tmp_path_factory, backend: str) -> SecWorld:
    # ``backend``: one world per backend (see tests/server/conftest.py shared_world).
    sw = build_security_world(tmp_path_factory.mktemp("sec"))
    try:
        yield sw
    finally:
        sw.svc.stop()
    assert sw.w.leaked_secrets() == [], "token in the service log"
