"""Demo rows for ``rapport demo``: churned customers and two win-back campaigns.

A customer whose last purchase is more than ``LAPSED_DAYS`` old is marked churned with a
probability of 60%, one to two months after its last activity. Type and reason follow
its history: refunds point at our own failures (NEGLIGENCE: core service failure or the
response to it), a frequent buyer who stopped was probably taken by a competitor
(COMPETITIVE: competition or pricing), the others left for natural causes (moved,
involuntary switching, inconvenience). Some churned customers get a win-back attempt in
one of the two campaigns (relationship investment vs a price promotion); a few are won
back, through the same reactivation the API uses. Core's bulk demo rows fire no hooks,
so this reads the customers' interactions itself.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence

from sqlalchemy import case, func, select

from core.db import db
from core.models import Customer, CustomerStatus, Interaction
from core.services.customers import change_customer_statuses

from plugins.churn import service
from plugins.churn.models import (
    ChurnReason, ChurnRecord, ChurnType, WinbackAttempt, WinbackCampaign, WinbackOutcome,
    WinbackStrategy,
)

LAPSED_DAYS = 75
CHURN_SHARE = 0.6
CAMPAIGNS = (
    ("Personal call from the account manager", WinbackStrategy.RELATIONSHIP,
     "Listen, apologise, and fix what drove the customer away."),
    ("20% come-back voucher", WinbackStrategy.PRICE,
     "A time-limited discount on the next purchase."),
)
CAMPAIGN_DAYS = 150


def _cause(rng: random.Random, refunds: int, purchases: int
           ) -> tuple[ChurnType, ChurnReason, str]:
    if refunds:
        return (ChurnType.NEGLIGENCE,
                rng.choice([ChurnReason.CORE_SERVICE_FAILURE, ChurnReason.RESPONSE_TO_FAILURE,
                            ChurnReason.SERVICE_ENCOUNTER_FAILURE]),
                "Refund history; the customer stopped buying after it.")
    if purchases >= 5:
        return (ChurnType.COMPETITIVE, rng.choice([ChurnReason.COMPETITION, ChurnReason.PRICING]),
                "A regular buyer who stopped: probably gone to a competitor.")
    return (ChurnType.NATURAL,
            rng.choice([ChurnReason.INVOLUNTARY, ChurnReason.INCONVENIENCE, ChurnReason.OTHER]),
            "Occasional buyer, no longer active.")


def _campaigns(as_of: dt.datetime) -> list[WinbackCampaign]:
    """The two demo campaigns, created by the first chunk and reused by the next ones."""
    found = {c.name: c for c in db.session.scalars(select(WinbackCampaign).where(
        WinbackCampaign.name.in_([name for name, _, _ in CAMPAIGNS])))}
    for name, strategy, description in CAMPAIGNS:
        if name not in found:
            found[name] = WinbackCampaign(name=name, strategy=strategy, description=description,
                                          started_at=as_of - dt.timedelta(days=CAMPAIGN_DAYS))
            db.session.add(found[name])
    db.session.flush()
    return [found[name] for name, _, _ in CAMPAIGNS]


def seed_demo(rng: random.Random, customers: Sequence[Customer], as_of: dt.datetime) -> None:
    if not customers:
        return
    is_purchase = Interaction.kind == service.PURCHASE
    history = db.session.execute(
        select(Interaction.customer_id, func.max(Interaction.occurred_at),
               func.sum(case((is_purchase, 1), else_=0)),
               func.sum(case((Interaction.kind == "refund", 1), else_=0)))
        .where(Interaction.customer_id.in_([c.id for c in customers]),
               Interaction.occurred_at <= as_of)
        .group_by(Interaction.customer_id)
        .having(func.sum(case((is_purchase, 1), else_=0)) > 0)
        .order_by(Interaction.customer_id)).all()
    lapsed = as_of - dt.timedelta(days=LAPSED_DAYS)
    records: list[ChurnRecord] = []
    for customer_id, last_activity, purchases, refunds in history:
        if last_activity > lapsed or rng.random() > CHURN_SHARE:
            continue
        churned_at = min(last_activity + dt.timedelta(days=rng.uniform(30, 60)),
                         as_of - dt.timedelta(days=1))
        type_, reason, note = _cause(rng, int(refunds or 0), int(purchases or 0))
        records.append(ChurnRecord(customer_id=customer_id, type=type_, reason=reason,
                                   churned_at=churned_at, note=note, recorded_at=as_of))
    if not records:
        return
    db.session.add_all(records)
    db.session.flush()
    change_customer_statuses([r.customer_id for r in records], CustomerStatus.CHURNED)
    _winback(rng, records, _campaigns(as_of), as_of)


def _winback(rng: random.Random, records: Sequence[ChurnRecord],
             campaigns: Sequence[WinbackCampaign], as_of: dt.datetime) -> None:
    won: dict[int, dt.datetime] = {}
    for record in records:
        if rng.random() > 0.4:
            continue
        campaign = rng.choice(campaigns)
        attempted_at = max(record.churned_at, campaign.started_at) + dt.timedelta(
            days=rng.uniform(3, 30))
        if attempted_at >= as_of:
            continue
        attempt = WinbackAttempt(campaign_id=campaign.id, customer_id=record.customer_id,
                                 outcome=WinbackOutcome.PENDING, attempted_at=attempted_at,
                                 note="Demo attempt.")
        db.session.add(attempt)
        draw = rng.random()
        resolved_at = min(attempted_at + dt.timedelta(days=rng.uniform(2, 20)), as_of)
        # Price promotions win back more, relationship work less but for longer (DOMAIN.md 8).
        wins = 0.3 if campaign.strategy == WinbackStrategy.PRICE else 0.2
        if draw < wins:
            won[record.customer_id] = resolved_at
        elif draw < 0.7:
            attempt.outcome = WinbackOutcome.LOST
            attempt.resolved_at = resolved_at
    db.session.flush()
    service.reactivate_in_transaction(won, "won back by a demo campaign")
