"""Configuring the programme: earn rules, tiers and rewards (create, update, retire).

Changing a rule never rewrites history. Entries already written keep their points; and
when the terms of a rule already in force change (rate, bonus, cap, kind, ...), the rule
ends now and a new version with the new terms starts now (``supersedes`` links them), so
an interaction recorded later but dated earlier still earns under the terms of its date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import select

from core.app import rapport
from core.db import db, utcnow
from core.errors import ErrorCode, UserError
from core.services import load, not_found, transaction

from plugins.loyalty.config import loyalty_settings
from plugins.loyalty.errors import LoyaltyErrorCode
from plugins.loyalty.models import EarnRule, Reward, Tier
from plugins.loyalty.schemas import MAX_ID, EarnRuleSchema, RewardSchema, TierSchema

#: Fields of a rule that decide how many points an interaction earns.
RULE_TERMS = ("kind", "currency", "points_per_unit", "rounding", "minimum_amount",
              "bonus_points", "cap_points", "cap_period", "expiry_months")
RULE_FIELDS = ("name", "description", *RULE_TERMS, "valid_from", "valid_until")
REWARD_FIELDS = ("name", "description", "point_cost", "stock", "valid_from", "valid_until")

M = TypeVar("M", EarnRule, Tier, Reward)


def _earn_rule_schema() -> EarnRuleSchema:
    state = rapport()
    return EarnRuleSchema(kinds=set(state.interaction_kinds), monetary_kinds=state.monetary_kinds)


def _get(model: type[M], ident: int, what: str) -> M:
    # The GraphQL types of EarnRule, Tier and Reward are LoyaltyEarnRule, ...
    type_name = f"Loyalty{model.__name__}"
    if not 0 < ident <= MAX_ID:  # no such row; the driver would overflow on it
        raise not_found(what, ident, type_name=type_name)
    row = db.session.get(model, ident, with_for_update=True)
    if row is None:
        raise not_found(what, ident, type_name=type_name)
    if row.retired_at is not None:
        raise UserError.single(f"This {what} is retired and can no longer change.",
                               LoyaltyErrorCode.RETIRED, "id")
    return row


def _fields(row: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """A row's current values as schema input (enums by value)."""
    values = {name: getattr(row, name) for name in names}
    return {k: getattr(v, "value", v) for k, v in values.items()}


# --- Earn rules ----------------------------------------------------------------------------


def create_earn_rule(raw: Mapping[str, Any]) -> EarnRule:
    """A new rule; it starts now unless ``valid_from`` says otherwise, and its points expire
    after ``RAPPORT_LOYALTY_EXPIRY_MONTHS`` unless ``expiry_months`` is given (null: never)."""
    now = utcnow()
    data = load(_earn_rule_schema(), {
        "valid_from": now, "expiry_months": loyalty_settings().default_expiry_months, **raw})
    with transaction():
        rule = EarnRule(**data, created_at=now, updated_at=now)
        db.session.add(rule)
    return rule


def update_earn_rule(rule_id: int, raw: Mapping[str, Any]) -> EarnRule:
    """Change a rule; returns the rule as it now stands (a new version if its terms changed
    while it was in force)."""
    now = utcnow()
    with transaction():
        rule = _get(EarnRule, rule_id, "earn rule")
        data = load(_earn_rule_schema(), {**_fields(rule, RULE_FIELDS), **raw})
        if rule.valid_from > now:
            _assign(rule, data, now)
            return rule
        if data["valid_from"] != rule.valid_from:
            raise UserError.single("The rule is already in force: its start cannot move (that "
                                   "would change what past interactions earn).",
                                   ErrorCode.NOT_ALLOWED, "validFrom")
        if rule.valid_until is not None and rule.valid_until <= now:
            raise UserError.single("This rule's window has ended; create a new rule.",
                                   ErrorCode.NOT_ALLOWED, "id")
        if data["valid_until"] is not None and data["valid_until"] < now:
            raise UserError.single("A rule in force cannot end in the past; retire it to end "
                                   "it now.", ErrorCode.NOT_ALLOWED, "validUntil")
        if all(data[k] == getattr(rule, k) for k in RULE_TERMS):
            _assign(rule, data, now)
            return rule
        successor = EarnRule(**{**data, "valid_from": now}, supersedes_id=rule.id,
                             created_at=now, updated_at=now)
        rule.valid_until = now
        rule.updated_at = now
        db.session.add(successor)
    return successor


def retire_earn_rule(rule_id: int) -> EarnRule:
    """Stop the rule now; interactions dated before now still earn under it."""
    now = utcnow()
    with transaction():
        rule = _get(EarnRule, rule_id, "earn rule")
        end = now if rule.valid_until is None else min(rule.valid_until, now)
        rule.valid_until = max(rule.valid_from, end)
        rule.retired_at = now
        rule.updated_at = now
    return rule


def _assign(row: Any, data: Mapping[str, Any], now: dt.datetime) -> None:
    for key, value in data.items():
        setattr(row, key, value)
    row.updated_at = now


# --- Tiers ---------------------------------------------------------------------------------


def _check_tier_unique(data: Mapping[str, Any], tier_id: int | None) -> None:
    others = db.session.execute(select(Tier.name, Tier.threshold_points).where(
        Tier.retired_at.is_(None), Tier.id != (tier_id or 0))).all()
    if data.get("name") is not None and data["name"].casefold() in {
            name.casefold() for name, _ in others}:
        raise UserError.single(f"A tier named {data['name']!r} exists.", ErrorCode.UNIQUE,
                               "name")
    if data.get("threshold_points") in {threshold for _, threshold in others}:
        raise UserError.single("Another tier has this threshold; tiers are ordered by their "
                               "thresholds.", ErrorCode.UNIQUE, "thresholdPoints")


def create_tier(raw: Mapping[str, Any]) -> Tier:
    data = load(TierSchema(), raw)
    now = utcnow()
    with transaction():
        _check_tier_unique(data, None)
        tier = Tier(**data, created_at=now, updated_at=now)
        db.session.add(tier)
    return tier


def update_tier(tier_id: int, raw: Mapping[str, Any]) -> Tier:
    """Change a tier in place: members keep it, new thresholds apply from the next earning
    (up) or re-evaluation (down); a new multiplier applies to points earned from now on."""
    data = load(TierSchema(), raw, partial=True)
    with transaction():
        tier = _get(Tier, tier_id, "tier")
        _check_tier_unique(data, tier.id)
        _assign(tier, data, utcnow())
    return tier


def retire_tier(tier_id: int) -> Tier:
    """No one enters the tier any more; its members move at the next re-evaluation."""
    with transaction():
        tier = _get(Tier, tier_id, "tier")
        tier.retired_at = tier.updated_at = utcnow()
    return tier


# --- Rewards -------------------------------------------------------------------------------


def create_reward(raw: Mapping[str, Any]) -> Reward:
    data = load(RewardSchema(), raw)
    now = utcnow()
    with transaction():
        reward = Reward(**data, created_at=now, updated_at=now)
        db.session.add(reward)
    return reward


def update_reward(reward_id: int, raw: Mapping[str, Any]) -> Reward:
    """Change a reward (``stock`` sets the units left; null: unlimited)."""
    with transaction():
        reward = _get(Reward, reward_id, "reward")
        data = load(RewardSchema(), {**_fields(reward, REWARD_FIELDS), **raw})
        _assign(reward, data, utcnow())
    return reward


def retire_reward(reward_id: int) -> Reward:
    with transaction():
        reward = _get(Reward, reward_id, "reward")
        reward.retired_at = reward.updated_at = utcnow()
    return reward


# --- Reads ---------------------------------------------------------------------------------


def earn_rules(include_retired: bool = False) -> list[EarnRule]:
    stmt = select(EarnRule).order_by(EarnRule.kind, EarnRule.valid_from, EarnRule.id)
    if not include_retired:
        stmt = stmt.where(EarnRule.retired_at.is_(None))
    return list(db.session.scalars(stmt))


def tiers(include_retired: bool = False) -> list[Tier]:
    stmt = select(Tier).order_by(Tier.threshold_points, Tier.id)
    if not include_retired:
        stmt = stmt.where(Tier.retired_at.is_(None))
    return list(db.session.scalars(stmt))


def rewards(include_retired: bool = False) -> list[Reward]:
    stmt = select(Reward).order_by(Reward.point_cost, Reward.id)
    if not include_retired:
        stmt = stmt.where(Reward.retired_at.is_(None))
    return list(db.session.scalars(stmt))
