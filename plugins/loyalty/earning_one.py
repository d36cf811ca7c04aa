"""Earning on one recorded purchase, on PostgreSQL: two statements (three for a member's
first purchase), plus the one audit/outbox statement.

The set-based path of ``earning`` costs a fixed handful of statements per chunk, which is
what a batch wants and too many for the commonest write of all (a single purchase). The
rules are the same; only the statements differ:

1. ``_READ``: lock the member's account (``FOR UPDATE``; a member without one locks
   nothing) and read the earn rules in force for the purchase, the tier multiplier of the
   locked account and every tier (for the move up), in one query.
2. Python computes each rule's points (``earning.points_for``), the cap periods and the
   tiers' windows in the business time zone, exactly as the batch path does.
3. A member without an account whose purchase earns: the account is opened and locked
   first (``ledger.open_accounts``), so that the next statement reads caps and qualifying
   points after every concurrent earning for the same member committed.
4. ``_WRITE`` (data-modifying CTEs, a fresh snapshot taken under the lock): what capped
   rules already granted in their periods, the lots, the balance, the qualifying points
   over each tier's window (the new lots included) and the move up with its history row.
5. One ``core.changes.record``: the points event, and the tier event when the member
   moved up.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, text

from core.db import UTCDateTime, db

from plugins.loyalty import audit as loyalty_audit, ledger
from plugins.loyalty.config import LoyaltySettings, add_months, period_bounds
from plugins.loyalty.models import CapPeriod, Rounding, TierChangeReason

_READ = text("""WITH account AS (
    SELECT a.customer_id, a.tier_id FROM loyalty_account AS a
    WHERE a.customer_id = (SELECT customer_id FROM interactions WHERE id = :interaction_id)
    FOR UPDATE)
SELECT i.customer_id, i.occurred_at, i.amount, r.id, r.points_per_unit, r.bonus_points,
       r.rounding, r.cap_points, r.cap_period, r.expiry_months, t.earn_multiplier,
       account.customer_id IS NOT NULL AS member, account.tier_id,
       (SELECT json_agg(json_build_array(x.id, x.threshold_points, x.window_months,
                                         x.retired_at IS NULL))
        FROM loyalty_tier AS x) AS tiers
FROM interactions AS i
JOIN loyalty_earn_rule AS r ON r.kind = i.kind
    AND (r.currency IS NULL OR r.currency = i.currency)
    AND r.valid_from <= i.occurred_at
    AND (r.valid_until IS NULL OR i.occurred_at < r.valid_until)
    AND (r.minimum_amount IS NULL OR i.amount >= r.minimum_amount)
LEFT JOIN account ON true
LEFT JOIN loyalty_tier AS t ON t.id = account.tier_id
WHERE i.id = :interaction_id
ORDER BY r.id""").columns(occurred_at=UTCDateTime())

_WRITE = text("""WITH rules AS (
    SELECT * FROM jsonb_to_recordset(CAST(:rules AS jsonb)) AS c(
        rule_id bigint, points bigint, cap_points bigint, period_start timestamptz,
        period_end timestamptz, expires_at timestamptz)),
granted AS (
    SELECT c.rule_id, c.expires_at, CASE WHEN c.cap_points IS NULL THEN c.points
        ELSE least(c.points, greatest(0, c.cap_points - coalesce((
            SELECT sum(l.points) FROM loyalty_ledger AS l
            WHERE l.customer_id = :customer_id AND l.kind = 'earn'
              AND l.earn_rule_id = c.rule_id AND l.occurred_at >= c.period_start
              AND l.occurred_at < c.period_end), 0))) END AS points
    FROM rules AS c),
lots AS (
    INSERT INTO loyalty_ledger (customer_id, kind, points, remaining, occurred_at,
                                recorded_at, interaction_id, earn_rule_id, expires_at)
    SELECT :customer_id, 'earn', g.points, g.points, :occurred_at, :now, :interaction_id,
           g.rule_id, g.expires_at
    FROM granted AS g WHERE g.points > 0
    RETURNING points),
earned AS (SELECT coalesce(sum(points), 0) AS points FROM lots),
qualifying AS (
    SELECT w.tier_id, w.threshold, coalesce((
        SELECT sum(l.points - coalesce(l.shortfall, 0)) FROM loyalty_ledger AS l
        WHERE l.customer_id = :customer_id AND l.kind IN ('earn', 'reverse')
          AND l.occurred_at >= w.start AND l.occurred_at <= :now), 0)
        + CASE WHEN :occurred_at >= w.start AND :occurred_at <= :now
               THEN (SELECT points FROM earned) ELSE 0 END AS points
    FROM jsonb_to_recordset(CAST(:tiers AS jsonb)) AS w(tier_id bigint, threshold bigint,
                                                          start timestamptz)),
target AS (
    SELECT q.tier_id, q.threshold, q.points FROM qualifying AS q
    WHERE q.points >= q.threshold ORDER BY q.threshold DESC LIMIT 1),
move AS (
    SELECT t.tier_id, t.points FROM target AS t, earned AS e
    WHERE e.points > 0 AND t.tier_id IS DISTINCT FROM CAST(:held_tier AS bigint)
      AND t.threshold > CAST(:held_threshold AS bigint)),
account AS (
    UPDATE loyalty_account AS a SET balance = a.balance + e.points, updated_at = :now,
        tier_id = coalesce((SELECT tier_id FROM move), a.tier_id),
        tier_since = CASE WHEN EXISTS (SELECT 1 FROM move) THEN :now ELSE a.tier_since END
    FROM earned AS e
    WHERE a.customer_id = :customer_id AND e.points > 0
    RETURNING a.customer_id),
history AS (
    INSERT INTO loyalty_tier_history (customer_id, from_tier_id, to_tier_id, changed_at,
                                      reason, qualifying_points)
    SELECT :customer_id, CAST(:held_tier AS bigint), m.tier_id, :now, :reason, m.points
    FROM move AS m)
SELECT (SELECT points FROM earned) AS earned, (SELECT tier_id FROM move) AS to_tier,
       (SELECT count(*) FROM account) AS updated""").bindparams(
    *[bindparam(name, type_=UTCDateTime()) for name in ("now", "occurred_at")])


def _stamp(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def earn_one(interaction_id: int, now: dt.datetime, settings: LoyaltySettings) -> set[int]:
    """Post what one recorded interaction earns (PostgreSQL; inside the caller's
    transaction); the members who earned (none or its customer)."""
    from plugins.loyalty.earning import points_for

    rows = db.session.execute(_READ, {"interaction_id": interaction_id}).all()
    if not rows:
        return set()
    customer_id, occurred_at, amount = rows[0][0], rows[0][1], rows[0][2]
    member, held_tier, tiers = rows[0][11], rows[0][12], rows[0][13] or []
    rules: list[dict[str, Any]] = []
    for (_, _, _, rule_id, rate, bonus, rounding, cap, period, months, multiplier, *_rest
         ) in rows:
        points = points_for(_money(amount), _money(rate), bonus,
                            _money(multiplier) if multiplier is not None else Decimal(1),
                            Rounding(rounding))
        if points <= 0:
            continue
        start = end = None
        if cap is not None and period is not None:
            start, end = period_bounds(occurred_at, CapPeriod(period), settings.timezone)
        rules.append({
            "rule_id": rule_id, "points": points, "cap_points": cap,
            "period_start": _stamp(start), "period_end": _stamp(end),
            "expires_at": _stamp(add_months(occurred_at, months, settings.timezone)
                                 if months else None)})
    if not rules:
        return set()
    if not member:
        # Open and lock the account first: the next statement must read caps and
        # qualifying points under the lock (as the batch path's open_accounts does).
        ledger.open_accounts([customer_id], now)
    thresholds = {tier_id: threshold for tier_id, threshold, _, _ in tiers}
    held_threshold = thresholds.get(held_tier, -1) if held_tier is not None else -1
    windows = [{"tier_id": tier_id, "threshold": threshold,
                "start": add_months(now, -window, settings.timezone).isoformat()}
               for tier_id, threshold, window, active in tiers if active]
    earned, to_tier, _ = db.session.execute(_WRITE, {
        "rules": json.dumps(rules), "tiers": json.dumps(windows), "customer_id": customer_id,
        "interaction_id": interaction_id, "occurred_at": occurred_at, "now": now,
        "held_tier": held_tier, "held_threshold": held_threshold,
        "reason": TierChangeReason.EARNED.value}).one()
    if not earned:
        return set()
    moves: Sequence[dict[str, object]] = [] if to_tier is None else [{
        "customer_id": customer_id, "from_tier_id": held_tier, "to_tier_id": to_tier,
        "reason": TierChangeReason.EARNED}]
    loyalty_audit.points_earned({customer_id: int(earned)}, moves)
    return {customer_id}


def _money(value: Any) -> Decimal | None:
    """A Money column read as raw units of 10^-4 (the text query skips the type)."""
    return None if value is None else Decimal(int(value)) / Decimal(10_000)


__all__ = ["earn_one"]
