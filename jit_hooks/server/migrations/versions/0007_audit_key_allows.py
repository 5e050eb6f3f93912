"""audit: authorized-keys allows counted per (host, login, fingerprint, window, request)

Revision ID: 0007_audit_allows
Revises: 0006_audit_anchors
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_audit_allows"
down_revision = "0006_audit_anchors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_key_allows",
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("login", sa.String(33), nullable=False),
        sa.Column("fingerprint", sa.String(100), nullable=False),
        sa.Column("window_start", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("host", "login", "fingerprint", "window_start", "request_id"),
    )
    op.create_index("ix_audit_key_allows_window", "audit_key_allows", ["window_start"])


def downgrade() -> None:
    op.drop_index("ix_audit_key_allows_window", table_name="audit_key_allows")
    op.drop_table("audit_key_allows")
