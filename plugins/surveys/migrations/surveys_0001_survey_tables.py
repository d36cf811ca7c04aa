"""Surveys tables: surveys, questions, scales, responses.

Revision ID: surveys_0001
Revises:
Create Date: 2026-11-23 18:28:11.278141
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core.db import UTCDateTime

revision = 'surveys_0001'
down_revision = None
branch_labels = ('surveys',)
depends_on = 'core_0001'


def upgrade() -> None:
    op.create_table('surveys_survey',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('state', sa.Enum('draft', 'open', 'closed', name='surveystate', native_enum=False, length=20), nullable=False),
    sa.Column('anonymous', sa.Boolean(), nullable=False),
    sa.Column('collection_token', sa.String(length=64), nullable=True),
    sa.Column('overall_question_key', sa.String(length=40), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.Column('opened_at', UTCDateTime(), nullable=True),
    sa.Column('closed_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint('(anonymous AND collection_token IS NOT NULL) OR (NOT anonymous AND collection_token IS NULL)', name=op.f('ck_surveys_survey_token_iff_anonymous')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_surveys_survey')),
    sa.UniqueConstraint('id', 'anonymous', name='uq_surveys_survey_id_anonymous'),
    info={'rapport_plugin': 'surveys'}
    )
    with op.batch_alter_table('surveys_survey', schema=None) as batch_op:
        batch_op.create_index('ix_surveys_survey_created', ['created_at', 'id'], unique=False)

    op.create_table('surveys_question',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('survey_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=40), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('type', sa.Enum('nps', 'rating', 'single_choice', 'multi_choice', 'text', name='questiontype', native_enum=False, length=20), nullable=False),
    sa.Column('required', sa.Boolean(), nullable=False),
    sa.Column('scale_min', sa.Integer(), nullable=True),
    sa.Column('scale_max', sa.Integer(), nullable=True),
    sa.Column('labels', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('options', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.CheckConstraint('scale_min IS NULL OR scale_max > scale_min', name=op.f('ck_surveys_question_scale_ordered')),
    sa.ForeignKeyConstraint(['survey_id'], ['surveys_survey.id'], name=op.f('fk_surveys_question_survey_id_surveys_survey'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_surveys_question')),
    sa.UniqueConstraint('survey_id', 'key', name='uq_surveys_question_survey_key'),
    info={'rapport_plugin': 'surveys'}
    )
    op.create_table('surveys_scale',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('survey_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('items', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['survey_id'], ['surveys_survey.id'], name=op.f('fk_surveys_scale_survey_id_surveys_survey'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_surveys_scale')),
    sa.UniqueConstraint('survey_id', 'name', name='uq_surveys_scale_survey_name'),
    info={'rapport_plugin': 'surveys'}
    )
    op.create_table('surveys_response',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('survey_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('anonymous', sa.Boolean(), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('submitted_at', UTCDateTime(), nullable=False),
    sa.Column('recorded_at', UTCDateTime(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=True),
    sa.Column('external_id', sa.String(length=200), nullable=True),
    sa.Column('numbers', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('choices', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('texts', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.CheckConstraint('(source IS NULL) = (external_id IS NULL)', name=op.f('ck_surveys_response_external_key_pair')),
    sa.CheckConstraint('NOT anonymous OR customer_id IS NULL', name=op.f('ck_surveys_response_anonymous_no_customer')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_surveys_response_customer_id_customers')),
    sa.ForeignKeyConstraint(['survey_id', 'anonymous'], ['surveys_survey.id', 'surveys_survey.anonymous'], name='fk_surveys_response_survey_anonymous'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_surveys_response')),
    sa.UniqueConstraint('survey_id', 'source', 'external_id', name='uq_surveys_response_external'),
    info={'rapport_plugin': 'surveys'}
    )
    with op.batch_alter_table('surveys_response', schema=None) as batch_op:
        batch_op.create_index('ix_surveys_response_customer', ['customer_id', 'submitted_at', 'id'], unique=False)
        batch_op.create_index('ix_surveys_response_survey', ['survey_id', 'submitted_at', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('surveys_response', schema=None) as batch_op:
        batch_op.drop_index('ix_surveys_response_survey')
        batch_op.drop_index('ix_surveys_response_customer')

    op.drop_table('surveys_response')
    op.drop_table('surveys_scale')
    op.drop_table('surveys_question')
    with op.batch_alter_table('surveys_survey', schema=None) as batch_op:
        batch_op.drop_index('ix_surveys_survey_created')

    op.drop_table('surveys_survey')
