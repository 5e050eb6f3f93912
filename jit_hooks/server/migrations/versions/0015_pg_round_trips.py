"""H-PG2 (issue 11): placeholder reserved for the one-round-trip hook check on PostgreSQL

Revision ID: 0015_pg_round_trips
Revises: 0014_sso_flow_limits

Reserved by the lead so the chain stays linear while work is in flight; filled
by the change that needs a schema object here, or left empty (no-op).
"""

from __future__ import annotations

revision = "0015_pg_round_trips"
down_revision = "0014_sso_flow_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
