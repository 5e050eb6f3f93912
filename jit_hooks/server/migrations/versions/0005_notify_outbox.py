"""notify: the notification outbox

Revision ID: 0005_notify
Revises: 0004_audit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_notify"
down_revision = "0004_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_outbox",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.Integer(), nullable=False),
        sa.Column("delivered_at", sa.Integer(), nullable=True),
        sa.Column("failed_at", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
    )
    op.create_index(
        "ix_notify_outbox_due", "notify_outbox", ["delivered_at", "failed_at", "next_at"]
    )
    op.create_index("ix_notify_outbox_request", "notify_outbox", ["request_id", "event"])


def downgrade() -> None:
    op.drop_index("ix_notify_outbox_request", table_name="notify_outbox")
    op.drop_index("ix_notify_outbox_due", table_name="notify_outbox")
    op.drop_table("notify_outbox")
