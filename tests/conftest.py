"""Shared fixtures: a real service process per test (fresh SQLite file)."""

from __future__ import annotations

import pytest

from jit_hooks.testing.service import Service, start_service


@pytest.fixture
def service(tmp_path) -> Service:
    svc = start_service(tmp_path / "server")
    try:
        yield svc
    finally:
        svc.stop()
