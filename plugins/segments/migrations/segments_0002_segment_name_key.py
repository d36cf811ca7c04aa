"""Segment names are unique as Unicode case-folded text, kept by the database.

The service compared ``lower(name)`` with Python's ``str.lower()``: SQLite's ``lower``
folds ASCII only, so a non-ASCII name could pass the check and then hit the exact-name
unique key (a 500), and "Über"/"über" were two segments on SQLite but one on PostgreSQL.
``name_key`` (NFKC, case-folded) carries the unique key instead of ``name``.

Revision ID: segments_0002
Revises: segments_0001
Create Date: 2026-12-07 05:40:00
"""

from __future__ import annotations

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = 'segments_0002'
down_revision = 'segments_0001'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


_KEY_LENGTH = 800


def _key(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold()[:_KEY_LENGTH]


def upgrade() -> None:
    with op.batch_alter_table('segments_segments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name_key', sa.String(length=_KEY_LENGTH), nullable=True))
    segments = sa.table('segments_segments', sa.column('id', _ID), sa.column('name', sa.String),
                        sa.column('name_key', sa.String))
    connection = op.get_bind()
    taken: set[str] = set()
    for segment_id, name in connection.execute(
            sa.select(segments.c.id, segments.c.name).order_by(segments.c.id)).all():
        key = _key(name)
        if key in taken:  # two names one key (possible on SQLite before): the later renamed
            suffix = f" ({segment_id})"
            name = name[:200 - len(suffix)] + suffix
            key = _key(name)
        taken.add(key)
        connection.execute(sa.update(segments).where(segments.c.id == segment_id)
                           .values(name=name, name_key=key))
    with op.batch_alter_table('segments_segments', schema=None) as batch_op:
        batch_op.alter_column('name_key', existing_type=sa.String(length=_KEY_LENGTH),
                              nullable=False)
        batch_op.drop_constraint(batch_op.f('uq_segments_segments_name'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_segments_segments_name_key'),
                                          ['name_key'])


def downgrade() -> None:
    with op.batch_alter_table('segments_segments', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_segments_segments_name_key'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_segments_segments_name'), ['name'])
        batch_op.drop_column('name_key')
