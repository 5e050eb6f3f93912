"""H-PUSH (issue 14: host event stream)

Revision ID: 0009_push
Revises: 0008_grants

Reserved in the chain so parallel work gets a linear history; the owner fills it.
"""

from __future__ import annotations

revision = "0009_push"
down_revision = "0008_grants"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
