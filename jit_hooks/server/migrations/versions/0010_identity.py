"""H-INIT (issue 13: token lifetimes, host token rotation, day-2 admin)

Revision ID: 0010_identity
Revises: 0009_push

Reserved in the chain so parallel work gets a linear history; the owner fills it.
"""

from __future__ import annotations

revision = "0010_identity"
down_revision = "0009_push"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
