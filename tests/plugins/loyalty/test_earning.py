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


def _earning_statements(interaction_id: int, loyalty_app: Flask) -> tuple[list[str], list[str]]:
    """The statements of the loyalty hook's earning on one recorded interaction: (audit and
    outbox INSERTs, the others)."""
    from core.db import utcnow
    from plugins.loyalty import earning
    from plugins.loyalty.config import loyalty_settings

    with count_statements(loyalty_app) as statements:
        earning.earn_and_reverse([interaction_id], utcnow(), loyalty_settings(), earn=True,
                                 reverse=False)
        db.session.commit()
    statements = [s for s in statements if s.strip().upper() not in ("COMMIT", "BEGIN")]
    audit = [s for s in statements if "INSERT INTO audit_entries" in s]
    return audit, [s for s in statements if s not in audit]


def _bare_purchase(customer_id: int, amount: str) -> int:
    """A purchase stored without the hooks (the test runs the loyalty hook itself)."""
    from decimal import Decimal

    from core.models import Interaction

    row = Interaction(customer_id=customer_id, kind="purchase", amount=Decimal(amount),
                      currency="USD", occurred_at=days_ago(1), payload={})
    db.session.add(row)
    db.session.commit()
    return row.id


def test_earning_on_one_purchase_costs_at_most_three_statements(loyalty_app: Flask) -> None:
    """Issue 15: a capped rule, a tier multiplier and a move up, in at most 3 statements
    besides the one audit/outbox statement (PostgreSQL; SQLite runs the batch path)."""
    usd_rule(cap_points=1000, cap_period="day")
    silver = programme.create_tier({"name": "Silver", "threshold_points": 10,
                                    "earn_multiplier": "1.5"})
    gold = programme.create_tier({"name": "Gold", "threshold_points": 60})
    ada = customer()
    purchase(ada, "20")                       # 20 points, Silver
    account = db.session.get(Account, ada)
    assert account is not None and account.tier_id == silver.id
    postgresql = db.engine.dialect.name == "postgresql"

    audit, others = _earning_statements(_bare_purchase(ada, "30"), loyalty_app)  # 45 points
    assert balance(ada) == 65
    db.session.expire_all()
    assert db.session.get(Account, ada).tier_id == gold.id  # type: ignore[union-attr]
    history = db.session.scalars(select(TierChange).where(TierChange.customer_id == ada)
                                 .order_by(TierChange.id)).all()
    assert [(h.from_tier_id, h.to_tier_id, h.qualifying_points) for h in history][-1] == (
        silver.id, gold.id, 65)
    if postgresql:
        assert len(audit) == 1, audit
        assert len(others) <= 3, others
    else:
        assert len(others) + len(audit) <= 14, others  # the batch path's fixed handful
    assert_ledger_invariants()

    # A member's first purchase: the account is opened (and locked) first, still <= 3.
    bob = customer("Bob")
    audit, others = _earning_statements(_bare_purchase(bob, "5"), loyalty_app)
    assert balance(bob) == 5 and entries(bob) == [(EntryKind.EARN, 5)]
    if postgresql:
        assert len(audit) == 1 and len(others) <= 3, others
    assert_ledger_invariants()


def test_the_daily_cap_holds_on_the_single_purchase_path(loyalty_app: Flask) -> None:
    usd_rule(cap_points=50, cap_period="day")
    ada = customer()
    for amount in ("30", "30", "30"):
        purchase(ada, amount, at=days_ago(1))
    assert sorted(p for _, p in entries(ada)) == [20, 30]
    assert balance(ada) == 50
    purchase(ada, "10", at=days_ago(3))       # another day: its own cap
    assert balance(ada) == 60
    assert_ledger_invariants()
