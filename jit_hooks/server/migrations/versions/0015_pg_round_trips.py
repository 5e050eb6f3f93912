"""audit: authorized-keys misses are insert-only rows, no per-key counter row (issue 11)

Revision ID: 0015_pg_round_trips
Revises: 0014_sso_flow_limits

Migration 0004 counted the denied asks of one (host, login, key, window) by an
upsert on one row: in a storm of asks for one key on one host every deny waited
for the previous deny's COMMIT on that row, and two group-committed batches
bumping the same rows in opposite orders deadlocked (docs/performance.md, P3pg).
As migration 0012 did for allows: on PostgreSQL every miss inserts a row of its
own (``count`` 1) saying whether it wrote the window's first event (``evented``),
in the same statement as that event; the fold sums them when the window closes.
SQLite (one writer at a time) keeps one row per window and bumps its count.
Existing counter rows are carried over as they are: one row of ``count`` misses
whose first was audited (``evented`` true).

The rows live in a NEW table, ``audit_miss_rows``, and ``audit_misses`` is
dropped: a replica still running the 0014-era code (a rolling upgrade) would
otherwise read the new rows as counters (``count <= 1``: nothing to report,
then DELETE) and silently lose repeated-denial evidence. With the old table
gone its fold and its upsert fail and roll back instead (docs/server.md,
upgrading: stop or upgrade every replica together for 0015).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_pg_round_trips"
down_revision = "0014_sso_flow_limits"
branch_labels = None
depends_on = None

_KEY = ("host", "login", "fingerprint", "window_start")
_COLUMNS = (*_KEY, "count", "first_at", "last_at", "reason")


def _columns() -> list[sa.Column]:
    return [
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("login", sa.String(length=33), nullable=False),
        sa.Column("fingerprint", sa.String(length=100), nullable=False),
        sa.Column("window_start", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
    ]


def upgrade() -> None:
    # The counter rows of open windows only: a few per recently asked key.
    cols = ", ".join(_COLUMNS)
    rows = [
        dict(r._mapping) for r in op.get_bind().execute(sa.text(f"SELECT {cols} FROM audit_misses"))
    ]
    op.drop_index("ix_audit_misses_window", table_name="audit_misses")
    op.drop_table("audit_misses")
    table = op.create_table(
        "audit_miss_rows",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        *_columns(),
        sa.Column("evented", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_audit_miss_rows_window", "audit_miss_rows", ["window_start"])
    op.create_index("ix_audit_miss_rows_key", "audit_miss_rows", list(_KEY))
    if rows:
        op.bulk_insert(table, [r | {"evented": True} for r in rows])
    if op.get_bind().dialect.name == "postgresql":
        # The fold deletes these rows by the thousand; autovacuum then truncates the
        # empty tail of the file under an ACCESS EXCLUSIVE lock, which every hook's
        # INSERT waits for (bench P3pg sampled one such wait). Leaving the empty
        # pages for the next inserts costs nothing: the tables stay small.
        for name in ("audit_miss_rows", "audit_key_allows"):
            op.execute(f"ALTER TABLE {name} SET (vacuum_truncate = off)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE audit_key_allows RESET (vacuum_truncate)")
    keys = ", ".join(_KEY)
    rows = [
        dict(r._mapping)
        for r in op.get_bind().execute(
            sa.text(
                f"SELECT {keys}, sum(count) AS count, min(first_at) AS first_at, "
                f"max(last_at) AS last_at, min(reason) AS reason "
                f"FROM audit_miss_rows GROUP BY {keys}"
            )
        )
    ]
    op.drop_index("ix_audit_miss_rows_key", table_name="audit_miss_rows")
    op.drop_index("ix_audit_miss_rows_window", table_name="audit_miss_rows")
    op.drop_table("audit_miss_rows")
    table = op.create_table("audit_misses", *_columns(), sa.PrimaryKeyConstraint(*_KEY))
    op.create_index("ix_audit_misses_window", "audit_misses", ["window_start"])
    if rows:
        op.bulk_insert(table, rows)
