"""Webhooks tables: endpoints (subscriptions), deliveries and their attempts.

Revision ID: webhooks_0001
Revises:
Create Date: 2026-12-06 20:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core.db import UTCDateTime

revision = 'webhooks_0001'
down_revision = None
branch_labels = ('webhooks',)
depends_on = 'core_0001'

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
_INFO = {'rapport_plugin': 'webhooks'}


def upgrade() -> None:
    op.create_table('webhooks_endpoints',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('event_types', _JSON, nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('secret', sa.String(), nullable=False),
    sa.Column('previous_secret', sa.String(), nullable=True),
    sa.Column('previous_secret_until', UTCDateTime(), nullable=True),
    sa.Column('scopes', _JSON, nullable=False),
    sa.Column('created_by', _JSON, nullable=False),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.Column('disabled_at', UTCDateTime(), nullable=True),
    sa.Column('disabled_reason', sa.String(length=500), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks_endpoints')),
    info=_INFO
    )
    op.create_table('webhooks_deliveries',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('endpoint_id', _ID, nullable=False),
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('event_type', sa.String(length=120), nullable=False),
    sa.Column('body', _JSON, nullable=True),
    sa.Column('status', sa.Enum('pending', 'delivering', 'succeeded', 'dead', 'skipped', name='deliverystatus', native_enum=False, length=20), nullable=False),
    sa.Column('attempt_count', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', UTCDateTime(), nullable=False),
    sa.Column('leased_until', UTCDateTime(), nullable=True),
    sa.Column('last_response_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('finished_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhooks_endpoints.id'], name=op.f('fk_webhooks_deliveries_endpoint_id_webhooks_endpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks_deliveries')),
    info=_INFO
    )
    op.create_index('ix_webhooks_deliveries_endpoint_id_id', 'webhooks_deliveries', ['endpoint_id', 'id'], unique=False)
    op.create_index('ix_webhooks_deliveries_endpoint_id_status_next_attempt_at', 'webhooks_deliveries', ['endpoint_id', 'status', 'next_attempt_at'], unique=False)
    op.create_table('webhooks_attempts',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('delivery_id', _ID, nullable=False),
    sa.Column('attempted_at', UTCDateTime(), nullable=False),
    sa.Column('outcome', sa.Enum('succeeded', 'failed', name='attemptoutcome', native_enum=False, length=20), nullable=False),
    sa.Column('response_code', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhooks_deliveries.id'], name=op.f('fk_webhooks_attempts_delivery_id_webhooks_deliveries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks_attempts')),
    info=_INFO
    )
    op.create_index(op.f('ix_webhooks_attempts_delivery_id'), 'webhooks_attempts', ['delivery_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_webhooks_attempts_delivery_id'), table_name='webhooks_attempts')
    op.drop_table('webhooks_attempts')
    op.drop_index('ix_webhooks_deliveries_endpoint_id_status_next_attempt_at', table_name='webhooks_deliveries')
    op.drop_index('ix_webhooks_deliveries_endpoint_id_id', table_name='webhooks_deliveries')
    op.drop_table('webhooks_deliveries')
    op.drop_table('webhooks_endpoints')
