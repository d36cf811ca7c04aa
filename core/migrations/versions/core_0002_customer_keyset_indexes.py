"""Customers: indexes matching the keyset order of customers(orderBy: CREATED_AT | NAME).

A page is ``ORDER BY <sort>, id LIMIT n`` after ``(<sort>, id) > (cursor)``; an index on
exactly ``(<sort>, id)`` lets PostgreSQL start at the cursor, so page 1,000 costs what
page 1 costs (bench/bench_pagination.py). NAME sorts by ``coalesce(name_normalized, '')``;
that expression index is created on PostgreSQL only (SQLite cannot reflect it).

Revision ID: core_0002
Revises: core_0001
Create Date: 2026-11-23 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'core_0002'
down_revision = 'core_0001'
branch_labels = None
depends_on = None


def _postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"


def upgrade() -> None:
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.create_index('ix_customers_created_at_id', ['created_at', 'id'], unique=False)
        # (created_at, id) serves every created_at range filter the old index served.
        batch_op.drop_index('ix_customers_created_at')
    if _postgresql():
        op.create_index('ix_customers_name_sort', 'customers',
                        [sa.text("coalesce(name_normalized, '')"), 'id'], unique=False)


def downgrade() -> None:
    if _postgresql():
        op.drop_index('ix_customers_name_sort', table_name='customers')
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.create_index('ix_customers_created_at', ['created_at'], unique=False)
        batch_op.drop_index('ix_customers_created_at_id')
