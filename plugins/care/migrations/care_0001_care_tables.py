"""Care tables: tasks, rules, rule runs, at-risk follow-ups.

Revision ID: care_0001
Revises:
Create Date: 2026-12-07 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core.db import UTCDateTime

revision = 'care_0001'
down_revision = None
branch_labels = ('care',)
depends_on = 'core_0001'

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
_INFO = {'rapport_plugin': 'care'}


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=20)


def upgrade() -> None:
    op.create_table('care_rules',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('event_type', sa.String(length=120), nullable=False),
    sa.Column('conditions', _JSON, nullable=False),
    sa.Column('actions', _JSON, nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_by', _JSON, nullable=False),
    sa.Column('scopes', _JSON, nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.Column('deleted_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_care_rules')),
    info=_INFO
    )
    op.create_index(op.f('ix_care_rules_event_type'), 'care_rules', ['event_type'], unique=False)
    op.create_table('care_tasks',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('customer_id', _ID, nullable=True),
    sa.Column('assignee_id', _ID, nullable=True),
    sa.Column('kind', _enum('taskkind', 'call', 'visit', 'greeting', 'follow_up', 'other'), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('status', _enum('taskstatus', 'open', 'done', 'cancelled'), nullable=False),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.Column('source', _enum('tasksource', 'manual', 'rule', 'at_risk'), nullable=False),
    sa.Column('rule_id', _ID, nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.Column('closed_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['assignee_id'], ['agents.id'], name=op.f('fk_care_tasks_assignee_id_agents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_care_tasks_customer_id_customers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['rule_id'], ['care_rules.id'], name=op.f('fk_care_tasks_rule_id_care_rules'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_care_tasks')),
    info=_INFO
    )
    op.create_index('ix_care_tasks_assignee_id_status_due_on_id', 'care_tasks', ['assignee_id', 'status', 'due_on', 'id'], unique=False)
    op.create_index('ix_care_tasks_due_on_id', 'care_tasks', ['due_on', 'id'], unique=False)
    op.create_index('ix_care_tasks_customer_id_due_on_id', 'care_tasks', ['customer_id', 'due_on', 'id'], unique=False)
    op.create_table('care_rule_runs',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('rule_id', _ID, nullable=False),
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('event_type', sa.String(length=120), nullable=False),
    sa.Column('root_event_id', sa.String(length=40), nullable=False),
    sa.Column('status', _enum('runstatus', 'pending', 'succeeded', 'failed'), nullable=False),
    sa.Column('outcome', _JSON, nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('finished_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['rule_id'], ['care_rules.id'], name=op.f('fk_care_rule_runs_rule_id_care_rules'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_care_rule_runs')),
    sa.UniqueConstraint('rule_id', 'event_id', name=op.f('uq_care_rule_runs_rule_id_event_id')),
    info=_INFO
    )
    op.create_index('ix_care_rule_runs_status_id', 'care_rule_runs', ['status', 'id'], unique=False)
    op.create_index('ix_care_rule_runs_event_id', 'care_rule_runs', ['event_id'], unique=False)
    op.create_index('ix_care_rule_runs_root_event_id', 'care_rule_runs', ['root_event_id'],
                    unique=False)
    op.create_table('care_follow_ups',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('customer_id', _ID, nullable=False),
    sa.Column('owner_id', _ID, nullable=True),
    sa.Column('task_id', _ID, nullable=True),
    sa.Column('risk', sa.Float(), nullable=False),
    sa.Column('status', _enum('followupstatus', 'open', 'returned', 'lost', 'merged'), nullable=False),
    sa.Column('opened_at', UTCDateTime(), nullable=False),
    sa.Column('closed_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_care_follow_ups_customer_id_customers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['agents.id'], name=op.f('fk_care_follow_ups_owner_id_agents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['task_id'], ['care_tasks.id'], name=op.f('fk_care_follow_ups_task_id_care_tasks'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_care_follow_ups')),
    info=_INFO
    )
    op.create_index('ix_care_follow_ups_customer_id_status', 'care_follow_ups', ['customer_id', 'status'], unique=False)
    op.create_index('ix_care_follow_ups_owner_id_status', 'care_follow_ups', ['owner_id', 'status'], unique=False)
    op.create_index('ix_care_follow_ups_status_opened_at', 'care_follow_ups', ['status', 'opened_at'], unique=False)


def downgrade() -> None:
    op.drop_table('care_follow_ups')
    op.drop_table('care_rule_runs')
    op.drop_table('care_tasks')
    op.drop_index(op.f('ix_care_rules_event_type'), table_name='care_rules')
    op.drop_table('care_rules')
