"""Loyalty tables: accounts, ledger and lot uses, earn rules, tiers and their history, rewards.

Revision ID: loyalty_0001
Revises:
Create Date: 2026-11-23 16:19:53.646091
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core.db import Money, UTCDateTime

revision = 'loyalty_0001'
down_revision = None
branch_labels = ('loyalty',)
depends_on = 'core_0001'


def upgrade() -> None:
    op.create_table('loyalty_earn_rule',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('points_per_unit', Money(), nullable=True),
    sa.Column('rounding', sa.Enum('down', 'nearest', 'up', name='rounding', native_enum=False, length=20), nullable=False),
    sa.Column('minimum_amount', Money(), nullable=True),
    sa.Column('bonus_points', sa.Integer(), nullable=True),
    sa.Column('cap_points', sa.Integer(), nullable=True),
    sa.Column('cap_period', sa.Enum('day', 'week', 'month', 'year', name='capperiod', native_enum=False, length=20), nullable=True),
    sa.Column('expiry_months', sa.Integer(), nullable=True),
    sa.Column('valid_from', UTCDateTime(), nullable=False),
    sa.Column('valid_until', UTCDateTime(), nullable=True),
    sa.Column('retired_at', UTCDateTime(), nullable=True),
    sa.Column('supersedes_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['supersedes_id'], ['loyalty_earn_rule.id'], name=op.f('fk_loyalty_earn_rule_supersedes_id_loyalty_earn_rule')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_loyalty_earn_rule')),
    info={'rapport_plugin': 'loyalty'}
    )
    with op.batch_alter_table('loyalty_earn_rule', schema=None) as batch_op:
        batch_op.create_index('ix_loyalty_earn_rule_kind_from', ['kind', 'valid_from'], unique=False)

    op.create_table('loyalty_reward',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('point_cost', sa.BigInteger(), nullable=False),
    sa.Column('stock', sa.Integer(), nullable=True),
    sa.Column('valid_from', UTCDateTime(), nullable=True),
    sa.Column('valid_until', UTCDateTime(), nullable=True),
    sa.Column('retired_at', UTCDateTime(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('stock IS NULL OR stock >= 0', name=op.f('ck_loyalty_reward_stock_not_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_loyalty_reward')),
    info={'rapport_plugin': 'loyalty'}
    )
    op.create_table('loyalty_tier',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('threshold_points', sa.BigInteger(), nullable=False),
    sa.Column('window_months', sa.Integer(), nullable=False),
    sa.Column('discount_percent', Money(), nullable=False),
    sa.Column('earn_multiplier', Money(), nullable=False),
    sa.Column('benefits', sa.Text(), nullable=True),
    sa.Column('retired_at', UTCDateTime(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_loyalty_tier')),
    info={'rapport_plugin': 'loyalty'}
    )
    op.create_table('loyalty_account',
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('balance', sa.BigInteger(), nullable=False),
    sa.Column('tier_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('tier_since', UTCDateTime(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('balance >= 0', name=op.f('ck_loyalty_account_balance_not_negative')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_loyalty_account_customer_id_customers')),
    sa.ForeignKeyConstraint(['tier_id'], ['loyalty_tier.id'], name=op.f('fk_loyalty_account_tier_id_loyalty_tier')),
    sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_loyalty_account')),
    info={'rapport_plugin': 'loyalty'}
    )
    with op.batch_alter_table('loyalty_account', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loyalty_account_tier_id'), ['tier_id'], unique=False)

    op.create_table('loyalty_tier_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('from_tier_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('to_tier_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('changed_at', UTCDateTime(), nullable=False),
    sa.Column('reason', sa.Enum('earned', 'reevaluation', 'merge', name='tierchangereason', native_enum=False, length=20), nullable=False),
    sa.Column('qualifying_points', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_loyalty_tier_history_customer_id_customers')),
    sa.ForeignKeyConstraint(['from_tier_id'], ['loyalty_tier.id'], name=op.f('fk_loyalty_tier_history_from_tier_id_loyalty_tier')),
    sa.ForeignKeyConstraint(['to_tier_id'], ['loyalty_tier.id'], name=op.f('fk_loyalty_tier_history_to_tier_id_loyalty_tier')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_loyalty_tier_history')),
    info={'rapport_plugin': 'loyalty'}
    )
    with op.batch_alter_table('loyalty_tier_history', schema=None) as batch_op:
        batch_op.create_index('ix_loyalty_tier_history_customer_time', ['customer_id', 'changed_at'], unique=False)

    op.create_table('loyalty_ledger',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.Enum('earn', 'redeem', 'expire', 'adjust', 'reverse', 'merge', name='entrykind', native_enum=False, length=20), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('occurred_at', UTCDateTime(), nullable=False),
    sa.Column('recorded_at', UTCDateTime(), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('interaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('earn_rule_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('reward_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('actor_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('request_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('expires_at', UTCDateTime(), nullable=True),
    sa.Column('remaining', sa.BigInteger(), nullable=True),
    sa.Column('shortfall', sa.BigInteger(), nullable=True),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.CheckConstraint("(kind = 'earn' AND points > 0) OR (kind = 'adjust' AND points <> 0) OR (kind IN ('redeem', 'expire') AND points < 0) OR (kind = 'reverse' AND points <= 0) OR (kind = 'merge' AND points = 0)", name=op.f('ck_loyalty_ledger_points_sign')),
    sa.CheckConstraint('remaining IS NULL OR (remaining >= 0 AND remaining <= points)', name=op.f('ck_loyalty_ledger_remaining_within_lot')),
    sa.ForeignKeyConstraint(['actor_id'], ['agents.id'], name=op.f('fk_loyalty_ledger_actor_id_agents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_loyalty_ledger_customer_id_customers')),
    sa.ForeignKeyConstraint(['earn_rule_id'], ['loyalty_earn_rule.id'], name=op.f('fk_loyalty_ledger_earn_rule_id_loyalty_earn_rule')),
    sa.ForeignKeyConstraint(['interaction_id'], ['interactions.id'], name=op.f('fk_loyalty_ledger_interaction_id_interactions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['reward_id'], ['loyalty_reward.id'], name=op.f('fk_loyalty_ledger_reward_id_loyalty_reward')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_loyalty_ledger')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_loyalty_ledger_idempotency_key')),
    sa.UniqueConstraint('interaction_id', 'earn_rule_id', name='uq_loyalty_ledger_interaction_rule'),
    info={'rapport_plugin': 'loyalty'}
    )
    with op.batch_alter_table('loyalty_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_loyalty_ledger_customer_time', ['customer_id', 'occurred_at', 'id'], unique=False)
        batch_op.create_index('ix_loyalty_ledger_open_lots', ['customer_id', 'expires_at'], unique=False, postgresql_where=sa.text('remaining > 0'), sqlite_where=sa.text('remaining > 0'))
        batch_op.create_index('ix_loyalty_ledger_lots_due', ['expires_at'], unique=False, postgresql_where=sa.text('remaining > 0'), sqlite_where=sa.text('remaining > 0'))
        batch_op.create_index(batch_op.f('ix_loyalty_ledger_interaction_id'), ['interaction_id'], unique=False)
        batch_op.create_index('ix_loyalty_ledger_kind_time', ['kind', 'occurred_at'], unique=False)

    op.create_table('loyalty_lot_use',
    sa.Column('entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('lot_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('points > 0', name=op.f('ck_loyalty_lot_use_points_positive')),
    sa.ForeignKeyConstraint(['entry_id'], ['loyalty_ledger.id'], name=op.f('fk_loyalty_lot_use_entry_id_loyalty_ledger')),
    sa.ForeignKeyConstraint(['lot_id'], ['loyalty_ledger.id'], name=op.f('fk_loyalty_lot_use_lot_id_loyalty_ledger')),
    sa.PrimaryKeyConstraint('entry_id', 'lot_id', name=op.f('pk_loyalty_lot_use')),
    info={'rapport_plugin': 'loyalty'}
    )
    with op.batch_alter_table('loyalty_lot_use', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loyalty_lot_use_lot_id'), ['lot_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('loyalty_lot_use', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loyalty_lot_use_lot_id'))

    op.drop_table('loyalty_lot_use')
    with op.batch_alter_table('loyalty_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_loyalty_ledger_kind_time')
        batch_op.drop_index(batch_op.f('ix_loyalty_ledger_interaction_id'))
        batch_op.drop_index('ix_loyalty_ledger_lots_due')
        batch_op.drop_index('ix_loyalty_ledger_open_lots')
        batch_op.drop_index('ix_loyalty_ledger_customer_time')

    op.drop_table('loyalty_ledger')
    with op.batch_alter_table('loyalty_tier_history', schema=None) as batch_op:
        batch_op.drop_index('ix_loyalty_tier_history_customer_time')

    op.drop_table('loyalty_tier_history')
    with op.batch_alter_table('loyalty_account', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loyalty_account_tier_id'))

    op.drop_table('loyalty_account')
    op.drop_table('loyalty_tier')
    op.drop_table('loyalty_reward')
    with op.batch_alter_table('loyalty_earn_rule', schema=None) as batch_op:
        batch_op.drop_index('ix_loyalty_earn_rule_kind_from')

    op.drop_table('loyalty_earn_rule')
