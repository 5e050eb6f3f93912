"""H-SSO (issue 13: OpenID Connect identities)

Revision ID: 0011_sso
Revises: 0010_identity

Reserved in the chain so parallel work gets a linear history; the owner fills it.
"""

from __future__ import annotations

revision = "0011_sso"
down_revision = "0010_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
