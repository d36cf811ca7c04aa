"""Scoring runs split into chunks: the run table and the staging table of open runs.

Revision ID: churn_0002
Revises: churn_0001
Create Date: 2026-12-06 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core.db import UTCDateTime

revision = 'churn_0002'
down_revision = 'churn_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('churn_score_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model_version_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.Enum('open', 'published', 'failed', name='scoringrunstatus', native_enum=False, length=30), nullable=False),
    sa.Column('scored_at', UTCDateTime(), nullable=False),
    sa.Column('chunks', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('customers', sa.Integer(), nullable=True),
    sa.Column('message', sa.String(length=500), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('finished_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['model_version_id'], ['churn_model_versions.id'], name=op.f('fk_churn_score_runs_model_version_id_churn_model_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_churn_score_runs')),
    info={'rapport_plugin': 'churn'}
    )
    with op.batch_alter_table('churn_score_runs', schema=None) as batch_op:
        batch_op.create_index('uq_churn_score_runs_open', ['status'], unique=True,
                              postgresql_where=sa.text("status = 'open'"),
                              sqlite_where=sa.text("status = 'open'"))

    op.create_table('churn_score_staging',
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('customer_id', sa.BigInteger(), nullable=False),
    sa.Column('risk', sa.Float(), nullable=False),
    sa.Column('p_alive', sa.Float(), nullable=True),
    sa.Column('frequency', sa.Integer(), nullable=True),
    sa.Column('recency', sa.Float(), nullable=True),
    sa.Column('T', sa.Float(), nullable=True),
    sa.Column('expected_aov', sa.Float(), nullable=True),
    sa.Column('clv', sa.Float(), nullable=True),
    sa.Column('priority', sa.Float(), nullable=False),
    sa.Column('top_factors', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'customer_id', name=op.f('pk_churn_score_staging')),
    info={'rapport_plugin': 'churn'}
    )
    if op.get_bind().dialect.name == 'postgresql':
        # Rows of runs in flight only: no WAL for them. A crash empties the table; the
        # run's last step then finds fewer rows than its chunks wrote and fails the run.
        op.execute('ALTER TABLE churn_score_staging SET UNLOGGED')


def downgrade() -> None:
    op.drop_table('churn_score_staging')
    with op.batch_alter_table('churn_score_runs', schema=None) as batch_op:
        batch_op.drop_index('uq_churn_score_runs_open')
    op.drop_table('churn_score_runs')
