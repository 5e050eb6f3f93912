"""grants: extensions, drop, pinned source ranges, session key fingerprints

Revision ID: 0008_grants
Revises: 0007_audit_allows
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_grants"
down_revision = "0007_audit_allows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as b:
        b.add_column(sa.Column("from_cidrs", sa.Text(), nullable=True))
        b.add_column(
            sa.Column("extended_seconds", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("sessions") as b:
        b.add_column(sa.Column("fingerprint", sa.String(60), nullable=True))
    op.create_table(
        "extensions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("request_id", sa.Integer(), sa.ForeignKey("requests.id"), nullable=False),
        sa.Column("seconds", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("approvals_required", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("decided_at", sa.Integer(), nullable=True),
    )
    op.create_index("ix_extensions_request", "extensions", ["request_id", "state"])
    op.create_index("ix_extensions_state", "extensions", ["state"])
    op.create_table(
        "extension_reviews",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("extension_id", sa.Integer(), sa.ForeignKey("extensions.id"), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("comment", sa.String(500), nullable=False),
        sa.Column("at", sa.Integer(), nullable=False),
        sa.UniqueConstraint("extension_id", "reviewer_id", name="uq_extension_reviews_reviewer"),
    )


def downgrade() -> None:
    op.drop_table("extension_reviews")
    op.drop_index("ix_extensions_state", table_name="extensions")
    op.drop_index("ix_extensions_request", table_name="extensions")
    op.drop_table("extensions")
    with op.batch_alter_table("sessions") as b:
        b.drop_column("fingerprint")
    with op.batch_alter_table("requests") as b:
        b.drop_column("extended_seconds")
        b.drop_column("from_cidrs")
