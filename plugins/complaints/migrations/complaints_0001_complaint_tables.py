"""Complaints tables: complaints, their timeline, the SLA policy per severity.

Revision ID: complaints_0001
Revises:
Create Date: 2026-11-23 17:23:15.041643
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core.db import UTCDateTime

revision = 'complaints_0001'
down_revision = None
branch_labels = ('complaints',)
depends_on = 'core_0001'


def upgrade() -> None:
    op.create_table('complaints_sla_policy',
    sa.Column('severity', sa.Enum('low', 'medium', 'high', 'critical', name='severity', native_enum=False, length=20), nullable=False),
    sa.Column('first_response_hours', sa.Integer(), nullable=False),
    sa.Column('resolution_hours', sa.Integer(), nullable=False),
    sa.Column('business_hours', sa.Boolean(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('first_response_hours > 0 AND resolution_hours >= first_response_hours', name=op.f('ck_complaints_sla_policy_targets_ordered')),
    sa.PrimaryKeyConstraint('severity', name=op.f('pk_complaints_sla_policy')),
    info={'rapport_plugin': 'complaints'}
    )
    op.create_table('complaints_complaint',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('channel', sa.String(length=40), nullable=False),
    sa.Column('severity', sa.Enum('low', 'medium', 'high', 'critical', name='severity', native_enum=False, length=20), nullable=False),
    sa.Column('status', sa.Enum('received', 'confirmed', 'analyzing', 'solution_proposed', 'implementing', 'feedback', 'closed', 'rejected', name='complaintstatus', native_enum=False, length=20), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('reference', sa.String(length=200), nullable=True),
    sa.Column('tags', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('assignee_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('interaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('cause', sa.String(length=40), nullable=True),
    sa.Column('root_cause', sa.Text(), nullable=True),
    sa.Column('solution', sa.Text(), nullable=True),
    sa.Column('rejection_reason', sa.Text(), nullable=True),
    sa.Column('satisfaction', sa.Integer(), nullable=True),
    sa.Column('customer_resolved', sa.Boolean(), nullable=True),
    sa.Column('reopen_count', sa.Integer(), nullable=False),
    sa.Column('filed_at', UTCDateTime(), nullable=False),
    sa.Column('first_response_due', UTCDateTime(), nullable=False),
    sa.Column('resolution_due', UTCDateTime(), nullable=False),
    sa.Column('first_response_at', UTCDateTime(), nullable=True),
    sa.Column('resolved_at', UTCDateTime(), nullable=True),
    sa.Column('closed_at', UTCDateTime(), nullable=True),
    sa.Column('first_response_escalated_at', UTCDateTime(), nullable=True),
    sa.Column('resolution_escalated_at', UTCDateTime(), nullable=True),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('reopen_count >= 0', name=op.f('ck_complaints_complaint_reopen_count_not_negative')),
    sa.CheckConstraint('satisfaction IS NULL OR satisfaction BETWEEN 1 AND 5', name=op.f('ck_complaints_complaint_satisfaction_range')),
    sa.ForeignKeyConstraint(['assignee_id'], ['agents.id'], name=op.f('fk_complaints_complaint_assignee_id_agents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_complaints_complaint_customer_id_customers')),
    sa.ForeignKeyConstraint(['interaction_id'], ['interactions.id'], name=op.f('fk_complaints_complaint_interaction_id_interactions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_complaints_complaint')),
    info={'rapport_plugin': 'complaints'}
    )
    with op.batch_alter_table('complaints_complaint', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_complaints_complaint_assignee_id'), ['assignee_id'], unique=False)
        batch_op.create_index('ix_complaints_complaint_customer_filed', ['customer_id', 'filed_at', 'id'], unique=False)
        batch_op.create_index('ix_complaints_complaint_filed', ['filed_at', 'id'], unique=False)
        batch_op.create_index('ix_complaints_complaint_status', ['status'], unique=False)

    op.create_table('complaints_timeline',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('complaint_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.Enum('transition', 'assignment', 'escalation', 'note', name='entrykind', native_enum=False, length=20), nullable=False),
    sa.Column('occurred_at', UTCDateTime(), nullable=False),
    sa.Column('actor_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('from_status', sa.Enum('received', 'confirmed', 'analyzing', 'solution_proposed', 'implementing', 'feedback', 'closed', 'rejected', name='complaintstatus', native_enum=False, length=20), nullable=True),
    sa.Column('to_status', sa.Enum('received', 'confirmed', 'analyzing', 'solution_proposed', 'implementing', 'feedback', 'closed', 'rejected', name='complaintstatus', native_enum=False, length=20), nullable=True),
    sa.Column('transition', sa.String(length=20), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('step_data', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['agents.id'], name=op.f('fk_complaints_timeline_actor_id_agents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['complaint_id'], ['complaints_complaint.id'], name=op.f('fk_complaints_timeline_complaint_id_complaints_complaint')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_complaints_timeline')),
    info={'rapport_plugin': 'complaints'}
    )
    with op.batch_alter_table('complaints_timeline', schema=None) as batch_op:
        batch_op.create_index('ix_complaints_timeline_complaint', ['complaint_id', 'occurred_at', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('complaints_timeline', schema=None) as batch_op:
        batch_op.drop_index('ix_complaints_timeline_complaint')

    op.drop_table('complaints_timeline')
    with op.batch_alter_table('complaints_complaint', schema=None) as batch_op:
        batch_op.drop_index('ix_complaints_complaint_status')
        batch_op.drop_index('ix_complaints_complaint_filed')
        batch_op.drop_index('ix_complaints_complaint_customer_filed')
        batch_op.drop_index(batch_op.f('ix_complaints_complaint_assignee_id'))

    op.drop_table('complaints_complaint')
    op.drop_table('complaints_sla_policy')
