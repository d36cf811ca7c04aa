"""Segments tables: saved segments (a name and a customer filter) and value tiers (the
RFM figures and tier of each customer, written by the ``segments.tiers`` job)."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, ForeignKey, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import BigIntPK, JSONDocument, Money, UTCDateTime, db, plugin_table, utcnow

PLUGIN = "segments"


class Tier(enum.StrEnum):
    """Value tiers, best first (docs/segments.md gives the rule)."""

    TOP = "top"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    NONE = "none"  # no purchase in the window


#: Normalising can lengthen a name ("ß" folds to "ss", "ﬃ" to "ffi"): room for that.
NAME_KEY_LENGTH = 800


class Segment(db.Model):
    """A saved customer filter with a name."""

    __tablename__ = "segments_segments"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    #: The name as uniqueness sees it (``name_key``): "VIP" and "vip", "Über" and "über"
    #: are one name. Kept by the database, so two saves at once cannot both take it.
    name_key: Mapped[str] = mapped_column(String(NAME_KEY_LENGTH), unique=True)
    description: Mapped[str | None] = mapped_column(String(1000))
    #: The validated filter as JSON (``core.services.segments.filter_document``):
    #: snake_case keys, validated again each time it is used.
    filter: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_by: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (plugin_table(PLUGIN),)


class ValueTier(db.Model):
    """A customer's RFM figures over the window ending ``as_of`` and the tier they give."""

    __tablename__ = "segments_value_tiers"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    tier: Mapped[str] = mapped_column(String(10))
    #: The tier before the last run (None: the customer had none), for the change list.
    previous_tier: Mapped[str | None] = mapped_column(String(10))
    recency_days: Mapped[int | None] = mapped_column(Integer)
    frequency: Mapped[int] = mapped_column(Integer)
    monetary: Mapped[Decimal] = mapped_column(Money)
    r_score: Mapped[int | None] = mapped_column(SmallInteger)
    f_score: Mapped[int | None] = mapped_column(SmallInteger)
    m_score: Mapped[int | None] = mapped_column(SmallInteger)
    window_days: Mapped[int] = mapped_column(Integer)
    as_of: Mapped[dt.date] = mapped_column(Date)
    computed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        # valueTier filters: the customers of a tier.
        Index("ix_segments_value_tiers_tier", "tier"),
        plugin_table(PLUGIN),
    )
