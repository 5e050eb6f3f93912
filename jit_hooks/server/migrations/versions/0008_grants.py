"""H-GRANT (issue 14: extend, drop, pinned grants, session records, usage)

Revision ID: 0008_grants
Revises: 0007_audit_allows

Reserved in the chain so parallel work gets a linear history; the owner fills it.
"""

from __future__ import annotations

revision = "0008_grants"
down_revision = "0007_audit_allows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
