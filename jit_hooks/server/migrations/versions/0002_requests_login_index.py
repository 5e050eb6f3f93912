"""index requests by (login, state, ends_at) for the account hook

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Without it, a password login's account check walks every approved
    # request ever made (expired ones keep state 'approved').
    op.create_index("ix_requests_login_active", "requests", ["login", "state", "ends_at"])


def downgrade() -> None:
    op.drop_index("ix_requests_login_active", table_name="requests")
