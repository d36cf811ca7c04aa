"""Merge, erasure, export and the churn features hook."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask
from sqlalchemy import insert, select

from core.db import db
from core.ids import decode_global_id
from core.models import Customer
from core.services.customers import export_customer, merge_customers
from plugins import loyalty as plugin
from plugins.loyalty import ledger, programme, service
from plugins.loyalty.models import Account, EntryKind, LedgerEntry, TierChange, TierChangeReason
from tests.plugins.loyalty.conftest import (
    assert_ledger_invariants, balance, customer, days_ago, purchase, usd_rule,
)


def test_merge_combines_accounts_lots_and_tiers(loyalty_app: Flask) -> None:
    usd_rule()
    silver = programme.create_tier({"name": "Silver", "threshold_points": 100})
    gold = programme.create_tier({"name": "Gold", "threshold_points": 250})
    ada, twin, other = customer("Ada"), customer("Ada L."), customer("Bob")
    purchase(ada, "40", at=days_ago(30))
    purchase(twin, "120", at=days_ago(20))   # the twin reached Silver
    purchase(twin, "60", at=days_ago(10))
    service.redeem_points({"customer_id": twin, "points": 50, "idempotency_key": "t"})
    purchase(other, "7", at=days_ago(5))
    merge_customers(ada, [twin])
    assert balance(ada) == 40 + 180 - 50
    assert db.session.get(Account, twin) is None
    kinds = [e.kind for e in db.session.scalars(select(LedgerEntry).where(
        LedgerEntry.customer_id == ada).order_by(LedgerEntry.id))]
    assert kinds == [EntryKind.EARN, EntryKind.EARN, EntryKind.EARN, EntryKind.REDEEM,
                     EntryKind.MERGE]
    merge = db.session.scalar(select(LedgerEntry).where(LedgerEntry.kind == EntryKind.MERGE))
    assert merge is not None and merge.points == 0
    assert merge.details == {"merged_customer_ids": [twin], "points_moved": 130}
    # 220 qualifying points together: Silver kept (Gold needs 250); history moved over
    assert db.session.get(Account, ada).tier_id == silver.id  # type: ignore[union-attr]
    history = db.session.execute(select(TierChange.customer_id, TierChange.to_tier_id,
                                        TierChange.reason)).all()
    assert set(history) == {(ada, silver.id, TierChangeReason.EARNED),
                            (ada, silver.id, TierChangeReason.MERGE)}
    assert gold.id not in {t for _, t, _ in history}
    assert balance(other) == 7
    assert_ledger_invariants()


def test_merging_customers_without_points_changes_nothing(loyalty_app: Flask) -> None:
    ada, twin = customer("Ada"), customer("Ada L.")
    merge_customers(ada, [twin])
    assert db.session.scalars(select(LedgerEntry)).all() == []
    assert db.session.scalars(select(Account)).all() == []


def test_export_section(loyalty_app: Flask) -> None:
    usd_rule()
    ada = customer()
    purchase(ada, "25", at=days_ago(3))
    service.redeem_points({"customer_id": ada, "points": 5, "reason": "coffee",
                           "idempotency_key": "x"})
    section = export_customer(ada)["plugins"]["loyalty"]
    assert section["balance"] == 20 and section["tier"] is None
    assert [(e["kind"], e["points"], e["reason"]) for e in section["entries"]] == [
        ("earn", 25, None), ("redeem", -5, "coffee")]
    assert {"memberSince", "tierHistory"} <= set(section)
    assert {"occurredAt", "interactionId", "rewardId", "expiresAt"} <= set(section["entries"][0])
    decode_global_id(section["entries"][0]["id"], "LoyaltyLedgerEntry")  # raises if not one
    assert "loyalty" not in export_customer(customer("Bob")).get("plugins", {})


def test_churn_features_are_computed_as_of_a_date(loyalty_app: Flask, dialect: str) -> None:
    as_of = days_ago(2)
    usd_rule(expiry_months=1)
    gold = programme.create_tier({"name": "Gold", "threshold_points": 1000})
    silver = programme.create_tier({"name": "Silver", "threshold_points": 10})
    ada, bob, cy = customer("Ada"), customer("Bob"), customer("Cy")
    purchase(ada, "100", at=as_of - dt.timedelta(days=15))  # expires about 15 days after as_of
    purchase(ada, "40", at=as_of - dt.timedelta(days=45))   # expired before as_of
    purchase(cy, "12", at=as_of - dt.timedelta(days=200))
    with db.session.begin_nested():  # facts the API dates "now", dated on purpose
        ledger.debit(LedgerEntry(kind=EntryKind.REDEEM, customer_id=ada, points=-50,
                                 occurred_at=as_of - dt.timedelta(days=4)), as_of)
        db.session.execute(insert(TierChange), [
            {"customer_id": ada, "from_tier_id": None, "to_tier_id": silver.id,
             "changed_at": as_of - dt.timedelta(days=9), "reason": TierChangeReason.EARNED,
             "qualifying_points": 140}])
    db.session.commit()
    # after as_of: more points, a redemption, a tier change; none may count
    purchase(ada, "500", at=days_ago(1))
    service.redeem_points({"customer_id": ada, "points": 200, "idempotency_key": "late"})
    db.session.execute(insert(TierChange), [{
        "customer_id": ada, "from_tier_id": silver.id, "to_tier_id": gold.id,
        "changed_at": days_ago(1), "reason": TierChangeReason.EARNED, "qualifying_points": 1}])
    db.session.commit()

    customers = select(Customer.id.label("customer_id")).subquery()
    query = plugin.rapport_churn_features(customers=customers, as_of=as_of)
    rows = {r.customer_id: r._asdict() for r in db.session.execute(query)}
    assert set(rows) == {ada, bob, cy}
    a = rows[ada]
    # the 40-point lot had expired by the redemption (dated as_of): the debit wrote it off
    # first (an expire entry dated at its expiry, before as_of) and spent 50 of the
    # 100-point lot; the later redemption does not count
    assert a["loyalty_balance"] == 100 + 40 - 40 - 50
    assert a["loyalty_tier_rank"] == 1  # Silver, the lowest tier
    assert a["loyalty_days_since_last_earn"] == pytest.approx(15, abs=1e-6)
    assert a["loyalty_days_since_last_redemption"] == pytest.approx(4, abs=1e-6)
    assert a["loyalty_points_expiring_30d"] == 50
    assert rows[bob] == {"customer_id": bob, "loyalty_balance": None, "loyalty_tier_rank": None,
                         "loyalty_days_since_last_earn": None,
                         "loyalty_days_since_last_redemption": None,
                         "loyalty_points_expiring_30d": None}
    c = rows[cy]
    assert (c["loyalty_balance"], c["loyalty_tier_rank"], c["loyalty_points_expiring_30d"],
            c["loyalty_days_since_last_redemption"]) == (12, 0, 0, None)
