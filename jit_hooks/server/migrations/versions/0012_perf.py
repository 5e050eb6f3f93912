"""H-PGPERF (issue 11: login-path audit without a hot row)

Revision ID: 0012_perf
Revises: 0011_sso

Reserved in the chain so parallel work gets a linear history; the owner fills it.
"""

from __future__ import annotations

revision = "0012_perf"
down_revision = "0011_sso"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
