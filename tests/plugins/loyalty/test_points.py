"""Redeeming, adjusting and expiring points; idempotency; tiers; concurrent redemptions."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.db import db
from core.errors import ErrorCode, UserError
from core.services.customers import erase_customer
from plugins.loyalty import programme, service
from plugins.loyalty.errors import LoyaltyErrorCode
from plugins.loyalty.models import Account, EntryKind, LedgerEntry, LotUse, Reward, TierChange
from tests.plugins.loyalty.conftest import (
    NOW, assert_ledger_invariants, balance, customer, days_ago, purchase, usd_rule,
)


def _code(exc: pytest.ExceptionInfo[UserError]) -> tuple[str, str | None]:
    [error] = exc.value.errors
    return error.code, error.field


def _ledger_size() -> int:
    return db.session.scalar(select(func.count()).select_from(LedgerEntry)) or 0


@pytest.fixture
def member(loyalty_app: Flask) -> int:
    """A member with 100 points: a lot of 60 expiring in 10 days, one of 40 in 300 days."""
    ada = customer()
    service.adjust_points({"customer_id": ada, "points": 40, "reason": "welcome",
                           "idempotency_key": "seed-2",
                           "expires_at": (NOW + dt.timedelta(days=300)).isoformat()})
    service.adjust_points({"customer_id": ada, "points": 60, "reason": "goodwill",
                           "idempotency_key": "seed-1",
                           "expires_at": (NOW + dt.timedelta(days=10)).isoformat()})
    return ada


def test_redeem_spends_the_soonest_expiring_lots_first(member: int) -> None:
    entry = service.redeem_points({"customer_id": member, "points": 70,
                                   "idempotency_key": "k1", "reason": "voucher"})
    assert (entry.kind, entry.points, entry.reason) == (EntryKind.REDEEM, -70, "voucher")
    assert balance(member) == 30
    uses = db.session.execute(select(LedgerEntry.points, LotUse.points).join(
        LotUse, LotUse.lot_id == LedgerEntry.id).where(LotUse.entry_id == entry.id)
        .order_by(LedgerEntry.expires_at)).all()
    assert uses == [(60, 60), (40, 10)]
    assert_ledger_invariants()


def test_insufficient_points_write_nothing(member: int) -> None:
    before = _ledger_size()
    with pytest.raises(UserError) as exc:
        service.redeem_points({"customer_id": member, "points": 101, "idempotency_key": "k"})
    assert _code(exc) == (LoyaltyErrorCode.INSUFFICIENT_POINTS, "points")
    assert "has 100 points; 101 are needed" in str(exc.value)
    assert (balance(member), _ledger_size()) == (100, before)
    # the key was not used up by the failure
    assert service.redeem_points({"customer_id": member, "points": 100,
                                  "idempotency_key": "k"}).points == -100


def test_a_replay_returns_the_first_result_and_reuse_is_a_conflict(member: int) -> None:
    first = service.redeem_points({"customer_id": member, "points": 30,
                                   "idempotency_key": "order-7"})
    again = service.redeem_points({"customer_id": member, "points": 30,
                                   "idempotency_key": "order-7"})
    assert again.id == first.id
    assert balance(member) == 70
    with pytest.raises(UserError) as exc:
        service.redeem_points({"customer_id": member, "points": 31,
                               "idempotency_key": "order-7"})
    assert _code(exc) == (LoyaltyErrorCode.IDEMPOTENCY_CONFLICT, "idempotencyKey")
    with pytest.raises(UserError) as exc:  # same key, another operation
        service.adjust_points({"customer_id": member, "points": -30, "reason": "x",
                               "idempotency_key": "order-7"})
    assert _code(exc)[0] == LoyaltyErrorCode.IDEMPOTENCY_CONFLICT
    assert balance(member) == 70
    assert_ledger_invariants()


@pytest.mark.parametrize(("raw", "code", "field"), [
    ({"points": 0}, ErrorCode.INVALID, "points"),
    ({"points": -5}, ErrorCode.INVALID, "points"),
    ({"points": None}, ErrorCode.REQUIRED, "points"),
    ({"idempotency_key": ""}, ErrorCode.INVALID, "idempotencyKey"),
    ({"customer_id": 999_999}, ErrorCode.NOT_FOUND, "customerId"),
])
def test_bad_redemptions_are_user_errors(member: int, raw: dict[str, Any], code: str,
                                         field: str) -> None:
    before = _ledger_size()
    with pytest.raises(UserError) as exc:
        service.redeem_points({"customer_id": member, "points": 5, "idempotency_key": "b",
                               **raw})
    assert _code(exc) == (code, field)
    assert (_ledger_size(), balance(member)) == (before, 100)


def test_adjustments(member: int) -> None:
    added = service.adjust_points({"customer_id": member, "points": 25, "reason": "apology",
                                   "idempotency_key": "a1"})
    assert (added.points, added.remaining, added.expires_at) == (25, 25, None)
    removed = service.adjust_points({"customer_id": member, "points": -125, "reason": "fraud",
                                     "idempotency_key": "a2"})
    assert removed.points == -125 and balance(member) == 0
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"points": -1, "reason": "r"}, LoyaltyErrorCode.INSUFFICIENT_POINTS, "points"),
        ({"points": 0, "reason": "r"}, ErrorCode.INVALID, "points"),
        ({"points": 5}, ErrorCode.REQUIRED, "reason"),
        ({"points": -5, "reason": "r", "expires_at": (NOW + dt.timedelta(days=9)).isoformat()},
         ErrorCode.INVALID, "expiresAt"),
        ({"points": 5, "reason": "r", "expires_at": days_ago(1).isoformat()},
         ErrorCode.INVALID, "expiresAt"),
    ]
    for raw, code, field in cases:
        with pytest.raises(UserError) as exc:
            service.adjust_points({"customer_id": member, "idempotency_key": "bad", **raw})
        assert _code(exc) == (code, field), raw
    assert balance(member) == 0
    assert_ledger_invariants()


def test_rewards_stock_retirement_and_window(member: int) -> None:
    mug = programme.create_reward({"name": "Mug", "point_cost": 30, "stock": 2})
    entry = service.redeem_reward({"customer_id": member, "reward_id": mug.id,
                                   "idempotency_key": "m1"})
    assert (entry.points, entry.reward_id, entry.details) == (-30, mug.id, {"quantity": 1})
    with pytest.raises(UserError) as exc:  # 2 more units than stock left
        service.redeem_reward({"customer_id": member, "reward_id": mug.id, "quantity": 2,
                               "idempotency_key": "m2"})
    assert _code(exc) == (LoyaltyErrorCode.REWARD_OUT_OF_STOCK, "rewardId")
    poster = programme.create_reward({"name": "Poster", "point_cost": 500, "stock": 5})
    with pytest.raises(UserError) as exc:  # stock is given back when the points are short
        service.redeem_reward({"customer_id": member, "reward_id": poster.id,
                               "idempotency_key": "p1"})
    assert _code(exc)[0] == LoyaltyErrorCode.INSUFFICIENT_POINTS
    db.session.expire_all()
    assert db.session.get(Reward, poster.id).stock == 5  # type: ignore[union-attr]
    assert db.session.get(Reward, mug.id).stock == 1  # type: ignore[union-attr]
    programme.retire_reward(mug.id)
    with pytest.raises(UserError) as exc:
        service.redeem_reward({"customer_id": member, "reward_id": mug.id,
                               "idempotency_key": "m3"})
    assert _code(exc) == (LoyaltyErrorCode.REWARD_RETIRED, "rewardId")
    later = programme.create_reward({"name": "Later", "point_cost": 1,
                                     "valid_from": (NOW + dt.timedelta(days=3)).isoformat()})
    with pytest.raises(UserError) as exc:
        service.redeem_reward({"customer_id": member, "reward_id": later.id,
                               "idempotency_key": "l1"})
    assert _code(exc) == (LoyaltyErrorCode.REWARD_NOT_AVAILABLE, "rewardId")
    # a replay of the first redemption still returns it, though the mug is retired now
    assert service.redeem_reward({"customer_id": member, "reward_id": mug.id,
                                  "idempotency_key": "m1"}).id == entry.id
    assert balance(member) == 70
    assert_ledger_invariants()


def test_erased_customers_keep_their_entries_but_cannot_move_points(member: int) -> None:
    service.redeem_points({"customer_id": member, "points": 10, "reason": "for Ada's cat",
                           "idempotency_key": "e1"})
    report = erase_customer(member).reports["loyalty"]
    assert report == {"reasons_cleared": 3, "entries_kept": 3}
    assert db.session.scalars(select(LedgerEntry.reason).where(
        LedgerEntry.customer_id == member)).all() == [None, None, None]
    assert balance(member) == 90
    with pytest.raises(UserError) as exc:
        service.redeem_points({"customer_id": member, "points": 10, "idempotency_key": "e2"})
    assert _code(exc) == (ErrorCode.NOT_ALLOWED, "customerId")


def test_expiry_writes_entries_dated_at_the_lots_expiry(member: int) -> None:
    service.redeem_points({"customer_id": member, "points": 50, "idempotency_key": "x"})
    progress: list[int] = []
    assert service.lots_due(NOW + dt.timedelta(days=11)) == 1
    run = service.expire_points(NOW + dt.timedelta(days=11), on_progress=progress.append)
    assert (run.lots, run.points, run.customers, progress) == (1, 10, 1, [1])
    expired = db.session.scalar(select(LedgerEntry).where(
        LedgerEntry.kind == EntryKind.EXPIRE))
    assert expired is not None and expired.points == -10
    assert expired.occurred_at == NOW + dt.timedelta(days=10)
    assert balance(member) == 40
    assert service.expire_points(NOW + dt.timedelta(days=11)).lots == 0  # nothing twice
    assert service.expiring_points([member], dt.timedelta(days=400), NOW) == {member: 40}
    assert service.expiring_points([member], dt.timedelta(days=30), NOW) == {}
    assert_ledger_invariants()


def test_tiers_move_up_at_once_and_down_at_reevaluation(loyalty_app: Flask) -> None:
    usd_rule()
    silver = programme.create_tier({"name": "Silver", "threshold_points": 100})
    gold = programme.create_tier({"name": "Gold", "threshold_points": 300, "window_months": 6})
    ada, bob = customer("Ada"), customer("Bob")
    purchase(ada, "320", at=days_ago(200))  # Gold's 6-month window has passed by now
    purchase(bob, "150", at=days_ago(20))
    assert dict(db.session.execute(select(Account.customer_id, Account.tier_id)).all()) == {
        ada: silver.id, bob: silver.id}  # Ada earned late for Gold's window
    service.adjust_points({"customer_id": ada, "points": 500, "reason": "no tier effect",
                           "idempotency_key": "t1"})
    purchase(ada, "300", at=days_ago(1))
    assert db.session.get(Account, ada).tier_id == gold.id  # type: ignore[union-attr]
    programme.update_tier(gold.id, {"threshold_points": 1000})
    programme.retire_tier(silver.id)
    assert service.reevaluate_tiers() == 2
    db.session.expire_all()
    assert dict(db.session.execute(select(Account.customer_id, Account.tier_id)).all()) == {
        ada: None, bob: None}
    history = db.session.execute(select(TierChange.customer_id, TierChange.to_tier_id,
                                        TierChange.reason).order_by(TierChange.id)).all()
    assert [(c, t, r.value) for c, t, r in history] == [
        (ada, silver.id, "earned"), (bob, silver.id, "earned"), (ada, gold.id, "earned"),
        (ada, None, "reevaluation"), (bob, None, "reevaluation")]
    assert service.reevaluate_tiers() == 0


@pytest.mark.postgres_only
def test_concurrent_redemptions_never_overdraw(loyalty_app: Flask, dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("SQLite serialises writers: concurrency only means something on PostgreSQL")
    ada = customer()
    for n in range(10):  # 10 lots of 50 points
        service.adjust_points({"customer_id": ada, "points": 50, "reason": "seed",
                               "idempotency_key": f"seed-{n}"})
    db.session.commit()
    threads, attempts_each, points = 16, 6, 7  # demand 672 > balance 500
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(n: int) -> None:
        with loyalty_app.app_context():
            start.wait()
            for attempt in range(attempts_each):
                try:
                    service.redeem_points({"customer_id": ada, "points": points,
                                           "idempotency_key": f"w{n}-{attempt}"})
                    result = "ok"
                except UserError as exc:
                    result = exc.errors[0].code
                with lock:
                    outcomes.append(result)
            db.session.remove()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert len(outcomes) == threads * attempts_each
    succeeded = outcomes.count("ok")
    assert set(outcomes) == {"ok", LoyaltyErrorCode.INSUFFICIENT_POINTS}
    assert succeeded == 500 // points  # every point that could be spent was, none more
    db.session.expire_all()
    assert balance(ada) == 500 - succeeded * points
    redeemed = db.session.scalar(select(func.count()).where(
        LedgerEntry.kind == EntryKind.REDEEM))
    assert redeemed == succeeded
    assert_ledger_invariants()
