"""H-FIXID (issue 13, review M3): a web session remembers the API token it was started with

Revision ID: 0013_ui_session_source
Revises: 0012_perf

A /ui session started with an API token outlived that token's revocation and
expiry. ``tokens.source_token_id`` (session rows only) names that token so a
session ends with it; sessions also get an ``expires_at`` (the token's, or the
interactive TTL for password and SSO sign-ins).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_ui_session_source"
down_revision = "0012_perf"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch_op:
        batch_op.add_column(sa.Column("source_token_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch_op:
        batch_op.drop_column("source_token_id")
