"""Segments tables: saved segments and value tiers.

Revision ID: segments_0001
Revises:
Create Date: 2026-12-07 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core.db import Money, UTCDateTime

revision = 'segments_0001'
down_revision = None
branch_labels = ('segments',)
depends_on = 'core_0001'

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
_INFO = {'rapport_plugin': 'segments'}


def upgrade() -> None:
    op.create_table('segments_segments',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=True),
    sa.Column('filter', _JSON, nullable=False),
    sa.Column('created_by', _JSON, nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_segments_segments')),
    sa.UniqueConstraint('name', name=op.f('uq_segments_segments_name')),
    info=_INFO
    )
    op.create_table('segments_value_tiers',
    sa.Column('customer_id', _ID, nullable=False),
    sa.Column('tier', sa.String(length=10), nullable=False),
    sa.Column('previous_tier', sa.String(length=10), nullable=True),
    sa.Column('recency_days', sa.Integer(), nullable=True),
    sa.Column('frequency', sa.Integer(), nullable=False),
    sa.Column('monetary', Money(), nullable=False),
    sa.Column('r_score', sa.SmallInteger(), nullable=True),
    sa.Column('f_score', sa.SmallInteger(), nullable=True),
    sa.Column('m_score', sa.SmallInteger(), nullable=True),
    sa.Column('window_days', sa.Integer(), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('computed_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_segments_value_tiers_customer_id_customers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_segments_value_tiers')),
    info=_INFO
    )
    op.create_index('ix_segments_value_tiers_tier', 'segments_value_tiers', ['tier'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_segments_value_tiers_tier', table_name='segments_value_tiers')
    op.drop_table('segments_value_tiers')
    op.drop_table('segments_segments')
