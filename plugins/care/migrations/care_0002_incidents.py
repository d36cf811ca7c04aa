"""Care incidents: crises handled in stages (warning, response, recovery, review).

Revision ID: care_0002
Revises: care_0001
Create Date: 2026-12-07 02:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core.db import UTCDateTime

revision = 'care_0002'
down_revision = 'care_0001'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
_INFO = {'rapport_plugin': 'care'}
_STAGES = ('warning', 'response', 'recovery', 'review', 'closed')


def upgrade() -> None:
    op.create_table('care_incidents',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('severity', sa.String(length=20), nullable=False),
    sa.Column('stage', sa.Enum(*_STAGES, name='incidentstage', native_enum=False, length=20),
              nullable=False),
    sa.Column('alert_id', _ID, nullable=True),
    sa.Column('owner_id', _ID, nullable=True),
    sa.Column('timeline', _JSON, nullable=False),
    sa.Column('review', sa.Text(), nullable=True),
    sa.Column('opened_at', UTCDateTime(), nullable=False),
    sa.Column('stage_changed_at', UTCDateTime(), nullable=False),
    sa.Column('closed_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'],
                            name=op.f('fk_care_incidents_alert_id_alerts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['owner_id'], ['agents.id'],
                            name=op.f('fk_care_incidents_owner_id_agents'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_care_incidents')),
    sa.UniqueConstraint('alert_id', name=op.f('uq_care_incidents_alert_id')),
    info=_INFO
    )
    op.create_index('ix_care_incidents_opened_at_id', 'care_incidents', ['opened_at', 'id'],
                    unique=False)
    op.create_index('ix_care_incidents_stage_opened_at_id', 'care_incidents',
                    ['stage', 'opened_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_table('care_incidents')
