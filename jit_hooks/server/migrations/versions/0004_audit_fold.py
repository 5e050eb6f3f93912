"""audit: events are inserted unchained and folded later (seq), head row made here,
archive markers, aggregated unauthenticated misses

Revision ID: 0004_audit
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_audit"
down_revision = "0003"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch_op:
        # Chain position, set by the fold (NULL until then, with prev_hash and hash).
        batch_op.add_column(sa.Column("seq", sa.Integer(), nullable=True))
        batch_op.alter_column("prev_hash", existing_type=sa.String(64), nullable=True)
        batch_op.alter_column("hash", existing_type=sa.String(64), nullable=True)
    # Events before this revision were chained by id, contiguous from 1: their
    # hashes already cover seq == id.
    op.execute("UPDATE audit_events SET seq = id")
    op.create_index("ux_audit_events_seq", "audit_events", ["seq"], unique=True)
    # The head exists from the start: two replicas never race to create it.
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT count(*) FROM audit_head WHERE id = 1")).scalar() == 0:
        last = conn.execute(
            sa.text("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        ).first()
        conn.execute(
            sa.text("INSERT INTO audit_head (id, last_id, hash) VALUES (1, :s, :h)"),
            {"s": last[0] if last else 0, "h": last[1] if last else GENESIS},
        )
    op.create_table(
        "audit_archives",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("at", sa.Integer(), nullable=False),
        sa.Column("file", sa.String(length=500), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audit_misses",
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("login", sa.String(length=33), nullable=False),
        sa.Column("fingerprint", sa.String(length=100), nullable=False),
        sa.Column("window_start", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("host", "login", "fingerprint", "window_start"),
    )
    op.create_index("ix_audit_misses_window", "audit_misses", ["window_start"])


def downgrade() -> None:
    op.drop_index("ix_audit_misses_window", table_name="audit_misses")
    op.drop_table("audit_misses")
    op.drop_table("audit_archives")
    op.drop_index("ux_audit_events_seq", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.drop_column("seq")
