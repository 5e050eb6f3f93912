"""H-INIT (issue 13): token expiry (user token lifetimes, host token rotation grace)
and removed users (their history stays, their name stays taken)

Revision ID: 0010_identity
Revises: 0009_push
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_identity"
down_revision = "0009_push"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch_op:
        # NULL: never expires (host tokens, explicit `token create --expires never`).
        batch_op.add_column(sa.Column("expires_at", sa.Integer(), nullable=True))
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("removed_at", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("removed_at")
    with op.batch_alter_table("tokens") as batch_op:
        batch_op.drop_column("expires_at")
