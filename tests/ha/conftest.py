"""Fixtures for the HA suite: its own PostgreSQL clusters (fsync on), several service replicas.

These tests kill replicas and database servers, so unlike the backend suites
(tests/utils/backends.py, fsync off) every cluster here is created per test
with real durability.
"""

from __future__ import annotations

import os
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


def seed(svc: Service, keydir: Path, *, approvers: int = 3, approvals: int = 1) -> World:
    """alice (requester, one key), approvers bob/carol/dave..., hosts web1+web2, policy prod."""
    w = World(svc)
    w.user("alice", "requester")
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
