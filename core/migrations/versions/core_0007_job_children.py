"""Child jobs of a fan-out (a job split into jobs run by several workers).

Revision ID: core_0007
Revises: core_0006
Create Date: 2026-12-06 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from core.db import JSONDocument

revision = "core_0007"
down_revision = "core_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            "parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True))
        batch_op.add_column(sa.Column("fan_out", JSONDocument, nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_jobs_parent_id_jobs"), "jobs",
                                    ["parent_id"], ["id"], ondelete="CASCADE")
        batch_op.create_index("ix_jobs_parent_id", ["parent_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_parent_id")
        batch_op.drop_constraint(batch_op.f("fk_jobs_parent_id_jobs"), type_="foreignkey")
        batch_op.drop_column("fan_out")
        batch_op.drop_column("parent_id")
