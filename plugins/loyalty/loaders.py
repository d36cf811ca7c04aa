"""DataLoaders of the loyalty types: one query per relation for a whole page of members."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from api import ModelByIdLoader, RapportLoader
from api.pagination import after_condition
from core.db import db, utcnow

from plugins.loyalty import service, tiers
from plugins.loyalty.models import EarnRule, LedgerEntry, Reward, Tier, TierChange


class LoyaltyAccountByCustomerLoader(RapportLoader):
    """The member's account and spendable balance (points past expiry left out), or None
    for a customer who never had points: one query for the page."""

    def load_batch(self, keys: list[int]) -> list[service.MemberAccount | None]:
        found = service.accounts_of(keys, utcnow())
        return [found.get(k) for k in keys]


class LoyaltyTierByIdLoader(ModelByIdLoader):
    model = Tier


class LoyaltyRewardByIdLoader(ModelByIdLoader):
    model = Reward


class LoyaltyEarnRuleByIdLoader(ModelByIdLoader):
    model = EarnRule


class LoyaltyLedgerEntryByIdLoader(ModelByIdLoader):
    model = LedgerEntry


class PointsToNextTierByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[int | None]:
        gaps = tiers.points_to_next_tier(keys, utcnow())
        return [gaps.get(k) for k in keys]


class ExpiringPointsByCustomerLoader(RapportLoader):
    """Params: ``within_days``."""

    def load_batch(self, keys: list[int]) -> list[int]:
        points = service.expiring_points(keys, dt.timedelta(days=self.params["within_days"]),
                                         utcnow())
        return [points.get(k, 0) for k in keys]


class LoyaltyLedgerByCustomerLoader(RapportLoader):
    """Up to ``limit`` entries per member, newest first, after an optional cursor
    ``(occurred_at, id)``: one ROW_NUMBER() query for the page of members."""

    def load_batch(self, keys: list[int]) -> list[list[LedgerEntry]]:
        conditions: list[Any] = [LedgerEntry.customer_id.in_(keys)]
        after = self.params.get("after")
        if after is not None:
            conditions.append(after_condition([LedgerEntry.occurred_at, LedgerEntry.id],
                                              list(after), descending=True))
        position = func.row_number().over(
            partition_by=LedgerEntry.customer_id,
            order_by=(LedgerEntry.occurred_at.desc(), LedgerEntry.id.desc())).label("position")
        ranked = select(LedgerEntry.id, position).where(*conditions).subquery()
        found: dict[int, list[LedgerEntry]] = defaultdict(list)
        for entry in db.session.scalars(
                select(LedgerEntry).join(ranked, ranked.c.id == LedgerEntry.id)
                .where(ranked.c.position <= self.params["limit"])
                .order_by(LedgerEntry.customer_id, LedgerEntry.occurred_at.desc(),
                          LedgerEntry.id.desc())):
            found[entry.customer_id].append(entry)
        return [found.get(k, []) for k in keys]


class LoyaltyLedgerCountByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[int]:
        counts = dict(db.session.execute(
            select(LedgerEntry.customer_id, func.count()).where(LedgerEntry.customer_id.in_(keys))
            .group_by(LedgerEntry.customer_id)).all())
        return [counts.get(k, 0) for k in keys]


class TierHistoryByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[list[TierChange]]:
        found = service.tier_history(keys)
        return [found.get(k, []) for k in keys]
