"""Fixtures for the HA suite: its own PostgreSQL clusters (fsync on), several service replicas.

These tests kill replicas and database servers, so unlike the backend suites
(tests/utils/backends.py, fsync off) every cluster here is created per test
with real durability.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jit_hooks.testing import postgres
from jit_hooks.testing.seed import World
from jit_hooks.testing.service import Service, start_service


def _require_postgres() -> None:
    if not postgres.available():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL 15 server binaries are missing (CI installs them)")
        pytest.skip("PostgreSQL 15 server binaries not installed (scripts/setup installs them)")


def start_cluster(**conf) -> postgres.PostgresCluster:  # noqa: ANN003
    """A started primary (fsync on); skipped (failed under CI) without PostgreSQL."""
    _require_postgres()
    cluster = postgres.make_cluster().init(**conf)
    try:
        return cluster.start()
    except BaseException:
        cluster.destroy()
        raise


@pytest.fixture
def pg():
    """A fresh primary (fsync on), destroyed after the test."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def replicas_on(tmp_path):
    """start(url, n) -> n services on one database; all stopped after the test."""
    started: list[Service] = []

    def start(url: str, n: int, *, prefix: str = "replica") -> list[Service]:
        out = []
        for _ in range(n):
            svc = start_service(tmp_path / f"{prefix}{len(started)}", database_url=url)
            started.append(svc)
            out.append(svc)
        return out

    try:
        yield start
    finally:
        for svc in started:
            svc.stop()


def seed(
    svc: Service, keydir: Path, *, approvers: int = 3, approvals: int = 1, requesters: int = 0
) -> World:
    """alice (requester, one key), approvers bob/carol/dave..., hosts web1+web2, policy prod.

    ``requesters`` more requesters rq0, rq1, ... (no keys): one per client thread,
    since a requester may hold only one pending request per host and login.
    """
    w = World(svc)
    w.user("alice", "requester")
    for i in range(requesters):
        w.user(f"rq{i}", "requester")
    names = ["bob", "carol", "dave", "erin", "frank"][:approvers]
    for name in names:
        w.user(name, "approver")
    w.host("web1", "env=prod")
    w.host("web2", "env=prod")
    w.policy(
        "[[policy]]\n"
        'name = "prod"\n'
        'hosts = ["web1", "web2"]\n'
        'logins = ["deploy"]\n'
        'requesters = { roles = ["requester"] }\n'
        'approvers = { roles = ["approver"] }\n'
        f"approvals_required = {approvals}\n"
        "max_duration = 14400\n"
        "reason_required = true\n"
    )
    keydir.mkdir(exist_ok=True)
    w.add_key("alice", keydir)
    return w


def akc(svc: Service, w: World, host: str = "web1", user: str = "alice"):
    """One authorized-keys hook call as ``host`` on ``svc``: (status, body)."""
    return svc.call("POST", "/api/v1/hook/authorized-keys", w.host_tokens[host], w.akc_query(user))


@dataclass
class Acks:
    """What the service acknowledged, with when each acknowledged call was sent and answered."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    created: set[int] = field(default_factory=set)
    approved: set[int] = field(default_factory=set)
    revoked: set[int] = field(default_factory=set)
    writes: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered)
    errors: Counter = field(default_factory=Counter)

    def ack(self, kind: str, rid: int, sent: float) -> None:
        with self.lock:
            getattr(self, kind).add(rid)
            self.writes.append((sent, time.monotonic()))


class Writer:
    """One client's request -> approve (-> revoke) cycle through a replica; acknowledged ids.

    A request whose approval got no answer may stay pending, and a requester may
    hold only one pending request per host and login: it is cancelled (or found
    decided) before the next one.
    """

    def __init__(self, w: World, requester: str, host: str) -> None:
        self.w, self.requester, self.host = w, requester, host
        self.stuck: int | None = None
        self.n = 0

    def step(self, svc: Service, *, revoke: bool, log: Acks) -> bool:
        """One cycle; False when a call failed (log.errors counts it)."""
        tok = self.w.tokens
        if self.stuck is not None:
            status, _ = svc.call("POST", f"{R}/{self.stuck}/cancel", tok[self.requester])
            if status not in (200, 409):  # 409: it was decided after all
                log.errors[f"cancel {status}"] += 1
                return False
            self.stuck = None
        self.n += 1
        body = {"host": self.host, "login": "deploy", "reason": f"INC-{self.requester}-{self.n}",
                "duration_seconds": 600}  # fmt: skip
        sent = time.monotonic()
        status, out = svc.call("POST", R, tok[self.requester], body)
        if status != 201:
            log.errors[f"create {status}"] += 1
            detail = (out or {}).get("detail", "")
            if status == 409 and "already pending" in detail:
                # An earlier create committed though its answer was lost (the
                # database died after the COMMIT): cancel that one next time.
                self.stuck = int(detail.split()[1])
            return False
        rid = out["id"]
        log.ack("created", rid, sent)
        sent = time.monotonic()
        self.stuck = rid
        status, _ = svc.call("POST", f"{R}/{rid}/approve", tok["bob"], {})
        if status != 200:
            log.errors[f"approve {status}"] += 1
            return False
        self.stuck = None
        log.ack("approved", rid, sent)
        if revoke:
            sent = time.monotonic()
            status, _ = svc.call("POST", f"{R}/{rid}/revoke", tok["bob"], {})
            if status != 200:
                log.errors[f"revoke {status}"] += 1
                return False
            log.ack("revoked", rid, sent)
        return True


R = "/api/v1/requests"
