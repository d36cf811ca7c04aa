from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import BigIntPK, UTCDateTime, db, plugin_table, utcnow


class Referral(db.Model):
    """A customer brought another one in."""

    __tablename__ = "referrals_referral"
    __table_args__ = plugin_table("referrals")

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    referrer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    referred_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), unique=True)
    referred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    note: Mapped[str | None] = mapped_column(String(500))
