"""H-FIXID (issue 13, review L2): device sign-ins are counted per client and paced

Revision ID: 0014_sso_flow_limits
Revises: 0013_ui_session_source

The unauthenticated POST /api/v1/login/sso/device stored a flow (and called the
IdP) for anyone, without bound. ``sso_flows.client`` (the caller's address) lets
the service cap live device flows per client and overall; ``poll_interval`` and
``next_poll_at`` let it answer a poll that comes too early with slow_down itself
instead of passing every poll on to the IdP.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_sso_flow_limits"
down_revision = "0013_ui_session_source"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sso_flows") as batch_op:
        batch_op.add_column(sa.Column("client", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("poll_interval", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("next_poll_at", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sso_flows") as batch_op:
        batch_op.drop_column("next_poll_at")
        batch_op.drop_column("poll_interval")
        batch_op.drop_column("client")
