"""Loyalty features for the churn plugin's ``rapport_churn_features`` hook.

One SELECT, LEFT JOINed by churn with every other plugin's: nothing is computed per
customer in Python. Every value is "as of" the given time: only entries, lot uses and tier
changes dated on or before it count, so a model trained on a past date sees what was
known then. Customers without a loyalty entry by then get NULLs (no data).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Float, Select, case, cast, extract, func, literal, select
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, FromClause

from core.db import UTCDateTime, db

from plugins.loyalty.models import EntryKind, LedgerEntry, LotUse, Tier, TierChange

EXPIRY_HORIZON = dt.timedelta(days=30)


def _days_before(as_of: dt.datetime, moment: ColumnElement[Any]) -> ColumnElement[Any]:
    """Days (fractional) from ``moment`` to ``as_of``."""
    if db.session.get_bind().dialect.name == "sqlite":
        # SQLite keeps naive UTC text: compare with the same text form.
        stamp = as_of.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
        return cast(func.julianday(literal(stamp)) - func.julianday(moment), Float)
    return cast(extract("epoch", literal(as_of, UTCDateTime) - moment) / 86400, Float)


def churn_features(customers: FromClause, as_of: dt.datetime) -> Select[Any]:
    ids = customers.c.customer_id
    members = select(ids)
    entry = LedgerEntry

    facts = (select(entry.customer_id,
                    cast(func.sum(entry.points), BigInteger).label("balance"),
                    func.max(case((entry.kind == EntryKind.EARN, entry.occurred_at)))
                    .label("last_earn"),
                    func.max(case((entry.kind == EntryKind.REDEEM, entry.occurred_at)))
                    .label("last_redemption"))
             .where(entry.customer_id.in_(members), entry.occurred_at <= as_of)
             .group_by(entry.customer_id).subquery("loyalty_facts"))

    # Tier held at as_of: the last change on or before it. Its rank is its position by
    # threshold among the tiers defined (retired ones included); 1 is the lowest.
    latest = func.row_number().over(partition_by=TierChange.customer_id,
                                    order_by=(TierChange.changed_at.desc(),
                                              TierChange.id.desc()))
    changes = (select(TierChange.customer_id, TierChange.to_tier_id, latest.label("n"))
               .where(TierChange.customer_id.in_(members), TierChange.changed_at <= as_of)
               .subquery("loyalty_changes"))
    lower = aliased(Tier)
    rank = (select(func.count(lower.id)).where(lower.threshold_points <= Tier.threshold_points)
            .correlate(Tier).scalar_subquery())
    held = (select(changes.c.customer_id, rank.label("rank"))
            .join(Tier, Tier.id == changes.c.to_tier_id)
            .where(changes.c.n == 1).subquery("loyalty_tier_held"))

    # Lots expiring within the horizon, less what debits dated by as_of took from them.
    debit = aliased(LedgerEntry)
    lots = (select(entry.id, entry.customer_id, entry.points)
            .where(entry.customer_id.in_(members), entry.remaining.is_not(None),
                   entry.occurred_at <= as_of, entry.expires_at > as_of,
                   entry.expires_at <= as_of + EXPIRY_HORIZON)
            .subquery("loyalty_lots"))
    used = (select(LotUse.lot_id, func.sum(LotUse.points).label("points"))
            .join(debit, debit.id == LotUse.entry_id)
            .where(LotUse.lot_id.in_(select(lots.c.id)), debit.occurred_at <= as_of)
            .group_by(LotUse.lot_id).subquery("loyalty_used"))
    expiring = (select(lots.c.customer_id,
                       cast(func.sum(lots.c.points - func.coalesce(used.c.points, 0)), BigInteger)
                       .label("points"))
                .outerjoin(used, used.c.lot_id == lots.c.id)
                .group_by(lots.c.customer_id).subquery("loyalty_expiring"))

    member = facts.c.customer_id.is_not(None)
    return (select(
        ids.label("customer_id"),
        facts.c.balance.label("loyalty_balance"),
        case((member, func.coalesce(held.c.rank, 0))).label("loyalty_tier_rank"),
        _days_before(as_of, facts.c.last_earn).label("loyalty_days_since_last_earn"),
        _days_before(as_of, facts.c.last_redemption)
        .label("loyalty_days_since_last_redemption"),
        case((member, func.coalesce(expiring.c.points, 0)))
        .label("loyalty_points_expiring_30d"))
        .select_from(customers)
        .outerjoin(facts, facts.c.customer_id == ids)
        .outerjoin(held, held.c.customer_id == ids)
        .outerjoin(expiring, expiring.c.customer_id == ids))
