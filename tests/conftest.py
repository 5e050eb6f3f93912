"""Shared fixtures: a real service process per test (a fresh database of the test's backend)."""

from __future__ import annotations

import pytest

from jit_hooks.testing.service import Service, start_service
from tests.utils.backends import db_backend, pg, skip_sqlite_only  # noqa: F401 (fixtures)


def pytest_configure(config) -> None:  # noqa: ANN001
    config.addinivalue_line(
        "markers", "sqlite_only(reason): skip the PostgreSQL variant of this test, saying why"
    )


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    skip_sqlite_only(items)


@pytest.fixture
def service(tmp_path) -> Service:
    svc = start_service(tmp_path / "server")
    try:
        yield svc
    finally:
        svc.stop()
