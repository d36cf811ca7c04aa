"""Tiers: who qualifies for which level. Members move up at once when they earn and down
only at re-evaluation (``rapport loyalty tiers``); every move is kept in the history.

Qualifying points are the points earned over the tier's rolling window, net of what
refunds took back (shortfalls included): adjustments, redemptions and expiry do not
count. Tiers are ordered by their threshold.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import bindparam, case, func, insert, select, update

from core.db import db

from plugins.loyalty import audit as loyalty_audit
from plugins.loyalty.config import add_months, loyalty_settings
from plugins.loyalty.ledger import among
from plugins.loyalty.models import Account, EntryKind, LedgerEntry, Tier, TierChange, TierChangeReason

_accounts = Account.__table__


def active_tiers() -> list[Tier]:
    return list(db.session.scalars(select(Tier).where(Tier.retired_at.is_(None))
                                   .order_by(Tier.threshold_points)))


def qualifying_points(customer_ids: Sequence[int], as_of: dt.datetime, windows: Iterable[int]
                      ) -> dict[int, dict[int, int]]:
    """Per customer, per window (months): qualifying points over the window ending at as_of."""
    windows = sorted(set(windows))
    if not customer_ids or not windows:
        return {}
    net = LedgerEntry.points - func.coalesce(LedgerEntry.shortfall, 0)
    tz = loyalty_settings().timezone
    starts = {w: add_months(as_of, -w, tz) for w in windows}
    columns = [func.coalesce(func.sum(case((LedgerEntry.occurred_at >= starts[w], net))), 0)
               for w in windows]
    rows = db.session.execute(
        select(LedgerEntry.customer_id, *columns)
        .where(among(LedgerEntry.customer_id, customer_ids),
               LedgerEntry.kind.in_([EntryKind.EARN, EntryKind.REVERSE]),
               LedgerEntry.occurred_at >= min(starts.values()),
               LedgerEntry.occurred_at <= as_of)
        .group_by(LedgerEntry.customer_id))
    return {row[0]: {w: int(v) for w, v in zip(windows, row[1:])} for row in rows}


def best_tier(tiers: Sequence[Tier], points: Mapping[int, int]) -> Tier | None:
    """The highest tier whose threshold the points over its own window reach."""
    reached = [t for t in tiers if points.get(t.window_months, 0) >= t.threshold_points]
    return reached[-1] if reached else None


def evaluate(customer_ids: Sequence[int], now: dt.datetime, reason: TierChangeReason,
             allow_down: bool) -> int:
    """Move members to the tier they qualify for; only upwards unless ``allow_down``.

    Returns how many members changed tier. The accounts are locked (customer id order)
    before their tiers and points are read, so a concurrent earning is either seen whole or
    waited for: the re-evaluation job never writes a tier from a stale reading.
    """
    current = dict(db.session.execute(select(Account.customer_id, Account.tier_id).where(
        among(Account.customer_id, customer_ids)).order_by(Account.customer_id)
        .with_for_update()).all()) if customer_ids else {}
    if not current:
        return 0
    every_tier = {t.id: t for t in db.session.scalars(select(Tier))}
    tiers = sorted((t for t in every_tier.values() if t.retired_at is None),
                   key=lambda t: t.threshold_points)
    points = qualifying_points(list(current), now,
                               {t.window_months for t in every_tier.values()})
    moves: list[dict[str, object]] = []
    for customer_id, tier_id in current.items():
        target = best_tier(tiers, points.get(customer_id, {}))
        target_id = target.id if target is not None else None
        if target_id == tier_id:
            continue
        held = every_tier[tier_id] if tier_id is not None else None
        if not allow_down and (target is None or (
                held is not None and held.threshold_points >= target.threshold_points)):
            continue
        window = (target or held).window_months  # type: ignore[union-attr]
        moves.append({"customer_id": customer_id, "from_tier_id": tier_id,
                      "to_tier_id": target_id,
                      "changed_at": now, "reason": reason,
                      "qualifying_points": points.get(customer_id, {}).get(window, 0)})
    record_moves(moves, now)
    return len(moves)


def record_moves(moves: Sequence[Mapping[str, object]], now: dt.datetime) -> None:
    """Set the accounts' tiers and append the history rows."""
    if not moves:
        return
    db.session.execute(
        update(_accounts).where(_accounts.c.customer_id == bindparam("b_customer"))
        .values(tier_id=bindparam("b_tier"), tier_since=now, updated_at=now),
        [{"b_customer": m["customer_id"], "b_tier": m["to_tier_id"]} for m in moves])
    db.session.execute(insert(TierChange), [dict(m) for m in moves])
    loyalty_audit.tiers_changed(moves)


def points_to_next_tier(customer_ids: Sequence[int], now: dt.datetime
                        ) -> dict[int, int | None]:
    """Qualifying points each member still needs for the next tier up (None at the top)."""
    tiers = active_tiers()
    current = dict(db.session.execute(select(Account.customer_id, Account.tier_id).where(
        Account.customer_id.in_(customer_ids))).all()) if customer_ids else {}
    thresholds = dict(db.session.execute(select(Tier.id, Tier.threshold_points)).all())
    points = qualifying_points(list(customer_ids), now, {t.window_months for t in tiers})
    result: dict[int, int | None] = {}
    for customer_id in customer_ids:
        tier_id = current.get(customer_id)
        floor = thresholds[tier_id] if tier_id is not None else -1
        above = [t for t in tiers if t.threshold_points > floor]
        if not above:
            result[customer_id] = None
            continue
        goal = above[0]
        earned = points.get(customer_id, {}).get(goal.window_months, 0)
        result[customer_id] = max(0, goal.threshold_points - earned)
    return result
