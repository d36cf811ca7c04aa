"""Earning on interactions (one, or a batch with set-based SQL) and refund reversals."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask
from sqlalchemy import select

from core.db import db
from core.services.interactions import record_interactions
from plugins.loyalty import programme
from plugins.loyalty.config import add_months
from plugins.loyalty.models import Account, EntryKind, LedgerEntry, TierChange
from plugins.loyalty.service import redeem_points
from tests.conftest import AppFactory, count_statements
from tests.plugins.loyalty.conftest import (
    NOW, assert_ledger_invariants, balance, customer, days_ago, entries, purchase, refund,
    usd_rule,
)


@pytest.mark.parametrize(("rounding", "points"), [("down", 12), ("nearest", 13), ("up", 13)])
def test_a_purchase_earns_by_the_rule_rounding(loyalty_app: Flask, rounding: str,
                                               points: int) -> None:
    usd_rule(rounding=rounding)
    ada = customer()
    purchase_id = purchase(ada, "12.70", at=days_ago(3))
    [lot] = db.session.scalars(select(LedgerEntry)).all()
    assert (lot.kind, lot.points, lot.remaining, lot.interaction_id) == (
        EntryKind.EARN, points, points, purchase_id)
    assert lot.occurred_at == days_ago(3)
    assert lot.expires_at == add_months(days_ago(3), 24)  # RAPPORT_LOYALTY_EXPIRY_MONTHS
    assert balance(ada) == points
    assert_ledger_invariants()


def test_rules_apply_as_in_force_at_the_interaction_date(loyalty_app: Flask) -> None:
    programme.create_earn_rule({
        "name": "Spring double", "currency": "USD", "points_per_unit": "2",
        "valid_from": days_ago(100).isoformat(), "valid_until": days_ago(50).isoformat()})
    usd_rule(minimum_amount="20")
    ada = customer()
    purchase(ada, "10", at=days_ago(75))     # spring rule only (under the minimum)
    purchase(ada, "30", at=days_ago(60))     # both: 60 + 30
    purchase(ada, "30", at=days_ago(10))     # base rule only
    purchase(ada, "30", currency="EUR", at=days_ago(10))  # no EUR rule
    assert sorted(p for _, p in entries(ada)) == [20, 30, 30, 60]
    assert balance(ada) == 140


def test_bonus_rules_for_other_kinds_and_tier_multiplier(loyalty_app: Flask) -> None:
    programme.create_earn_rule({"name": "Store visit", "kind": "visit", "bonus_points": 15,
                                "valid_from": days_ago(30).isoformat()})
    usd_rule()
    gold = programme.create_tier({"name": "Gold", "threshold_points": 100,
                                  "earn_multiplier": "1.5", "discount_percent": "10"})
    ada = customer()
    purchase(ada, "", kind="visit", at=days_ago(2))
    assert balance(ada) == 15
    purchase(ada, "100", at=days_ago(1))  # reaches Gold at once (115 qualifying points)
    account = db.session.get(Account, ada)
    assert account is not None and account.tier_id == gold.id
    [change] = db.session.scalars(select(TierChange)).all()
    assert (change.from_tier_id, change.to_tier_id, change.reason.value,
            change.qualifying_points) == (None, gold.id, "earned", 115)
    purchase(ada, "10")  # 10 x 1.5
    assert balance(ada) == 15 + 100 + 15
    assert_ledger_invariants()


def test_caps_per_period_in_the_business_time_zone(make_app: AppFactory) -> None:
    with make_app(enabled=["loyalty"], RAPPORT_TIMEZONE="Asia/Shanghai").app_context():
        march = dt.datetime(NOW.year - 1, 3, 10, 12, tzinfo=dt.timezone.utc)
        usd_rule(cap_points=50, cap_period="month", valid_from=(march - dt.timedelta(days=30))
                 .isoformat())
        ada, bob = customer("Ada"), customer("Bob")
        purchase(ada, "30", at=march)
        record_interactions([  # 30 + 40 + 5 in March: the cap leaves 20, then 0
            {"customer_id": ada, "kind": "purchase", "amount": a, "currency": "USD",
             "occurred_at": at.isoformat()}
            for a, at in (("40", march + dt.timedelta(days=1)),
                          ("5", march + dt.timedelta(days=2)),
                          # 20:00 UTC on 31 March is 1 April in Shanghai: a new month
                          ("45", march.replace(day=31, hour=20)))]
            + [{"customer_id": bob, "kind": "purchase", "amount": "80", "currency": "USD",
                "occurred_at": march.isoformat()}])
        assert sorted(p for _, p in entries(ada)) == [20, 30, 45]
        assert balance(bob) == 50
        assert_ledger_invariants()


def test_a_batch_costs_the_same_statements_whatever_its_size(loyalty_app: Flask) -> None:
    usd_rule(cap_points=1000, cap_period="day")
    programme.create_earn_rule({"name": "Calls", "kind": "call", "bonus_points": 2,
                                "valid_from": days_ago(30).isoformat()})
    programme.create_tier({"name": "Silver", "threshold_points": 20})  # the first batch
    gold = programme.create_tier({"name": "Gold", "threshold_points": 200})  # the second
    members = [customer(f"C{i}") for i in range(40)]

    def batch(per_customer: int, offset: int) -> list[dict[str, object]]:
        return [{"customer_id": c, "kind": kind, "occurred_at": days_ago(offset + n).isoformat(),
                 **({"amount": "25", "currency": "USD"} if kind == "purchase" else {})}
                for c in members for n in range(per_customer) for kind in ("purchase", "call")]

    counts = []
    for size, offset in ((1, 1), (10, 5)):
        with count_statements(loyalty_app) as statements:
            result = record_interactions(batch(size, offset))
        assert result.recorded == 2 * size * len(members)
        counts.append(sum("loyalty_" in s for s in statements))
    assert counts[0] == counts[1], counts
    assert counts[1] <= 12, counts
    assert balance(members[0]) == 11 * 27
    assert set(db.session.scalars(select(Account.tier_id))) == {gold.id}
    assert len(db.session.scalars(select(TierChange)).all()) == 80
    assert_ledger_invariants()


def test_a_full_refund_takes_back_what_the_purchase_earned(loyalty_app: Flask) -> None:
    usd_rule()
    ada = customer()
    first = purchase(ada, "80", at=days_ago(20))
    purchase(ada, "50", at=days_ago(10))
    refund(ada, first, "80", at=days_ago(5))
    assert entries(ada)[-1] == (EntryKind.REVERSE, -80)
    assert balance(ada) == 50
    # the purchase's own lot was emptied, the other one is untouched
    lots = db.session.scalars(select(LedgerEntry.remaining).where(
        LedgerEntry.kind == EntryKind.EARN).order_by(LedgerEntry.id)).all()
    assert lots == [0, 50]
    assert_ledger_invariants()


def test_partial_refunds_take_back_in_proportion_and_never_more(loyalty_app: Flask) -> None:
    usd_rule()
    ada = customer()
    bought = purchase(ada, "90", at=days_ago(20))
    for _ in range(3):
        refund(ada, bought, "30", at=days_ago(5))  # a third each: 30 + 30 + 30 points
    refund(ada, bought, "30", at=days_ago(4))      # beyond the purchase: nothing left
    assert [p for k, p in entries(ada) if k == EntryKind.REVERSE] == [-30, -30, -30]
    assert balance(ada) == 0
    assert_ledger_invariants()


def test_refund_of_spent_points_records_the_shortfall(loyalty_app: Flask) -> None:
    usd_rule()
    ada = customer()
    bought = purchase(ada, "100", at=days_ago(20))
    purchase(ada, "20", at=days_ago(15))
    redeem_points({"customer_id": ada, "points": 110, "idempotency_key": "r-1"})
    refund(ada, bought, "100", at=days_ago(1))
    reverse = db.session.scalar(select(LedgerEntry).where(
        LedgerEntry.kind == EntryKind.REVERSE))
    assert reverse is not None and (reverse.points, reverse.shortfall) == (-10, 90)
    assert balance(ada) == 0
    refund(ada, bought, "100", at=days_ago(1))  # a second refund finds nothing more owed
    assert len([k for k, _ in entries(ada) if k == EntryKind.REVERSE]) == 1
    assert_ledger_invariants()


def test_purchase_and_refund_in_one_batch(loyalty_app: Flask) -> None:
    usd_rule()
    ada = customer()
    bought = purchase(ada, "60", at=days_ago(3))
    record_interactions([
        {"customer_id": ada, "kind": "purchase", "amount": "40", "currency": "USD",
         "occurred_at": days_ago(2).isoformat()},
        {"customer_id": ada, "kind": "refund", "amount": "30", "currency": "USD",
         "refers_to_id": bought, "occurred_at": days_ago(1).isoformat()}])
    assert sorted(entries(ada)) == sorted([(EntryKind.EARN, 60), (EntryKind.EARN, 40),
                                           (EntryKind.REVERSE, -30)])
    assert balance(ada) == 70
    assert_ledger_invariants()
