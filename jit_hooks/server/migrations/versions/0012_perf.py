"""audit: authorized-keys allows are insert-only rows, no per-key counter row (issue 11)

Revision ID: 0012_perf
Revises: 0011_sso

Migration 0007 counted the allows of one (host, login, key, approval, window) by
an upsert on one row: under a burst of logins with one key every check waited
for the previous check's COMMIT on that row (bench P3pg: 1,213 lock waits, 0.12x
SQLite). Now every allow inserts a row of its own (``count`` 1) and says whether
it wrote the window's first event (``evented``); the fold sums them when the
window closes. Existing counter rows are carried over as they are: one row of
``count`` allows whose first was audited (``evented`` true).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_perf"
down_revision = "0011_sso"
branch_labels = None
depends_on = None

_KEY = ("host", "login", "fingerprint", "window_start", "request_id")
_COLUMNS = (*_KEY, "actor", "count", "first_at", "last_at")


def _columns() -> list[sa.Column]:
    return [
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("login", sa.String(33), nullable=False),
        sa.Column("fingerprint", sa.String(100), nullable=False),
        sa.Column("window_start", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.Integer(), nullable=False),
    ]


def _rows(table: str) -> list[dict]:
    # The counter rows of open windows only: a few per active key, read into memory.
    cols = ", ".join(_COLUMNS)
    result = op.get_bind().execute(sa.text(f"SELECT {cols}, 1 AS evented FROM {table}"))
    return [dict(r._mapping) for r in result]


def upgrade() -> None:
    rows = _rows("audit_key_allows")
    op.drop_index("ix_audit_key_allows_window", table_name="audit_key_allows")
    op.drop_table("audit_key_allows")
    table = op.create_table(
        "audit_key_allows",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        *_columns(),
        sa.Column("evented", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_audit_key_allows_window", "audit_key_allows", ["window_start"])
    op.create_index("ix_audit_key_allows_key", "audit_key_allows", list(_KEY))
    if rows:
        for r in rows:
            r["evented"] = True
        op.bulk_insert(table, rows)


def downgrade() -> None:
    bind = op.get_bind()
    cols = ", ".join(_KEY)
    rows = [
        dict(r._mapping)
        for r in bind.execute(
            sa.text(
                f"SELECT {cols}, max(actor) AS actor, sum(count) AS count, "
                f"min(first_at) AS first_at, max(last_at) AS last_at "
                f"FROM audit_key_allows GROUP BY {cols}"
            )
        )
    ]
    op.drop_index("ix_audit_key_allows_key", table_name="audit_key_allows")
    op.drop_index("ix_audit_key_allows_window", table_name="audit_key_allows")
    op.drop_table("audit_key_allows")
    table = op.create_table("audit_key_allows", *_columns(), sa.PrimaryKeyConstraint(*_KEY))
    op.create_index("ix_audit_key_allows_window", "audit_key_allows", ["window_start"])
    if rows:
        op.bulk_insert(table, rows)
