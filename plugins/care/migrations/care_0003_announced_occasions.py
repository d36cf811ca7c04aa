"""Care occasions: the birthdays and anniversaries the care.occasions job announced.

Revision ID: care_0003
Revises: care_0002
Create Date: 2026-12-07 05:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from core.db import UTCDateTime

revision = 'care_0003'
down_revision = 'care_0002'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_INFO = {'rapport_plugin': 'care'}


def upgrade() -> None:
    op.create_table('care_announced_occasions',
    sa.Column('customer_id', _ID, nullable=False),
    sa.Column('occasion', sa.Enum('birthday', 'anniversary', name='occasion',
                                  native_enum=False, length=20), nullable=False),
    sa.Column('on_date', sa.Date(), nullable=False),
    sa.Column('announced_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'],
                            name=op.f('fk_care_announced_occasions_customer_id_customers'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('customer_id', 'occasion', 'on_date',
                            name=op.f('pk_care_announced_occasions')),
    info=_INFO
    )
    op.create_index('ix_care_announced_occasions_on_date', 'care_announced_occasions',
                    ['on_date'], unique=False)


def downgrade() -> None:
    op.drop_table('care_announced_occasions')
