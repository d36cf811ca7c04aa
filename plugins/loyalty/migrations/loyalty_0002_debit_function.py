"""The single debit's PostgreSQL function (loyalty_debit: claim, debit, lot spending in one
round trip). SQLite has no functions: its debit runs the same steps as statements.

Revision ID: loyalty_0002
Revises: loyalty_0001
Create Date: 2026-12-06 23:20:00.000000
"""

from __future__ import annotations

from alembic import op

from plugins.loyalty.functions import CREATE_DEBIT, DROP_DEBIT

revision = 'loyalty_0002'
down_revision = 'loyalty_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE_DEBIT)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP_DEBIT)
