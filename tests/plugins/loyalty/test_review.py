"""Review findings: each test shows a defect found in review (and now fixed).

The concurrency tests are PostgreSQL-only and deterministic: a separate connection holds a
member's account row lock (as a concurrent transaction in progress would) while worker
threads start, and is released only once every worker waits on a lock.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, insert, select, text

from core.db import db
from core.errors import ErrorCode, UserError
from core.models import Interaction
from plugins.loyalty import programme, service
from plugins.loyalty.models import Account, EntryKind, LedgerEntry
from tests.conftest import AppFactory, GraphQL
from tests.plugins.loyalty.conftest import (
    NOW, assert_ledger_invariants, balance, customer, days_ago, purchase, refund, usd_rule,
)


def _pg_only(dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("SQLite serialises writers: concurrency only means something on PostgreSQL")


def _lock_waiters(conn: Any) -> int:
    """Sessions of this database waiting on a lock. pg_stat_activity is a snapshot taken once
    per transaction: clear it first, or a connection inside a transaction keeps reading the
    moment before anyone waited (and each wait below ran out its 15 s)."""
    conn.execute(text("SELECT pg_stat_clear_snapshot()"))
    return int(conn.execute(text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'")).scalar())


@contextmanager
def _account_locked(customer_id: int) -> Iterator[Callable[[int], None]]:
    """Hold the account's row lock on another connection; the callable waits until that
    many other sessions are blocked on a lock, then releases it."""
    conn = db.engine.connect()
    trans = conn.begin()
    conn.execute(text("SELECT 1 FROM loyalty_account WHERE customer_id = :c FOR UPDATE"),
                 {"c": customer_id})

    def release_when_waiting(waiters: int) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if _lock_waiters(conn) >= waiters:
                break
            time.sleep(0.05)
        trans.rollback()

    try:
        yield release_when_waiting
    finally:
        if trans.is_active:
            trans.rollback()
        conn.close()


def _in_threads(app: Flask, jobs: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = [None] * len(jobs)

    def run(n: int) -> None:
        with app.app_context():
            try:
                results[n] = jobs[n]()
            except Exception as exc:  # noqa: BLE001 - reported by the test
                results[n] = exc
            finally:
                db.session.remove()

    pool = [threading.Thread(target=run, args=(n,)) for n in range(len(jobs))]
    for thread in pool:
        thread.start()
    return pool  # type: ignore[return-value]


def _join(pool: list[threading.Thread]) -> None:
    for thread in pool:
        thread.join(30)


def _taken_back(customer_id: int) -> int:
    """Points refunds took back, shortfalls included."""
    return -int(db.session.scalar(select(func.sum(
        LedgerEntry.points - func.coalesce(LedgerEntry.shortfall, 0))).where(
        LedgerEntry.customer_id == customer_id, LedgerEntry.kind == EntryKind.REVERSE)) or 0)


# --- (1) concurrent refunds of one purchase ----------------------------------------------------


@pytest.mark.postgres_only
def test_concurrent_refunds_never_take_back_more_than_the_purchase_earned(
        loyalty_app: Flask, dialect: str) -> None:
    _pg_only(dialect)
    usd_rule()
    ada = customer()
    bought = purchase(ada, "100", at=days_ago(10))
    purchase(ada, "100", at=days_ago(9))  # other points the refunds must not eat into
    db.session.commit()
    with _account_locked(ada) as release:
        pool = _in_threads(loyalty_app, [
            lambda: refund(ada, bought, "60", at=days_ago(1)),
            lambda: refund(ada, bought, "60", at=days_ago(1))])
        release(2)
    _join(pool)
    db.session.expire_all()
    # 120 refunded of a 100 purchase: exactly the 100 points it earned come back, no more
    assert _taken_back(ada) == 100
    assert balance(ada) == 100
    assert_ledger_invariants()


@pytest.mark.postgres_only
def test_a_refund_committed_first_counts_though_its_id_is_higher(
        loyalty_app: Flask, dialect: str) -> None:
    """Interaction ids are taken before the account lock, so a refund with a higher id
    may commit first. The refund waiting for the lock must still count it, or the points
    of a fully refunded purchase are never all taken back. (This guards the fix of the
    test above: reading after the lock while counting only lower ids fails here.)"""
    _pg_only(dialect)
    usd_rule()
    ada = customer()
    bought = purchase(ada, "100", at=days_ago(10))
    purchase(ada, "100", at=days_ago(9))
    db.session.commit()
    with _account_locked(ada) as release:
        # this refund gets its id, then waits for the account
        pool = _in_threads(loyalty_app, [lambda: refund(ada, bought, "50", at=days_ago(1))])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not _lock_waiters(db.session):
            time.sleep(0.05)
        db.session.rollback()
        # meanwhile another transaction records a refund of the other half (a higher id)
        # and its reversal (all of it a shortfall here: no lot moves), and commits
        with db.engine.begin() as other:
            later = other.execute(insert(Interaction.__table__).values(
                customer_id=ada, kind="refund", occurred_at=days_ago(1), amount=Decimal(50),
                currency="USD", payload={}, refers_to_id=bought, recorded_at=NOW)
                .returning(Interaction.__table__.c.id)).scalar_one()
            other.execute(insert(LedgerEntry.__table__).values(
                customer_id=ada, kind="reverse", points=0, shortfall=50, occurred_at=days_ago(1),
                recorded_at=NOW, interaction_id=later))
        release(1)
    _join(pool)
    db.session.expire_all()
    assert _taken_back(ada) == 100  # the whole purchase was refunded
    assert balance(ada) == 150
    assert_ledger_invariants()


# --- (1) capped rules under concurrent earning -------------------------------------------------


@pytest.mark.postgres_only
def test_concurrent_purchases_never_earn_past_a_cap(loyalty_app: Flask, dialect: str) -> None:
    _pg_only(dialect)
    usd_rule(cap_points=50, cap_period="day")
    ada = customer()
    service.adjust_points({"customer_id": ada, "points": 1, "reason": "open the account",
                           "idempotency_key": "open"})
    db.session.commit()
    at = NOW
    with _account_locked(ada) as release:
        pool = _in_threads(loyalty_app, [lambda: purchase(ada, "40", at=at),
                                         lambda: purchase(ada, "40", at=at)])
        release(2)
    _join(pool)
    db.session.expire_all()
    earned = db.session.scalar(select(func.sum(LedgerEntry.points)).where(
        LedgerEntry.customer_id == ada, LedgerEntry.kind == EntryKind.EARN))
    assert earned == 50  # 40, then the 10 the daily cap leaves
    assert_ledger_invariants()


# --- (1) tier re-evaluation racing an earning ----------------------------------------------------


@pytest.mark.postgres_only
def test_reevaluation_does_not_undo_a_concurrent_earning(loyalty_app: Flask,
                                                         dialect: str) -> None:
    _pg_only(dialect)
    usd_rule()
    silver = programme.create_tier({"name": "Silver", "threshold_points": 50})
    gold = programme.create_tier({"name": "Gold", "threshold_points": 100, "window_months": 6})
    ada = customer()
    purchase(ada, "120", at=days_ago(200))  # Gold then, outside Gold's window now
    db.session.execute(text("UPDATE loyalty_account SET tier_id = :g WHERE customer_id = :c"),
                       {"g": gold.id, "c": ada})
    db.session.commit()
    # A purchase being earned on another connection: lot written, balance moved, not yet
    # committed. With it Ada qualifies for Gold again.
    conn = db.engine.connect()
    trans = conn.begin()
    conn.execute(text(
        "INSERT INTO loyalty_ledger (customer_id, kind, points, occurred_at, recorded_at, "
        "remaining) VALUES (:c, 'earn', 100, :now, :now, 100)"), {"c": ada, "now": NOW})
    conn.execute(text("UPDATE loyalty_account SET balance = balance + 100 "
                      "WHERE customer_id = :c"), {"c": ada})
    pool = _in_threads(loyalty_app, [service.reevaluate_tiers])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not _lock_waiters(conn):
        time.sleep(0.05)
    trans.commit()
    conn.close()
    _join(pool)
    db.session.expire_all()
    # Ada has 100 qualifying points in Gold's window once the earning commits: she keeps it
    assert db.session.get(Account, ada).tier_id == gold.id  # type: ignore[union-attr]
    assert silver.id is not None
    assert_ledger_invariants()


# --- (3) bad input never gives a 500 -------------------------------------------------------------


def test_out_of_range_ids_are_user_errors(loyalty_app: Flask) -> None:
    ada = customer()
    service.adjust_points({"customer_id": ada, "points": 10, "reason": "r",
                           "idempotency_key": "seed"})
    huge = 2 ** 64
    calls: list[tuple[Callable[..., Any], dict[str, Any], str]] = [
        (service.redeem_points, {"customer_id": huge, "points": 1}, "customerId"),
        (service.adjust_points, {"customer_id": huge, "points": 1, "reason": "r"},
         "customerId"),
        (service.redeem_reward, {"customer_id": ada, "reward_id": huge}, "rewardId"),
    ]
    for call, raw, field in calls:
        with pytest.raises(UserError) as exc:
            call({**raw, "idempotency_key": "k"})
        assert exc.value.errors[0].field == field, call
    with pytest.raises(UserError) as exc:
        programme.retire_reward(huge)
    assert exc.value.errors[0].code == ErrorCode.NOT_FOUND
    assert balance(ada) == 10


def test_redeem_with_an_out_of_range_customer_id_over_graphql(gql: GraphQL) -> None:
    from graphql_relay import to_global_id

    result = gql.raw("""mutation($input: RedeemPointsInput!) {
        redeemPoints(input: $input) { errors { field code } } }""",
                     {"input": {"customerId": to_global_id("Customer", str(2 ** 64)),
                                "points": 1, "idempotencyKey": "k"}})
    assert result.status_code == 200
    body = result.get_json()
    assert "errors" not in body, body
    assert body["data"]["redeemPoints"]["errors"][0]["field"] == "input.customerId"


# --- (6) months in RAPPORT_TIMEZONE --------------------------------------------------------------


def test_expiry_months_are_counted_in_the_business_time_zone(make_app: AppFactory) -> None:
    with make_app(enabled=["loyalty"], RAPPORT_TIMEZONE="Asia/Tokyo").app_context():
        year = NOW.year - 1
        usd_rule(expiry_months=1, valid_from=dt.datetime(year, 1, 1, tzinfo=dt.timezone.utc)
                 .isoformat())
        ada = customer()
        # 20:00 UTC on 30 January is 05:00 on 31 January in Tokyo: one month later is the
        # last day of February in Tokyo, 05:00 (20:00 UTC the day before)
        purchase(ada, "10", at=dt.datetime(year, 1, 30, 20, tzinfo=dt.timezone.utc))
        lot = db.session.scalar(select(LedgerEntry).where(LedgerEntry.kind == EntryKind.EARN))
        last_day = 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28
        assert lot is not None
        assert lot.expires_at == dt.datetime(year, 2, last_day - 1, 20, tzinfo=dt.timezone.utc)
