"""The database backends the service suites run on: SQLite and PostgreSQL, one fixture parameter.

tests/server, tests/security and tests/reliability run every test once per
backend (``[sqlite]`` / ``[postgresql]`` in the test id): their conftests
wrap each module in :func:`services_on` the :func:`db_backend` parameter, and
``start_service`` then puts each service on a fresh database of that backend
(``jit_hooks.testing.service.database_factory``).

PostgreSQL: ONE throwaway cluster per pytest session (initdb in a temp dir,
a free port on 127.0.0.1; jit_hooks/testing/postgres.py), started the first
time a PostgreSQL test needs it and destroyed at exit. A template database is
migrated once; each service gets ``CREATE DATABASE ... TEMPLATE`` of it (a file
copy, ~50 ms). The cluster runs with fsync off: these suites kill the
service, never the database server (the failover tests use their own cluster).

``JIT_TEST_BACKENDS=sqlite`` (or ``postgresql``) runs one backend only. Without
the PostgreSQL server binaries the PostgreSQL variants are skipped with the
reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from jit_hooks.testing import service

BACKENDS = tuple(
    b.strip() for b in os.environ.get("JIT_TEST_BACKENDS", "sqlite,postgresql").split(",")
)
TEMPLATE = "jit_template"
# Modules that test SQLite itself (its files, its modes, its group commit, its
# CLI on a data dir) or need no database: their PostgreSQL variant is skipped.
SQLITE_ONLY = {
    "test_cli.py": "jit-server on a data dir's SQLite file (PostgreSQL CLI: test_postgres.py)",
    "test_migrations.py": "migrations on SQLite (PostgreSQL: test_postgres.py compares schemas)",
    "test_workers.py": "--workers on one SQLite file",
    "test_policy.py": "no database",
    "test_secrets.py": "SQLite files and their modes on disk",
}

# Modules about PostgreSQL itself (replicas, schema parity): their SQLite variant is skipped.
POSTGRES_ONLY = {
    "test_postgres.py": "several replicas on one PostgreSQL, PostgreSQL's schema and CLI",
    "test_key_allows_pg.py": "row locks of concurrent allows on PostgreSQL (own cluster)",
}


class _Postgres:
    """The session's cluster, started lazily; databases are copies of a migrated template."""

    def __init__(self) -> None:
        self.cluster = None
        self._names = itertools.count(1)

    def start(self) -> None:
        from jit_hooks.server.db import make_engine, upgrade
        from jit_hooks.testing import postgres

        if not postgres.available():
            if os.environ.get("CI") == "true":
                pytest.fail("PostgreSQL 15 server binaries are missing (CI installs them)")
            pytest.skip("PostgreSQL 15 server binaries not installed (scripts/setup installs them)")
        self.cluster = postgres.make_cluster().init(
            extra_conf="fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        )
        self.cluster.start()
        engine = make_engine(self.cluster.create_database(TEMPLATE))
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    def new_database(self) -> str:
        assert self.cluster is not None
        name = f"jit_{os.getpid()}_{next(self._names)}"
        self.cluster.psql(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        return self.cluster.url(name)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.destroy()
            self.cluster = None


_pg = _Postgres()


@pytest.fixture(scope="session")
def pg() -> _Postgres:
    """The session's PostgreSQL cluster (started on first use, destroyed at the end)."""
    if _pg.cluster is None:
        _pg.start()
    try:
        yield _pg
    finally:
        _pg.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def db_backend(request) -> str:  # noqa: ANN001
    """``sqlite`` or ``postgresql``: the backend of this test (see :func:`services_on`)."""
    return request.param


@contextmanager
def services_on(backend: str, request) -> Iterator[str]:  # noqa: ANN001
    """Within: start_service() puts its services on fresh databases of ``backend``.

    The suites' conftests wrap each test module in it (a module-scoped autouse
    fixture, so that module-scoped worlds get the module's backend too); outside
    it, start_service() means SQLite again.
    """
    if backend == "postgresql":
        service.database_factory = request.getfixturevalue("pg").new_database
    else:
        service.database_factory = None
    try:
        yield backend
    finally:
        service.database_factory = None


def skip_sqlite_only(items: list) -> None:  # noqa: ANN001
    """Collection hook: skip the variants that do not apply (SQLITE_ONLY, POSTGRES_ONLY)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = None if callspec is None else callspec.params.get("db_backend")
        if backend == "sqlite" and item.path.name in POSTGRES_ONLY:
            reason = POSTGRES_ONLY[item.path.name]
            item.add_marker(pytest.mark.skip(reason=f"PostgreSQL only: {reason}"))
        if backend != "postgresql":
            continue
        reason = SQLITE_ONLY.get(item.path.name)
        if reason is None and item.get_closest_marker("sqlite_only") is not None:
            reason = item.get_closest_marker("sqlite_only").args[0]
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))
