"""Interactions: an index on refers_to_id (refund lookups, ON DELETE SET NULL).

Revision ID: core_0003
Revises: core_0002
Create Date: 2026-11-23 17:50:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "core_0003"
down_revision = "core_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.create_index("ix_interactions_refers_to_id", ["refers_to_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index("ix_interactions_refers_to_id")
