"""Loyalty tables: accounts, the points ledger and its lots, earn rules, tiers, rewards.

The ledger is the book of record. Its entries are never rewritten: an entry's kind,
points, dates and source stay as written (the only later changes are re-keying to the
survivor of a customer merge and clearing free text on erasure). Two columns of an entry
that credits points (earn, positive adjust) describe it as a *lot*: ``expires_at`` and
``remaining``, the part not yet consumed. ``remaining`` is the only value that changes,
always under the account's row lock, and ``loyalty_lot_use`` records which lots each
debit consumed. The stored ``loyalty_account.balance`` equals the sum of the account's
entries and the sum of its lots' ``remaining``; it is never negative.
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    DDL, BigInteger, CheckConstraint, Enum, ForeignKey, Index, Integer, String, Text,
    UniqueConstraint, event, text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import BigIntPK, JSONDocument, Money, UTCDateTime, db, plugin_table, utcnow

from plugins.loyalty import functions

PLUGIN = "loyalty"


def _table_args(*items: Any) -> tuple[Any, ...]:
    return (*items, plugin_table(PLUGIN))


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class EntryKind(enum.StrEnum):
    EARN = "earn"          # points from an interaction under an earn rule (a lot)
    REDEEM = "redeem"      # points spent on a reward or a plain redemption
    EXPIRE = "expire"      # a lot's unspent points past its expiry
    ADJUST = "adjust"      # a manual correction with a reason (positive ones are lots)
    REVERSE = "reverse"    # a refund taking back what its purchase earned
    MERGE = "merge"        # marks a customer merge (0 points: the lots moved with it)


class Rounding(enum.StrEnum):
    DOWN = "down"
    NEAREST = "nearest"  # half up
    UP = "up"


class CapPeriod(enum.StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


class TierChangeReason(enum.StrEnum):
    EARNED = "earned"              # moved up at once when points were earned
    REEVALUATION = "reevaluation"  # the `rapport loyalty tiers` job
    MERGE = "merge"                # customer merge kept the best tier


class Account(db.Model):
    """A member's points account, opened at the first credit."""

    __tablename__ = "loyalty_account"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    tier_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_tier.id"), index=True)
    tier_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = _table_args(CheckConstraint("balance >= 0", name="balance_not_negative"))


class LedgerEntry(db.Model):
    __tablename__ = "loyalty_ledger"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    kind: Mapped[EntryKind] = mapped_column(_enum(EntryKind))
    points: Mapped[int] = mapped_column(BigInteger)
    #: When it happened in business terms: the interaction's time for earn and reverse,
    #: the lot's expiry for expire, the call for redeem and adjust.
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str | None] = mapped_column(String(500))
    interaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL"), index=True)
    earn_rule_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_earn_rule.id"))
    reward_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_reward.id"))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    remaining: Mapped[int | None] = mapped_column(BigInteger)
    #: Points a refund could not take back because they were already spent.
    shortfall: Mapped[int | None] = mapped_column(BigInteger)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)

    __table_args__ = _table_args(
        Index("ix_loyalty_ledger_customer_time", "customer_id", "occurred_at", "id"),
        Index("ix_loyalty_ledger_kind_time", "kind", "occurred_at"),
        # Lots with points left: what a debit spends (per member) and the expiry job reads
        # (by date). Partial, so the member's growing history of spent entries is skipped.
        Index("ix_loyalty_ledger_open_lots", "customer_id", "expires_at",
              postgresql_where=text("remaining > 0"), sqlite_where=text("remaining > 0")),
        Index("ix_loyalty_ledger_lots_due", "expires_at",
              postgresql_where=text("remaining > 0"), sqlite_where=text("remaining > 0")),
        # An interaction earns at most once under each rule.
        UniqueConstraint("interaction_id", "earn_rule_id",
                         name="uq_loyalty_ledger_interaction_rule"),
        CheckConstraint(
            "(kind = 'earn' AND points > 0) OR (kind = 'adjust' AND points <> 0)"
            " OR (kind IN ('redeem', 'expire') AND points < 0)"
            " OR (kind = 'reverse' AND points <= 0) OR (kind = 'merge' AND points = 0)",
            name="points_sign"),
        CheckConstraint("remaining IS NULL OR (remaining >= 0 AND remaining <= points)",
                        name="remaining_within_lot"),
    )


class LotUse(db.Model):
    """How many points of a lot a debit entry consumed."""

    __tablename__ = "loyalty_lot_use"

    entry_id: Mapped[int] = mapped_column(ForeignKey("loyalty_ledger.id"), primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("loyalty_ledger.id"), primary_key=True,
                                        index=True)
    points: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = _table_args(CheckConstraint("points > 0", name="points_positive"))


class EarnRule(db.Model):
    """Points for interactions of one kind, in force during [valid_from, valid_until)."""

    __tablename__ = "loyalty_earn_rule"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(40))
    currency: Mapped[str | None] = mapped_column(String(3))
    points_per_unit: Mapped[Decimal | None] = mapped_column(Money)
    rounding: Mapped[Rounding] = mapped_column(_enum(Rounding), default=Rounding.DOWN)
    minimum_amount: Mapped[Decimal | None] = mapped_column(Money)
    bonus_points: Mapped[int | None] = mapped_column(Integer)
    cap_points: Mapped[int | None] = mapped_column(Integer)
    cap_period: Mapped[CapPeriod | None] = mapped_column(_enum(CapPeriod))
    expiry_months: Mapped[int | None] = mapped_column(Integer)
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: The earlier version this rule replaced when its terms changed while in force.
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_earn_rule.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = _table_args(Index("ix_loyalty_earn_rule_kind_from", "kind", "valid_from"))


class Tier(db.Model):
    """A member level, ordered by its qualifying threshold."""

    __tablename__ = "loyalty_tier"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    threshold_points: Mapped[int] = mapped_column(BigInteger)
    window_months: Mapped[int] = mapped_column(Integer, default=12)
    discount_percent: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    earn_multiplier: Mapped[Decimal] = mapped_column(Money, default=Decimal(1))
    benefits: Mapped[str | None] = mapped_column(Text)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = _table_args()


class TierChange(db.Model):
    __tablename__ = "loyalty_tier_history"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    from_tier_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_tier.id"))
    to_tier_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_tier.id"))
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[TierChangeReason] = mapped_column(_enum(TierChangeReason))
    qualifying_points: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = _table_args(
        Index("ix_loyalty_tier_history_customer_time", "customer_id", "changed_at"))


class Reward(db.Model):
    __tablename__ = "loyalty_reward"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    point_cost: Mapped[int] = mapped_column(BigInteger)
    #: Units left; NULL means unlimited.
    stock: Mapped[int | None] = mapped_column(Integer)
    valid_from: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    valid_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = _table_args(CheckConstraint("stock IS NULL OR stock >= 0",
                                                 name="stock_not_negative"))


# The single debit's function (plugins/loyalty/functions.py) comes with the ledger's table
# on PostgreSQL: migration loyalty_0002 creates it in databases built by migrations.
event.listen(LedgerEntry.__table__, "after_create",
             DDL(functions.CREATE_DEBIT).execute_if(dialect="postgresql"))
