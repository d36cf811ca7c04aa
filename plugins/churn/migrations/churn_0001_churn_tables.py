"""Churn tables: churn records, win-back campaigns and attempts, model versions, scores,
churn-rate alerts.

Revision ID: churn_0001
Revises:
Create Date: 2026-11-23 18:33:23.491602
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core.db import UTCDateTime

revision = 'churn_0001'
down_revision = None
branch_labels = ('churn',)
depends_on = 'core_0003'


def upgrade() -> None:
    op.create_table('churn_model_versions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('as_of', UTCDateTime(), nullable=False),
    sa.Column('time_unit', sa.Enum('day', 'week', name='timeunit', native_enum=False, length=30), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('feature_names', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('artifact', sa.LargeBinary(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_churn_model_versions')),
    info={'rapport_plugin': 'churn'}
    )
    with op.batch_alter_table('churn_model_versions', schema=None) as batch_op:
        batch_op.create_index('ix_churn_model_versions_active', ['active', 'kind'], unique=False)

    op.create_table('churn_winback_campaigns',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('strategy', sa.Enum('relationship', 'price', 'service', 'product', 'other', name='winbackstrategy', native_enum=False, length=30), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('started_at', UTCDateTime(), nullable=False),
    sa.Column('ended_at', UTCDateTime(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('ended_at IS NULL OR ended_at >= started_at', name=op.f('ck_churn_winback_campaigns_ends_after_start')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_churn_winback_campaigns')),
    sa.UniqueConstraint('name', name=op.f('uq_churn_winback_campaigns_name')),
    info={'rapport_plugin': 'churn'}
    )
    op.create_table('churn_records',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('type', sa.Enum('natural', 'malicious', 'competitive', 'negligence', name='churntype', native_enum=False, length=30), nullable=False),
    sa.Column('reason', sa.Enum('pricing', 'inconvenience', 'core_service_failure', 'service_encounter_failure', 'response_to_failure', 'competition', 'ethical', 'involuntary', 'other', name='churnreason', native_enum=False, length=30), nullable=False),
    sa.Column('churned_at', UTCDateTime(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('recorded_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('recorded_at', UTCDateTime(), nullable=False),
    sa.Column('reactivated_at', UTCDateTime(), nullable=True),
    sa.Column('reactivation_reason', sa.String(length=200), nullable=True),
    sa.CheckConstraint('reactivated_at IS NULL OR reactivated_at >= churned_at', name=op.f('ck_churn_records_reactivated_after_churn')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_churn_records_customer_id_customers')),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['agents.id'], name=op.f('fk_churn_records_recorded_by_id_agents'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_churn_records')),
    info={'rapport_plugin': 'churn'}
    )
    with op.batch_alter_table('churn_records', schema=None) as batch_op:
        batch_op.create_index('ix_churn_records_churned_at', ['churned_at'], unique=False)
        batch_op.create_index('ix_churn_records_customer', ['customer_id', 'churned_at', 'id'], unique=False)
        batch_op.create_index('uq_churn_records_open', ['customer_id'], unique=True, postgresql_where=sa.text('reactivated_at IS NULL'), sqlite_where=sa.text('reactivated_at IS NULL'))

    op.create_table('churn_scores',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('model_version_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scored_at', UTCDateTime(), nullable=False),
    sa.Column('risk', sa.Float(), nullable=False),
    sa.Column('p_alive', sa.Float(), nullable=True),
    sa.Column('frequency', sa.Integer(), nullable=True),
    sa.Column('recency', sa.Float(), nullable=True),
    sa.Column('T', sa.Float(), nullable=True),
    sa.Column('expected_aov', sa.Float(), nullable=True),
    sa.Column('clv', sa.Float(), nullable=True),
    sa.Column('priority', sa.Float(), nullable=False),
    sa.Column('top_factors', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.CheckConstraint('risk >= 0 AND risk <= 1', name=op.f('ck_churn_scores_risk_is_probability')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_churn_scores_customer_id_customers')),
    sa.ForeignKeyConstraint(['model_version_id'], ['churn_model_versions.id'], name=op.f('fk_churn_scores_model_version_id_churn_model_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_churn_scores')),
    sa.UniqueConstraint('customer_id', 'model_version_id', name=op.f('uq_churn_scores_customer_id_model_version_id')),
    info={'rapport_plugin': 'churn'}
    )
    with op.batch_alter_table('churn_scores', schema=None) as batch_op:
        batch_op.create_index('ix_churn_scores_ranking', ['model_version_id', 'priority', 'customer_id'], unique=False)

    op.create_table('churn_winback_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('agent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('outcome', sa.Enum('pending', 'won_back', 'lost', name='winbackoutcome', native_enum=False, length=30), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('attempted_at', UTCDateTime(), nullable=False),
    sa.Column('resolved_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint("(outcome = 'pending') = (resolved_at IS NULL)", name=op.f('ck_churn_winback_attempts_resolved_when_decided')),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_churn_winback_attempts_agent_id_agents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['campaign_id'], ['churn_winback_campaigns.id'], name=op.f('fk_churn_winback_attempts_campaign_id_churn_winback_campaigns')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_churn_winback_attempts_customer_id_customers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_churn_winback_attempts')),
    info={'rapport_plugin': 'churn'}
    )
    with op.batch_alter_table('churn_winback_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_churn_winback_attempts_campaign', ['campaign_id', 'attempted_at'], unique=False)
        batch_op.create_index('ix_churn_winback_attempts_customer', ['customer_id', 'outcome'], unique=False)

    op.create_table('churn_rate_alerts',
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('alert_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('raised_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], name=op.f('fk_churn_rate_alerts_alert_id_alerts'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('month', 'kind', name=op.f('pk_churn_rate_alerts')),
    info={'rapport_plugin': 'churn'}
    )


def downgrade() -> None:
    op.drop_table('churn_rate_alerts')
    with op.batch_alter_table('churn_winback_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_churn_winback_attempts_customer')
        batch_op.drop_index('ix_churn_winback_attempts_campaign')

    op.drop_table('churn_winback_attempts')
    with op.batch_alter_table('churn_scores', schema=None) as batch_op:
        batch_op.drop_index('ix_churn_scores_ranking')

    op.drop_table('churn_scores')
    with op.batch_alter_table('churn_records', schema=None) as batch_op:
        batch_op.drop_index('uq_churn_records_open', postgresql_where=sa.text('reactivated_at IS NULL'), sqlite_where=sa.text('reactivated_at IS NULL'))
        batch_op.drop_index('ix_churn_records_customer')
        batch_op.drop_index('ix_churn_records_churned_at')

    op.drop_table('churn_records')
    op.drop_table('churn_winback_campaigns')
    with op.batch_alter_table('churn_model_versions', schema=None) as batch_op:
        batch_op.drop_index('ix_churn_model_versions_active')

    op.drop_table('churn_model_versions')
