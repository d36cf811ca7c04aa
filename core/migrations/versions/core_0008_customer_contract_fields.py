"""A customer's own start date and contractual history (churn plugin's sBG model).

Revision ID: core_0008
Revises: core_0007
Create Date: 2026-12-06 21:05:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_0008"
down_revision = "core_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_since", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("tenure_periods", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("period", sa.String(length=10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("period")
        batch_op.drop_column("tenure_periods")
        batch_op.drop_column("customer_since")
