"""H-PUSH (issue 14: host event stream): audit events found by kind and id

Revision ID: 0009_push
Revises: 0008_grants

Each replica's stream hub (server/stream.py) polls the audit log for the few
kinds that concern live sessions (revoke, drop, extend, disabled user, host
token changes), re-reading a window of recent ids: this index keeps that poll
to the matching rows, however busy the rest of the log is.
"""

from __future__ import annotations

from alembic import op

revision = "0009_push"
down_revision = "0008_grants"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_kind_id", "audit_events", ["kind", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_kind_id", table_name="audit_events")
