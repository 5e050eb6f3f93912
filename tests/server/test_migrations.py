"""Alembic migrations build exactly the schema tables.py declares, and step up cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from jit_hooks.server.db import alembic_config, make_engine, schema_is_current, upgrade
from jit_hooks.server.tables import metadata


def test_migrations_match_tables(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'jit.db'}")
    try:
        assert not schema_is_current(engine)
        upgrade(engine)
        assert schema_is_current(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        assert mode == "wal"
    finally:
        engine.dispose()


def test_downgrade_and_upgrade_again(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'jit.db'}")
    try:
        upgrade(engine, "0001")
        assert not schema_is_current(engine)
        upgrade(engine)
        command.downgrade(alembic_config(engine), "base")
        upgrade(engine)
        assert schema_is_current(engine)
    finally:
        engine.dispose()
