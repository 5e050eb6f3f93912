"""Alembic environment: runs against the engine jit-server passes in."""

from __future__ import annotations

from alembic import context

from jit_hooks.server.tables import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # plain `alembic` invocation: build one from the URL
    from jit_hooks.server.db import make_engine

    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url, or run migrations with `jit-server db upgrade`")
    engine = make_engine(url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite can't ALTER most things in place
    )
    with context.begin_transaction():
        context.run_migrations()
