"""audit: archive markers keep their signed manifest; break-glass reports deduplicated by key

Revision ID: 0006_audit_anchors
Revises: 0005_notify
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006_audit_anchors"
down_revision = "0005_notify"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # verify trusts an archive marker only with the manifest the service signed;
    # markers written before this have none and need their archive file given.
    with op.batch_alter_table("audit_archives") as b:
        b.add_column(sa.Column("manifest", sa.Text(), nullable=True))
    op.create_table(
        "break_glass_reports",
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.String(32), nullable=False),
        sa.Column("at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("host_id", "report_id"),
    )
    # Reports already recorded stay recorded: a host's spool may still resend them.
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT h.id, e.data, e.at FROM audit_events e JOIN hosts h ON h.name = e.host "
            "WHERE e.kind = 'hook.break_glass'"
        )
    ).all()
    seen: set[tuple[int, str]] = set()
    for host_id, data, at in rows:
        try:
            report = json.loads(data).get("report")
        except ValueError:
            continue
        if isinstance(report, str) and len(report) <= 32 and (host_id, report) not in seen:
            seen.add((host_id, report))
            conn.execute(
                sa.text(
                    "INSERT INTO break_glass_reports (host_id, report_id, at) VALUES (:h, :r, :a)"
                ),
                {"h": host_id, "r": report, "a": at},
            )


def downgrade() -> None:
    op.drop_table("break_glass_reports")
    with op.batch_alter_table("audit_archives") as b:
        b.drop_column("manifest")
