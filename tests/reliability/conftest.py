"""Fixtures for the reliability suite: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def backend(db_backend: str) -> str:
    """The test's database backend (tests/utils/backends.py)."""
    return db_backend
