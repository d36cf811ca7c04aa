"""The programme report: points flows per month, liability, breakage, redemption, tiers,
and the purchase behaviour of members against non-members (DOMAIN.md 4).

Months are calendar months in ``RAPPORT_TIMEZONE``; the period is whole days, both ends
included. Every figure is one GROUP BY in the database.

- issued: points credited (earned, and added by adjustments); redeemed, expired,
  reversed (taken back by refunds) and removed (negative adjustments) are debits.
- outstanding: the points members hold at the end of the period (the programme's
  liability), valued at ``RAPPORT_LOYALTY_POINT_VALUE`` in the base currency.
- breakage rate: expired / issued in the period; redemption rate: redeemed / issued.
- members: customers with a loyalty account opened before the period's end (a customer
  becomes a member at their first points). Repeat-purchase rate: the share of the
  period's purchasers who bought at least twice in it; purchase frequency: purchases per
  purchaser.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, literal, select

from core.db import db
from core.models import Interaction
from core.money import quantize
from core.services import load

from plugins.loyalty.config import local_midnight, loyalty_settings, month_starts
from plugins.loyalty.models import Account, EntryKind, LedgerEntry, Tier
from plugins.loyalty.schemas import ReportPeriodSchema


@dataclass
class MonthFlows:
    month: str  # YYYY-MM
    issued: int = 0
    redeemed: int = 0
    expired: int = 0
    reversed: int = 0
    removed: int = 0


@dataclass
class PurchaseBehaviour:
    customers: int
    repeat_purchase_rate: float | None
    purchase_frequency: float | None


@dataclass
class LoyaltyReport:
    period_from: dt.date
    period_to: dt.date
    months: list[MonthFlows]
    total: MonthFlows
    outstanding_points: int
    outstanding_value: Decimal
    currency: str
    breakage_rate: float | None
    redemption_rate: float | None
    members: int
    members_per_tier: list[tuple[Tier | None, int]]
    member_purchases: PurchaseBehaviour
    non_member_purchases: PurchaseBehaviour


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def loyalty_report(raw: Mapping[str, Any]) -> LoyaltyReport:
    """``raw``: ``{"from": date, "to": date}`` (ISO strings or dates)."""
    data = load(ReportPeriodSchema(), {k: v.isoformat() if isinstance(v, dt.date) else v
                                       for k, v in raw.items()})
    settings = loyalty_settings()
    tz = settings.timezone
    first, last = data["from_"], data["to"]
    start, end = local_midnight(first, tz), local_midnight(last + dt.timedelta(days=1), tz)

    months = [MonthFlows(m.strftime("%Y-%m")) for m in month_starts(first, last)]
    by_month = {m.month: m for m in months}
    for month, *figures in db.session.execute(_flows_query(months, start, end, tz)):
        _add(by_month[month], figures)
    total = MonthFlows("total")
    for m in months:
        _add(total, [m.issued, m.redeemed, m.expired, m.reversed, m.removed])

    outstanding = int(db.session.scalar(select(func.coalesce(func.sum(LedgerEntry.points), 0))
                                        .where(LedgerEntry.occurred_at < end)) or 0)
    members = db.session.scalar(select(func.count()).select_from(Account)
                                .where(Account.created_at < end)) or 0
    tiers = {t.id: t for t in db.session.scalars(select(Tier))}
    per_tier = [(tiers.get(tier_id) if tier_id is not None else None, count)
                for tier_id, count in db.session.execute(
                    select(Account.tier_id, func.count()).group_by(Account.tier_id))]
    per_tier.sort(key=lambda pair: pair[0].threshold_points if pair[0] else -1)
    behaviour = _purchase_behaviour(start, end)
    return LoyaltyReport(
        period_from=first, period_to=last, months=months, total=total,
        outstanding_points=outstanding,
        outstanding_value=quantize(settings.point_value * outstanding, settings.base_currency),
        currency=settings.base_currency,
        breakage_rate=_rate(total.expired, total.issued),
        redemption_rate=_rate(total.redeemed, total.issued),
        members=members, members_per_tier=per_tier,
        member_purchases=behaviour.get(True, PurchaseBehaviour(0, None, None)),
        non_member_purchases=behaviour.get(False, PurchaseBehaviour(0, None, None)))


def _add(flows: MonthFlows, figures: list[Any]) -> None:
    issued, redeemed, expired, reversed_, removed = (int(f or 0) for f in figures)
    flows.issued += issued
    flows.redeemed += redeemed
    flows.expired += expired
    flows.reversed += reversed_
    flows.removed += removed


def _flows_query(months: list[MonthFlows], start: dt.datetime, end: dt.datetime,
                 tz: Any) -> Any:
    """Points per month and flow, one GROUP BY over a month label computed in SQL."""
    e = LedgerEntry
    bounds = []
    for flows in months:
        year, month = map(int, flows.month.split("-"))
        lo = max(start, local_midnight(dt.date(year, month, 1), tz))
        hi = min(end, local_midnight((dt.date(year, month, 1) + dt.timedelta(days=32))
                                     .replace(day=1), tz))
        bounds.append((and_(e.occurred_at >= lo, e.occurred_at < hi), literal(flows.month)))
    labelled = (select(case(*bounds).label("month"), e.kind, e.points)
                .where(e.occurred_at >= start, e.occurred_at < end).subquery())

    def total(condition: Any, sign: int) -> Any:
        return func.sum(case((condition, sign * labelled.c.points), else_=0))

    kind, points = labelled.c.kind, labelled.c.points
    return (select(labelled.c.month,
                   total(((kind == EntryKind.EARN) | ((kind == EntryKind.ADJUST) & (points > 0))),
                         1),
                   total(kind == EntryKind.REDEEM, -1),
                   total(kind == EntryKind.EXPIRE, -1),
                   total(kind == EntryKind.REVERSE, -1),
                   total((kind == EntryKind.ADJUST) & (points < 0), -1))
            .group_by(labelled.c.month))


def _purchase_behaviour(start: dt.datetime, end: dt.datetime) -> dict[bool, PurchaseBehaviour]:
    purchases = (select(Interaction.customer_id, func.count().label("n"))
                 .where(Interaction.kind == "purchase", Interaction.occurred_at >= start,
                        Interaction.occurred_at < end)
                 .group_by(Interaction.customer_id).subquery())
    flagged = (select(purchases.c.n,
                      case((Account.customer_id.is_(None), 0), else_=1).label("member"))
               .select_from(purchases)
               .outerjoin(Account, and_(Account.customer_id == purchases.c.customer_id,
                                        Account.created_at < end))
               .subquery())
    rows = db.session.execute(
        select(flagged.c.member, func.count(),
               func.sum(case((flagged.c.n >= 2, 1), else_=0)), func.sum(flagged.c.n))
        .group_by(flagged.c.member))
    return {bool(member): PurchaseBehaviour(int(customers), _rate(int(repeat), int(customers)),
                                            _rate(int(count), int(customers)))
            for member, customers, repeat, count in rows}
