"""H-SSO (issue 13): sign-ins through the identity provider under way (sso_flows), and the
IdP subject each user is bound to (sso_identities)

Revision ID: 0011_sso
Revises: 0010_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_sso"
down_revision = "0010_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sso_flows",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Integer(), nullable=False),
    )
    op.create_index("ix_sso_flows_expires_at", "sso_flows", ["expires_at"])
    op.create_table(
        "sso_identities",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("issuer", sa.String(255), nullable=False),
        sa.Column("sub", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.UniqueConstraint("issuer", "sub", name="uq_sso_identities_subject"),
        sa.UniqueConstraint("user_id", "issuer", name="uq_sso_identities_user"),
    )


def downgrade() -> None:
    op.drop_table("sso_identities")
    op.drop_index("ix_sso_flows_expires_at", table_name="sso_flows")
    op.drop_table("sso_flows")
