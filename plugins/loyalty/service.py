"""Members' points: redeem, adjust, expire, re-evaluate tiers; merge, erase, export; reads.

Every function that moves value takes an idempotency key (see ``ledger.once``) and runs in
one transaction. Plain functions: the GraphQL mutations and the CLI commands call them.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update

from core.db import db, utcnow
from core.ids import global_id
from core.errors import UserError
from core.services import load, not_found, transaction

from plugins.loyalty import audit as loyalty_audit, ledger, tiers
from plugins.loyalty.errors import LoyaltyErrorCode
from plugins.loyalty.models import (
    Account, EntryKind, LedgerEntry, Reward, Tier, TierChange, TierChangeReason,
)
from plugins.loyalty.schemas import AdjustPointsSchema, RedeemPointsSchema, RedeemRewardSchema

_rewards = Reward.__table__
# Stateless schemas, built once (building one copies its fields: a tenth of a millisecond
# on the redemption path).
_REDEEM_POINTS = RedeemPointsSchema()
_REDEEM_REWARD = RedeemRewardSchema()


# --- Moving value --------------------------------------------------------------------------


def audited(entry: LedgerEntry) -> LedgerEntry:
    """``entry`` once its audit entry and event are written (in its transaction). Debits
    write theirs themselves (``ledger.debit(..., audited=True)``: one statement with the
    debit on PostgreSQL)."""
    loyalty_audit.entry_recorded(entry)
    return entry


def redeem_points(raw: Mapping[str, Any], *, actor_id: int | None = None) -> LedgerEntry:
    """Spend a number of points; ``INSUFFICIENT_POINTS`` when the balance is short."""
    data = load(_REDEEM_POINTS, raw)
    digest = ledger.fingerprint("redeem_points", data)

    def run() -> LedgerEntry:
        now = utcnow()
        return ledger.debit(LedgerEntry(
            kind=EntryKind.REDEEM, customer_id=data["customer_id"], points=-data["points"],
            occurred_at=now, reason=data.get("reason"), actor_id=actor_id,
            idempotency_key=data["idempotency_key"], request_fingerprint=digest), now,
            audited=True)

    return ledger.once(data["idempotency_key"], digest, data["customer_id"], run)


def redeem_reward(raw: Mapping[str, Any], *, actor_id: int | None = None) -> LedgerEntry:
    """Exchange points for ``quantity`` units of a reward; its stock goes down atomically."""
    data = load(_REDEEM_REWARD, raw)
    digest = ledger.fingerprint("redeem_reward", data)

    def run() -> LedgerEntry:
        now = utcnow()
        reward = db.session.get(Reward, data["reward_id"])
        if reward is None:
            raise not_found("reward", data["reward_id"], "rewardId", type_name="LoyaltyReward")
        if reward.retired_at is not None:
            raise UserError.single(f"The reward {reward.name!r} is retired.",
                                   LoyaltyErrorCode.REWARD_RETIRED, "rewardId")
        if not (reward.valid_from is None or reward.valid_from <= now) or not (
                reward.valid_until is None or now < reward.valid_until):
            raise UserError.single(f"The reward {reward.name!r} is not offered at this time.",
                                   LoyaltyErrorCode.REWARD_NOT_AVAILABLE, "rewardId")
        quantity = data["quantity"]
        if reward.stock is not None:
            left = db.session.execute(
                update(_rewards).where(_rewards.c.id == reward.id,
                                       _rewards.c.stock >= quantity)
                .values(stock=_rewards.c.stock - quantity, updated_at=now)
                .returning(_rewards.c.stock)).first()
            if left is None:
                raise UserError.single(f"The reward {reward.name!r} is out of stock.",
                                       LoyaltyErrorCode.REWARD_OUT_OF_STOCK, "rewardId")
            db.session.expire(reward, ["stock", "updated_at"])
        return ledger.debit(LedgerEntry(
            kind=EntryKind.REDEEM, customer_id=data["customer_id"],
            points=-reward.point_cost * quantity, occurred_at=now, reason=data.get("reason"),
            reward_id=reward.id, actor_id=actor_id, details={"quantity": quantity},
            idempotency_key=data["idempotency_key"], request_fingerprint=digest), now,
            audited=True)

    return ledger.once(data["idempotency_key"], digest, data["customer_id"], run)


def adjust_points(raw: Mapping[str, Any], *, actor_id: int | None = None) -> LedgerEntry:
    """Add (a new lot, expiring at ``expires_at`` or never) or remove points, with a reason.
    A removal never overdraws: ``INSUFFICIENT_POINTS`` when the balance is short."""
    data = load(AdjustPointsSchema(now=utcnow()), raw)
    digest = ledger.fingerprint("adjust_points", data)

    def run() -> LedgerEntry:
        now = utcnow()
        entry = LedgerEntry(
            kind=EntryKind.ADJUST, customer_id=data["customer_id"], points=data["points"],
            occurred_at=now, reason=data["reason"], actor_id=actor_id,
            expires_at=data.get("expires_at"), idempotency_key=data["idempotency_key"],
            request_fingerprint=digest)
        if entry.points < 0:
            return ledger.debit(entry, now, audited=True)
        ledger.active_customer(entry.customer_id)
        return audited(ledger.credit(entry, now))

    return ledger.once(data["idempotency_key"], digest, data["customer_id"], run)


# --- Jobs ----------------------------------------------------------------------------------


@dataclass
class ExpiryRun:
    lots: int = 0
    points: int = 0
    customers: int = 0


def _due(as_of: dt.datetime) -> tuple[Any, ...]:
    return (LedgerEntry.expires_at <= as_of, LedgerEntry.remaining > 0)


def lots_due(as_of: dt.datetime) -> int:
    return db.session.scalar(select(func.count()).where(*_due(as_of))) or 0


def expire_lots(customer_ids: Sequence[int], as_of: dt.datetime, now: dt.datetime) -> ExpiryRun:
    """Write an expire entry for each lot of these customers past its expiry (caller's
    transaction). Each entry is dated at its lot's expiry, whenever the job runs. Debits
    write off their member's lots the same way (``ledger.write_expiries``)."""
    ledger.lock_accounts(customer_ids)
    lots = ledger.due_lots(customer_ids, as_of)
    if not lots:
        return ExpiryRun()
    expired = ledger.write_expiries(lots, now)
    ledger.add_to_balances({c: -points for c, points in expired.items()}, now)
    return ExpiryRun(len(lots), sum(expired.values()), len(expired))


def expire_points(as_of: dt.datetime | None = None, *, batch_size: int = 500,
                  on_progress: Callable[[int], None] | None = None) -> ExpiryRun:
    """Expire every lot past its expiry at ``as_of`` (default now), ``batch_size``
    members per transaction; ``on_progress`` gets the number of lots of each batch."""
    now = utcnow()
    as_of = as_of or now
    total = ExpiryRun()
    while True:
        with transaction():
            customers = db.session.scalars(
                select(LedgerEntry.customer_id).where(*_due(as_of)).distinct()
                .order_by(LedgerEntry.customer_id).limit(batch_size)).all()
            done = expire_lots(customers, as_of, now) if customers else ExpiryRun()
            loyalty_audit.points_expired(done.lots, done.points, done.customers)
        if not customers:
            return total
        total.lots += done.lots
        total.points += done.points
        total.customers += done.customers
        if on_progress:
            on_progress(done.lots)


def reevaluate_tiers(*, batch_size: int = 1000,
                     on_progress: Callable[[int], None] | None = None) -> int:
    """Move every member to the tier their qualifying points give today, down included;
    returns how many moved. ``batch_size`` members per transaction."""
    now = utcnow()
    moved = 0
    after = -1
    while True:
        with transaction():
            chunk = db.session.scalars(
                select(Account.customer_id).where(Account.customer_id > after)
                .order_by(Account.customer_id).limit(batch_size)).all()
            if chunk:
                moved += tiers.evaluate(chunk, now, TierChangeReason.REEVALUATION,
                                        allow_down=True)
        if not chunk:
            return moved
        after = chunk[-1]
        if on_progress:
            on_progress(len(chunk))


def member_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Account)) or 0


# --- Customer lifecycle (called from core's hooks, inside core's transaction) -----------------


def merge_accounts(survivor_id: int, merged_ids: Sequence[int]) -> None:
    """Move the merged customers' entries, lots and tier history to the survivor; its
    balance becomes the sum, its tier the best of theirs; a merge entry records it."""
    now = utcnow()
    held = dict(db.session.execute(select(Account.customer_id, Account.balance).where(
        Account.customer_id.in_(merged_ids))).all())
    if not held:
        return
    ledger.open_accounts([survivor_id], now)
    balances = ledger.lock_accounts([survivor_id, *held])
    tier_of = dict(db.session.execute(
        select(Account.customer_id, Tier).join(Tier, Tier.id == Account.tier_id)
        .where(Account.customer_id.in_([survivor_id, *held]))).all())
    moved = sum(balances[c] for c in held)
    db.session.execute(update(LedgerEntry).where(LedgerEntry.customer_id.in_(held))
                       .values(customer_id=survivor_id))
    db.session.execute(update(TierChange).where(TierChange.customer_id.in_(held))
                       .values(customer_id=survivor_id))
    db.session.execute(delete(Account).where(Account.customer_id.in_(held)))
    ledger.add_to_balances({survivor_id: moved}, now)
    ledger.insert_entries([{
        "customer_id": survivor_id, "kind": EntryKind.MERGE, "points": 0, "occurred_at": now,
        "recorded_at": now, "details": {"merged_customer_ids": sorted(held),
                                        "points_moved": moved}}])
    best = max(tier_of.values(), key=lambda t: t.threshold_points, default=None)
    current = tier_of.get(survivor_id)
    if best is not None and best is not current:
        tiers.record_moves([{"customer_id": survivor_id,
                             "from_tier_id": current.id if current else None,
                             "to_tier_id": best.id, "changed_at": now,
                             "reason": TierChangeReason.MERGE, "qualifying_points": 0}], now)
    tiers.evaluate([survivor_id], now, TierChangeReason.MERGE, allow_down=False)


def erase_personal_data(customer_id: int) -> dict[str, int] | None:
    """Clear the free-text reasons; the entries stay (anonymous) so totals do not change."""
    kept = db.session.scalar(select(func.count()).where(
        LedgerEntry.customer_id == customer_id)) or 0
    if not kept:
        return None
    cleared = db.session.execute(update(LedgerEntry).where(
        LedgerEntry.customer_id == customer_id, LedgerEntry.reason.is_not(None))
        .values(reason=None))
    return {"reasons_cleared": cleared.rowcount,  # type: ignore[attr-defined]
            "entries_kept": kept}


def export_section(customer_id: int) -> dict[str, Any] | None:
    account = db.session.get(Account, customer_id)
    if account is None:
        return None
    tier_names = dict(db.session.execute(select(Tier.id, Tier.name)).all())
    entries = db.session.scalars(select(LedgerEntry).where(
        LedgerEntry.customer_id == customer_id).order_by(LedgerEntry.occurred_at,
                                                         LedgerEntry.id)).all()
    changes = db.session.scalars(select(TierChange).where(
        TierChange.customer_id == customer_id).order_by(TierChange.changed_at)).all()

    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "balance": account.balance,
        "tier": tier_names.get(account.tier_id) if account.tier_id else None,
        "memberSince": iso(account.created_at),
        "entries": [{
            "id": global_id("LoyaltyLedgerEntry", e.id), "kind": e.kind.value,
            "points": e.points, "occurredAt": iso(e.occurred_at), "reason": e.reason,
            "interactionId": None if e.interaction_id is None
            else global_id("Interaction", e.interaction_id),
            "rewardId": None if e.reward_id is None else global_id("LoyaltyReward", e.reward_id),
            "expiresAt": iso(e.expires_at), "remaining": e.remaining,
            "shortfall": e.shortfall} for e in entries],
        "tierHistory": [{
            "from": tier_names.get(c.from_tier_id) if c.from_tier_id else None,
            "to": tier_names.get(c.to_tier_id) if c.to_tier_id else None,
            "changedAt": iso(c.changed_at), "reason": c.reason.value} for c in changes],
    }


# --- Reads (batched: one query for a list of members) ----------------------------------------


@dataclass(frozen=True)
class MemberAccount:
    """An account as clients read it. ``balance`` is the spendable balance: the stored
    balance minus the points of lots already past expiry that neither the expiry job nor
    a debit has written off yet (reads never write)."""

    account: Account
    balance: int


def accounts_of(customer_ids: Sequence[int], now: dt.datetime | None = None
                ) -> dict[int, MemberAccount]:
    """The members' accounts with their spendable balance at ``now``, in one query."""
    spendable = Account.balance - ledger.overdue_points(Account.customer_id, now or utcnow())
    return {account.customer_id: MemberAccount(account, int(balance))
            for account, balance in db.session.execute(
                select(Account, spendable).where(Account.customer_id.in_(customer_ids)))}


def expiring_points(customer_ids: Sequence[int], within: dt.timedelta,
                    now: dt.datetime) -> dict[int, int]:
    """Points of each member's lots that expire after now and within ``within``."""
    rows = db.session.execute(
        select(LedgerEntry.customer_id, func.sum(LedgerEntry.remaining))
        .where(LedgerEntry.customer_id.in_(customer_ids), LedgerEntry.remaining > 0,
               LedgerEntry.expires_at > now, LedgerEntry.expires_at <= now + within)
        .group_by(LedgerEntry.customer_id))
    return {customer_id: int(points) for customer_id, points in rows}


def tier_history(customer_ids: Sequence[int]) -> dict[int, list[TierChange]]:
    found: dict[int, list[TierChange]] = defaultdict(list)
    for change in db.session.scalars(select(TierChange).where(
            TierChange.customer_id.in_(customer_ids))
            .order_by(TierChange.changed_at, TierChange.id)):
        found[change.customer_id].append(change)
    return found


__all__ = [
    "ExpiryRun", "MemberAccount", "accounts_of", "adjust_points", "erase_personal_data", "expire_lots",
    "expire_points", "expiring_points", "export_section", "lots_due", "member_count",
    "merge_accounts", "redeem_points", "redeem_reward", "reevaluate_tiers", "tier_history",
]
