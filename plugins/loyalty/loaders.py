"""DataLoaders of the loyalty types: one query per relation for a whole page of members."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from api import ModelByIdLoader, RapportLoader
from api.pagination import Keyset, rows_per_parent
from core.db import db, utcnow

from plugins.loyalty import service, tiers
from plugins.loyalty.models import EarnRule, LedgerEntry, Reward, Tier, TierChange


#: The order of a member's ledger: newest first.
NEWEST_ENTRIES = Keyset((LedgerEntry.occurred_at, LedgerEntry.id), (dt.datetime, int),
                        descending=True)


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
    ``(occurred_at, id)`` (``NEWEST_ENTRIES.decode``): one ROW_NUMBER() query for the page
    of members."""

    def load_batch(self, keys: list[int]) -> list[list[LedgerEntry]]:
        return rows_per_parent(LedgerEntry, LedgerEntry.customer_id, keys, NEWEST_ENTRIES,
                               self.params["limit"], self.params.get("after"))


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
