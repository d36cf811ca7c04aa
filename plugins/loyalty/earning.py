"""Points for interactions, and what refunds take back, computed a batch at a time.

Each chunk of interactions costs a fixed handful of statements whatever its size: one
query pairs every interaction with the earn rules in force at its ``occurred_at`` (and the
member's tier multiplier), one reads what capped rules already granted in the periods at
stake, then the accounts are opened and locked, the lots inserted and the balances moved
in bulk. Refunds are handled the same way after the earnings of the chunk.

Refund policy: a refund takes back the points its purchase earned, in proportion to the
amount refunded (all of them once the refunds reach the purchase amount, or when the
currencies differ). The member's lots past expiry are written off first (as every debit
does); then the points come out of the purchase's own lot, then out of the member's other
lots in spending order. What the balance cannot cover (the points were already spent or
expired) is recorded on the entry as its ``shortfall`` and never becomes a debt: the
balance does not go below zero.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import aliased

from core.db import db
from core.models import Interaction

from plugins.loyalty import audit as loyalty_audit, ledger, tiers
from plugins.loyalty.config import LoyaltySettings, add_months, period_bounds
from plugins.loyalty.models import (
    Account, CapPeriod, EarnRule, EntryKind, LedgerEntry, Rounding, Tier, TierChangeReason,
)

#: Interactions per round of statements (bind-parameter limits, bounded memory).
CHUNK = 10_000

_ROUNDING = {Rounding.DOWN: ROUND_FLOOR, Rounding.NEAREST: ROUND_HALF_UP,
             Rounding.UP: ROUND_CEILING}


def earn_and_reverse(interaction_ids: Sequence[int], now: dt.datetime,
                     settings: LoyaltySettings, *, earn: bool = True,
                     reverse: bool = True) -> None:
    """Post what recorded interactions earn or take back (inside the caller's transaction).

    ``earn`` or ``reverse`` false skips what the caller knows is absent (a single
    interaction of known kind: only refunds reverse). A batch larger than a chunk is taken in time order, so
    that caps are used up in the order things happened and each chunk's cap look-up
    covers a short time span.
    """
    ids = sorted(set(interaction_ids))
    if len(ids) == 1 and earn and not reverse and \
            db.session.get_bind().dialect.name == "postgresql":
        from plugins.loyalty.earning_one import earn_one

        earn_one(ids[0], now, settings)  # one purchase: two statements (earning_one)
        return
    if len(ids) > CHUNK:
        ids = list(db.session.scalars(select(Interaction.id).where(
            ledger.among(Interaction.id, ids)).order_by(Interaction.occurred_at, Interaction.id)))
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        earners = _earn(chunk, now, settings) if earn else set()
        if reverse:
            _reverse_refunds(chunk, now)
        if earners:
            tiers.evaluate(sorted(earners), now, TierChangeReason.EARNED, allow_down=False)


def points_for(amount: Decimal | None, rate: Decimal | None, bonus: int | None,
               multiplier: Decimal, rounding: Rounding) -> int:
    raw = Decimal(bonus or 0)
    if rate is not None and amount is not None:
        raw += amount * rate
    return int((raw * multiplier).to_integral_value(rounding=_ROUNDING[rounding]))


@dataclass
class _Candidate:
    interaction_id: int
    customer_id: int
    occurred_at: dt.datetime
    rule_id: int
    points: int
    cap_points: int | None
    cap_period: CapPeriod | None
    expiry_months: int | None


def _candidates(ids: Sequence[int]) -> list[_Candidate]:
    i, r = Interaction, EarnRule
    in_force = and_(
        r.kind == i.kind,
        or_(r.currency.is_(None), r.currency == i.currency),
        r.valid_from <= i.occurred_at,
        or_(r.valid_until.is_(None), i.occurred_at < r.valid_until),
        or_(r.minimum_amount.is_(None), i.amount >= r.minimum_amount))
    rows = db.session.execute(
        select(i.id, i.customer_id, i.occurred_at, i.amount, r.id, r.points_per_unit,
               r.bonus_points, r.rounding, r.cap_points, r.cap_period, r.expiry_months,
               Tier.earn_multiplier)
        .join(r, in_force)
        .outerjoin(Account, Account.customer_id == i.customer_id)
        .outerjoin(Tier, Tier.id == Account.tier_id)
        .where(ledger.among(i.id, ids))
        .order_by(i.occurred_at, i.id, r.id))
    return [_Candidate(iid, cid, at, rid,
                       points_for(amount, rate, bonus, multiplier or Decimal(1), rounding),
                       cap, period, months)
            for iid, cid, at, amount, rid, rate, bonus, rounding, cap, period, months, multiplier
            in rows]


def _apply_caps(candidates: list[_Candidate], settings: LoyaltySettings) -> None:
    """Lower the points of capped rules to what is left of each period's cap.

    What each member already earned in each period at stake is summed in SQL: one
    GROUP BY per capped rule, over a CASE that names the period of each entry.
    """
    capped = [c for c in candidates if c.cap_period is not None]
    periods: dict[tuple[int, int, dt.datetime], int] = {}  # (customer, rule, start) -> used
    bounds: dict[int, set[tuple[dt.datetime, dt.datetime]]] = defaultdict(set)
    for c in capped:
        start, end = period_bounds(c.occurred_at, c.cap_period,  # type: ignore[arg-type]
                                   settings.timezone)
        bounds[c.rule_id].add((start, end))
        periods[(c.customer_id, c.rule_id, start)] = 0
    e = LedgerEntry
    for rule_id, spans in bounds.items():
        ordered = sorted(spans)
        bucket = case(*[(and_(e.occurred_at >= s, e.occurred_at < t), i)
                        for i, (s, t) in enumerate(ordered)]).label("bucket")
        earned = (select(e.customer_id, bucket, e.points)
                  .where(e.kind == EntryKind.EARN, e.earn_rule_id == rule_id,
                         ledger.among(e.customer_id, {c.customer_id for c in capped}),
                         e.occurred_at >= ordered[0][0], e.occurred_at < ordered[-1][1])
                  .subquery())
        for customer_id, index, points in db.session.execute(
                select(earned.c.customer_id, earned.c.bucket, func.sum(earned.c.points))
                .where(earned.c.bucket.is_not(None))
                .group_by(earned.c.customer_id, earned.c.bucket)):
            key = (customer_id, rule_id, ordered[index][0])
            if key in periods:
                periods[key] = int(points)
    for c in capped:
        start = period_bounds(c.occurred_at, c.cap_period, settings.timezone)[0]  # type: ignore[arg-type]
        key = (c.customer_id, c.rule_id, start)
        c.points = max(0, min(c.points, c.cap_points - periods[key]))  # type: ignore[operator]
        periods[key] += c.points


def _earn(ids: Sequence[int], now: dt.datetime, settings: LoyaltySettings) -> set[int]:
    candidates = _candidates(ids)
    if any(c.cap_period is not None for c in candidates):
        # Lock the earners' accounts (opening new ones, as the credit below would) before
        # reading what capped rules already granted: two concurrent purchases would
        # otherwise both see the whole cap left. The same set and order as the credit's.
        ledger.open_accounts({c.customer_id for c in candidates if c.points > 0}, now)
    _apply_caps(candidates, settings)
    earned = [c for c in candidates if c.points > 0]
    if not earned:
        return set()
    ledger.append_entries([{
        "customer_id": c.customer_id, "kind": EntryKind.EARN, "points": c.points,
        "remaining": c.points, "occurred_at": c.occurred_at, "recorded_at": now,
        "interaction_id": c.interaction_id, "earn_rule_id": c.rule_id,
        "expires_at": (add_months(c.occurred_at, c.expiry_months, settings.timezone)
                       if c.expiry_months else None),
    } for c in earned])
    credits: dict[int, int] = defaultdict(int)
    for c in earned:
        credits[c.customer_id] += c.points
    ledger.credit_balances(credits, now)
    loyalty_audit.points_earned(credits)
    return set(credits)


_refund, _purchase, _earlier = aliased(Interaction), aliased(Interaction), aliased(Interaction)


def _reverse_refunds(ids: Sequence[int], now: dt.datetime) -> None:
    refund, purchase, earlier = _refund, _purchase, _earlier
    # Lock the members' accounts before reading what their purchases' refunds already took
    # back: two refunds of one purchase in concurrent transactions would otherwise both
    # read "nothing taken yet" and together take back more than the purchase earned.
    customers = db.session.scalars(select(refund.customer_id).where(
        ledger.among(refund.id, ids), refund.kind == "refund",
        refund.refers_to_id.is_not(None)).distinct()).all()
    if not customers:
        return
    ledger.lock_accounts(customers)
    # Refunded before this one: the refunds of the purchase already posted, that is every
    # other visible one outside this chunk (whatever its id: ids are taken before the
    # lock, so a higher id may have committed first), and the chunk's earlier ones.
    refunded_before = (select(func.coalesce(func.sum(earlier.amount), 0)).where(
        earlier.kind == "refund", earlier.refers_to_id == refund.refers_to_id,
        earlier.currency == refund.currency, earlier.id != refund.id,
        or_(earlier.id < refund.id, ledger.not_among(earlier.id, ids))).scalar_subquery())
    refunds = db.session.execute(
        select(refund.id, refund.customer_id, refund.occurred_at, refund.amount,
               refund.currency, refunded_before, purchase.id, purchase.amount,
               purchase.currency)
        .join(purchase, purchase.id == refund.refers_to_id)
        .where(ledger.among(refund.id, ids), refund.kind == "refund")
        .order_by(refund.occurred_at, refund.id)).all()
    if not refunds:
        return
    earned, claimed = _earned_and_claimed({row[6] for row in refunds})

    owed: list[tuple[int, int, dt.datetime, int, int]] = []  # refund, customer, at, purchase, points
    for (refund_id, customer_id, at, amount, currency, before, purchase_id, purchase_amount,
         purchase_currency) in refunds:
        total = earned.get(purchase_id, 0)
        if currency != purchase_currency or before + amount >= purchase_amount:
            target = total
        else:
            target = int((total * (before + amount) / purchase_amount)
                         .to_integral_value(rounding=ROUND_HALF_UP))
        points = max(0, target - claimed[purchase_id])
        if points:
            claimed[purchase_id] += points
            owed.append((refund_id, customer_id, at, purchase_id, points))
    if not owed:
        return

    customers = {customer_id for _, customer_id, _, _, _ in owed}
    balances = ledger.lock_accounts(customers)
    lots = ledger.open_lots(customers)
    # Points past expiry are never taken back: written off first, as the expiry job would.
    deltas: dict[int, int] = defaultdict(int)
    for customer_id, expired in ledger.expire_open_lots(lots, now, now).items():
        balances[customer_id] -= expired
        deltas[customer_id] -= expired
    rows, planned = [], []
    for refund_id, customer_id, at, purchase_id, points in owed:
        take = min(points, balances.get(customer_id, 0))
        balances[customer_id] = balances.get(customer_id, 0) - take
        deltas[customer_id] -= take
        planned.append(ledger.plan_use(lots[customer_id], take,
                                       first=lambda lot, p=purchase_id: lot.interaction_id == p))
        rows.append({"customer_id": customer_id, "kind": EntryKind.REVERSE, "points": -take,
                     "shortfall": points - take, "occurred_at": at, "recorded_at": now,
                     "interaction_id": refund_id})
    entry_ids = ledger.insert_entries(rows)
    ledger.record_uses([(entry_id, lot.id, n) for entry_id, uses in zip(entry_ids, planned)
                        for lot, n in uses])
    ledger.add_to_balances(deltas, now)


def _earned_and_claimed(purchase_ids: set[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Points each purchase earned, and what its refunds already took back (shortfalls
    included), in one GROUP BY."""
    purchase_of = case((LedgerEntry.kind == EntryKind.EARN, LedgerEntry.interaction_id),
                       else_=Interaction.refers_to_id)
    rows = db.session.execute(
        select(purchase_of,
               func.sum(case((LedgerEntry.kind == EntryKind.EARN, LedgerEntry.points),
                             else_=0)),
               func.sum(case((LedgerEntry.kind == EntryKind.REVERSE,
                              func.coalesce(LedgerEntry.shortfall, 0) - LedgerEntry.points),
                             else_=0)))
        .select_from(LedgerEntry)
        .join(Interaction, Interaction.id == LedgerEntry.interaction_id)
        .where(or_(and_(LedgerEntry.kind == EntryKind.EARN,
                        ledger.among(LedgerEntry.interaction_id, purchase_ids)),
                   and_(LedgerEntry.kind == EntryKind.REVERSE,
                        ledger.among(Interaction.refers_to_id, purchase_ids))))
        .group_by(purchase_of))
    earned: dict[int, int] = {}
    claimed: dict[int, int] = defaultdict(int)
    for purchase_id, earned_points, claimed_points in rows:
        earned[purchase_id] = int(earned_points)
        claimed[purchase_id] = int(claimed_points)
    return earned, claimed
