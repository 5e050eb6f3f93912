"""Builders for service tests: people, hosts, policies and keys on a real service."""

from __future__ import annotations

import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jit_hooks.testing.keys import SshKey, make_key  # noqa: F401 (re-exported)
from jit_hooks.testing.service import Service, start_service
from tests.utils.backends import services_on

POLICY = """
[[policy]]
name = "web-prod"
hosts = ["web1"]
logins = ["deploy"]
requesters = {{ roles = ["requester"] }}
approvers = {{ roles = ["approver"] }}
approvals_required = {n}
max_duration = 14400
reason_required = true
options = ["no-agent-forwarding", "no-port-forwarding"]
"""


@dataclass
class World:
    svc: Service
    tokens: dict[str, str] = field(default_factory=dict)
    host_tokens: dict[str, str] = field(default_factory=dict)
    keys: dict[str, SshKey] = field(default_factory=dict)

    def call(self, who: str | None, method: str, path: str, body=None):  # noqa: ANN001
        token = self.tokens.get(who) or self.host_tokens.get(who) if who else None
        return self.svc.call(method, path, token=token, body=body)

    def add_host(self, name: str, *labels: str) -> None:
        args = [a for label in labels for a in ("--label", label)]
        self.host_tokens[name] = self.svc.admin("host", "add", name, *args).strip()

    def policy(self, text: str) -> None:
        f = self.svc.data_dir / "policy.toml"
        f.write_text(textwrap.dedent(text))
        self.svc.admin("policy", "add", str(f))

    def request(self, who: str = "alice", **kw):  # noqa: ANN003
        body = {
            "host": "web1",
            "login": "deploy",
            "reason": "INC-1 disk full",
            "duration_seconds": 600,
        }
        body.update(kw)
        return self.call(who, "POST", "/api/v1/requests", body)

    def akc(self, host: str, who: str, login: str = "deploy"):
        k = self.keys[who]
        return self.call(
            host,
            "POST",
            "/api/v1/hook/authorized-keys",
            {"login": login, "fingerprint": k.fingerprint, "key_type": k.key_type, "key": k.blob},
        )


@pytest.fixture(scope="module", autouse=True)
def backend(db_backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on SQLite and on PostgreSQL (tests/utils/backends.py)."""
    with services_on(db_backend, request):
        yield db_backend


class Admin:
    """Admin actions done in-process on the service's database, as `jit-server` does.

    Much faster than one `jit-server` process per action; the CLI itself is
    tested in test_cli.py.
    """

    def __init__(self, svc: Service) -> None:
        from jit_hooks.server.db import make_engine

        self.engine = make_engine(svc.database_url or f"sqlite:///{svc.data_dir / 'jit.db'}")

    def __call__(self, fn, **kw):  # noqa: ANN001, ANN003, ANN204
        from jit_hooks.server.settings import _now

        with self.engine.begin() as conn:
            return fn(conn, actor="test", now=_now(), **kw)

    def close(self) -> None:
        self.engine.dispose()


def build_world(svc: Service, tmp_path: Path, *, approvals: int = 1) -> World:
    from jit_hooks.server import store
    from jit_hooks.server.policy import parse_policy

    w = World(svc)
    admin = Admin(svc)
    try:
        people = {
            "alice": ["requester"],
            "bob": ["approver"],
            "carol": ["approver"],
            "dave": ["requester"],
            "mallory": ["requester", "approver"],
            "root-admin": ["admin"],
        }
        for name, roles in people.items():
            admin(store.add_user, name=name, roles=roles)
            w.tokens[name] = admin(store.create_user_token, name=name)
        for host in ("web1", "web2"):
            w.host_tokens[host] = admin(store.add_host, name=host, labels={"env": "prod"})
        spec = tomllib.loads(POLICY.format(n=approvals))["policy"][0]
        admin(store.put_policy, policy=parse_policy(spec))
    finally:
        admin.close()
    for name in ("alice", "mallory"):
        w.keys[name] = make_key(tmp_path, name)
        status, body = w.call(name, "POST", "/api/v1/keys", {"public_key": w.keys[name].line})
        assert status == 201, body
    return w


@pytest.fixture
def world(service: Service, tmp_path: Path) -> World:
    """A fresh service with people, hosts, keys and a one-approval policy."""
    return build_world(service, tmp_path)


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory, backend: str) -> World:
    """One service per test module and backend, for tests that don't depend on each other's state.

    It asks for ``backend`` so that the PostgreSQL variants get a world of their own: a
    module fixture that does not depend on the parameter outlives the switch from
    SQLite to PostgreSQL when a module's variants run back to back (one file run alone).
    """
    tmp = tmp_path_factory.mktemp("shared")
    svc = start_service(tmp / "server")
    try:
        yield build_world(svc, tmp)
    finally:
        svc.stop()
