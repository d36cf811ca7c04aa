"""Referrals: the referrals_referral table.

Revision ID: referrals_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from core.db import UTCDateTime

revision = "referrals_0001"
down_revision = None
branch_labels = ("referrals",)
depends_on = "core_0001"


def upgrade() -> None:
    op.create_table(
        "referrals_referral",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                  nullable=False),
        sa.Column("referrer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("referred_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("referred_at", UTCDateTime(), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(["referred_id"], ["customers.id"],
                                name=op.f("fk_referrals_referral_referred_id_customers"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["referrer_id"], ["customers.id"],
                                name=op.f("fk_referrals_referral_referrer_id_customers"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals_referral")),
        sa.UniqueConstraint("referred_id", name=op.f("uq_referrals_referral_referred_id")),
    )
    with op.batch_alter_table("referrals_referral") as batch_op:
        batch_op.create_index(batch_op.f("ix_referrals_referral_referrer_id"), ["referrer_id"],
                              unique=False)


def downgrade() -> None:
    op.drop_table("referrals_referral")
