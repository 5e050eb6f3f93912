"""E2E fixtures: one sandboxed real sshd per session, a real service per test, real ssh.

``world`` wires them: a service with a host ``web1`` (its token in the hooks'
config), a policy for the login account, requester alice, approver bob,
requester carol, and their registered keys.
"""

from __future__ import annotations

import os
import textwrap
import time
from dataclasses import dataclass, field

import pytest

from jit_hooks.testing.service import Service, start_service
from jit_hooks.testing.sshd import Person, SshdSandbox

pytestmark = pytest.mark.e2e

PASSWORD = "Corr3ct-h0rse-jit"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def make_box(*, hooksd: bool = False) -> SshdSandbox:
    """The e2e sandbox: people alice, bob, carol, mallory; accounts dep, oth, bg (break-glass).

    ``hooksd``: the hooks are served by a real jit-hooksd (jit_hooks/testing/sshd.py).
    """
    if os.geteuid() != 0:
        pytest.skip("e2e tests need root (real sshd, PAM, useradd)")
    sandbox = SshdSandbox(break_glass=("bg",), hooksd=hooksd)
    try:
        sandbox.people = {n: sandbox.person(n) for n in ("alice", "bob", "carol", "mallory")}
        sandbox.login = sandbox.add_account("dep", password=PASSWORD)
        sandbox.other_login = sandbox.add_account("oth", password=PASSWORD)
        bg = sandbox.person("breakglass")
        sandbox.people["breakglass"] = bg
        sandbox.bg_login = sandbox.add_account("bg", keys=[bg.public_line])
    except BaseException:
        sandbox.close()
        raise
    return sandbox


@pytest.fixture(scope="session")
def box():
    sandbox = make_box()
    try:
        yield sandbox
    finally:
        sandbox.close()


@dataclass
class World:
    svc: Service
    box: SshdSandbox
    login: str
    tokens: dict[str, str] = field(default_factory=dict)
    host_token: str = ""
    audit_cursor: int = 0  # events up to this id belong to earlier tests

    def person(self, name: str) -> Person:
        return self.box.people[name]

    def api(self, method: str, path: str, who: str, body=None, expect: int | None = 200):
        status, answer = self.svc.call(method, path, self.tokens[who], body)
        if expect is not None:
            assert status == expect, (method, path, status, answer)
        return answer

    def request(self, who="alice", *, login=None, host="web1", duration=3600) -> int:
        body = {
            "host": host,
            "login": login or self.login,
            "reason": "e2e test",
            "duration_seconds": duration,
        }
        return self.api("POST", "/api/v1/requests", who, body, expect=201)["id"]

    def approve(self, request_id: int, who="bob") -> dict:
        return self.api("POST", f"/api/v1/requests/{request_id}/approve", who, {})

    def revoke(self, request_id: int, who="bob") -> dict:
        return self.api("POST", f"/api/v1/requests/{request_id}/revoke", who, {})

    def put_policy(self, extra: str = "") -> None:
        """The world's policy ``e2e`` (with ``extra`` TOML lines), added or replaced."""
        policy = self.svc.data_dir / "policy.toml"
        policy.write_text(
            textwrap.dedent(f"""
            [[policy]]
            name = "e2e"
            hosts = ["web1", "web2"]
            logins = ["{self.box.login}", "{self.box.other_login}"]
            requesters = {{ roles = ["requester"] }}
            approvers = {{ roles = ["approver"] }}
            approvals_required = 1
            max_duration = 14400
            reason_required = false
            options = ["no-agent-forwarding"]
            """)
            + extra
        )
        self.svc.admin("policy", "add", str(policy))

    def events(self, kind: str | None = None) -> list[dict]:
        """Audit events of the current test (optionally of one kind)."""
        path = f"/api/v1/audit?after_id={self.audit_cursor}&limit=1000"
        events = self.api("GET", path, "admin")["events"]
        return [e for e in events if kind is None or e["kind"] == kind]

    def reset(self) -> None:
        """Between tests: service up, hooks pointed at it, no approval left active."""
        if self.svc.proc is None or self.svc.proc.poll() is not None:
            self.svc.start()
        self.box.configure([self.svc.url], self.host_token)
        for state in ("approved", "pending"):
            path = f"/api/v1/requests?scope=all&state={state}"
            for req in self.api("GET", path, "admin")["requests"]:
                action = "revoke" if state == "approved" else "cancel"
                who = "admin" if action == "revoke" else req["requester"]
                self.api("POST", f"/api/v1/requests/{req['id']}/{action}", who, {}, expect=None)
        while True:
            path = f"/api/v1/audit?after_id={self.audit_cursor}&limit=1000"
            events = self.api("GET", path, "admin")["events"]
            if not events:
                break
            self.audit_cursor = events[-1]["id"]
        self.box.sink.clear()
        # Past the current miss window (1 s, see session_world): a key this test
        # offers is a new window's first miss, so it is audited as an event.
        time.sleep(1.05 - time.time() % 1)

    def ssh(self, who: str, *command: str, login=None, **kw):
        return self.box.ssh(login or self.login, self.person(who), *command, **kw)


def setup_world(svc: Service, box: SshdSandbox) -> World:
    w = World(svc=svc, box=box, login=box.login)
    for name, roles in (
        ("alice", ["requester"]),
        ("bob", ["approver"]),
        ("carol", ["requester"]),
        ("mallory", ["requester"]),
        ("admin", ["admin"]),
    ):
        svc.admin("user", "add", name, *[a for r in roles for a in ("--role", r)])
        w.tokens[name] = svc.admin("token", "create", name).strip()
        if name in box.people:
            w.api(
                "POST",
                "/api/v1/keys",
                name,
                {"public_key": box.people[name].public_line},
                expect=201,
            )
    w.host_token = svc.admin("host", "add", "web1", "--label", "env=prod").strip()
    svc.admin("host", "add", "web2", "--label", "env=prod")
    w.put_policy()
    box.configure([svc.url], w.host_token)
    box.sink.clear()
    return w


# Unauthenticated AKC misses are audited once per (host, login, fingerprint) and
# window (server/fold.py). A world's tests offer the same keys test after test, so
# its service uses one-second windows and `reset` starts each test in a fresh one:
# every test sees its own first deny as an event. tests/e2e/test_key_storm.py
# covers the aggregation itself.
WORLD_ENV = {"JIT_AUDIT_MISS_WINDOW": "1"}


@pytest.fixture(scope="session")
def session_world(box, tmp_path_factory):
    svc = start_service(tmp_path_factory.mktemp("e2e-server"), env=WORLD_ENV)
    try:
        yield setup_world(svc, box)
    finally:
        svc.stop()


@pytest.fixture
def world(session_world) -> World:
    """The shared world, reset: tests must leave nothing approved behind (reset revokes)."""
    session_world.reset()
    return session_world
