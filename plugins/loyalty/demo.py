"""Demo rows for ``rapport demo``: a default programme and the demo customers' points.

The programme started nine months before the demo's ``as_of``: purchases in the base
currency earn a point per unit and store visits a bonus, points last six months (so the
earliest ones have expired by now unless spent), three tiers and a small catalog. Core
writes its demo interactions without firing the interaction hooks, so the points are
posted here through the same set-based code the hooks use; then some members redeem.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import func, select

from core.db import db
from core.models import Customer, Interaction

from plugins.loyalty import earning, ledger, service
from plugins.loyalty.config import add_months, loyalty_settings
from plugins.loyalty.models import (
    Account, CapPeriod, EarnRule, EntryKind, LedgerEntry, Reward, Rounding, Tier,
)

LAUNCH_MONTHS_AGO = 9
VALIDITY_MONTHS = 6
REDEEMING_SHARE = 0.35


def _ensure_programme(as_of: dt.datetime) -> list[Reward]:
    """The default programme, written once (the hook fires once per chunk of customers)."""
    if db.session.scalar(select(EarnRule.id).limit(1)) is not None:
        return list(db.session.scalars(select(Reward).order_by(Reward.point_cost)))
    launch = add_months(as_of, -LAUNCH_MONTHS_AGO)
    currency = loyalty_settings().base_currency
    db.session.add_all([
        EarnRule(name=f"1 point per {currency}", kind="purchase", currency=currency,
                 points_per_unit=Decimal(1), rounding=Rounding.DOWN,
                 minimum_amount=Decimal(5), expiry_months=VALIDITY_MONTHS, valid_from=launch,
                 created_at=launch, updated_at=launch),
        EarnRule(name="Store visit bonus", kind="visit", bonus_points=20, cap_points=60,
                 cap_period=CapPeriod.MONTH, rounding=Rounding.DOWN,
                 expiry_months=VALIDITY_MONTHS, valid_from=launch, created_at=launch,
                 updated_at=launch),
        Tier(name="Silver", threshold_points=400, window_months=12, discount_percent=Decimal(5),
             earn_multiplier=Decimal("1.25"), benefits="5% member discount",
             created_at=launch, updated_at=launch),
        Tier(name="Gold", threshold_points=1200, window_months=12,
             discount_percent=Decimal(10), earn_multiplier=Decimal("1.5"),
             benefits="10% member discount, free delivery", created_at=launch,
             updated_at=launch),
        Tier(name="Platinum", threshold_points=3000, window_months=12,
             discount_percent=Decimal(15), earn_multiplier=Decimal(2),
             benefits="15% member discount, free delivery, birthday gift",
             created_at=launch, updated_at=launch),
    ])
    rewards = [
        Reward(name="Coffee voucher", point_cost=150, created_at=launch, updated_at=launch),
        Reward(name="Tote bag", point_cost=400, stock=500, created_at=launch,
               updated_at=launch),
        Reward(name=f"Gift card 25 {currency}", point_cost=2500, created_at=launch,
               updated_at=launch),
    ]
    db.session.add_all(rewards)
    db.session.flush()
    return rewards


def seed_demo(rng: random.Random, customers: Sequence[Customer], as_of: dt.datetime) -> None:
    rewards = _ensure_programme(as_of)
    customer_ids = [c.id for c in customers]
    interaction_ids = db.session.scalars(
        select(Interaction.id).where(Interaction.customer_id.in_(customer_ids),
                                     Interaction.occurred_at <= as_of)
        .order_by(Interaction.id)).all()
    earning.earn_and_reverse(interaction_ids, as_of, loyalty_settings())
    service.expire_lots(customer_ids, as_of, as_of)
    _redeem_some(rng, customer_ids, rewards, as_of)


def _redeem_some(rng: random.Random, customer_ids: Sequence[int], rewards: Sequence[Reward],
                 as_of: dt.datetime) -> None:
    """About a third of the members spend points on the dearest reward they can afford,
    in the last month, after their last points (what had expired by then is gone)."""
    last_credit = dict(db.session.execute(
        select(LedgerEntry.customer_id, func.max(LedgerEntry.occurred_at))
        .where(LedgerEntry.customer_id.in_(customer_ids), LedgerEntry.kind == EntryKind.EARN)
        .group_by(LedgerEntry.customer_id)).all())
    balances = dict(db.session.execute(select(Account.customer_id, Account.balance).where(
        Account.customer_id.in_(customer_ids)).order_by(Account.customer_id)).all())
    for customer_id, points in balances.items():
        affordable = [r for r in rewards if r.point_cost <= points and r.stock != 0]
        if not affordable or rng.random() >= REDEEMING_SHARE:
            continue
        reward = affordable[-1]
        since = max(last_credit.get(customer_id, as_of), as_of - dt.timedelta(days=30))
        when = since + (as_of - since) * rng.random()
        if reward.stock is not None:
            reward.stock -= 1
        ledger.debit(LedgerEntry(kind=EntryKind.REDEEM, customer_id=customer_id,
                                 points=-reward.point_cost, occurred_at=when,
                                 reward_id=reward.id, details={"quantity": 1}), as_of)
