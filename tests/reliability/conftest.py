"""Fixtures for the reliability suite: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.utils.backends import services_on


@pytest.fixture(scope="module", autouse=True)
def backend(db_backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The test's database backend (tests/utils/backends.py)."""
    with services_on(db_backend, request):
        yield db_backend
