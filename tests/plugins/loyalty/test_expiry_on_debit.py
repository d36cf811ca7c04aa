"""Points past their expiry can never be spent, even before `rapport loyalty expire` runs.

Every debit (redeem points, redeem a reward, a negative adjustment, a refund taking points
back) first writes off its member's lots past expiry, under the account lock and in its
transaction, with the entries the job would write; the GraphQL balance leaves overdue
points out without writing anything.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from flask import Flask
from graphql_relay import to_global_id
from sqlalchemy import func, select

from core.db import db
from core.errors import UserError
from plugins.loyalty import programme, service
from plugins.loyalty.errors import LoyaltyErrorCode
from plugins.loyalty.models import Account, EntryKind, LedgerEntry, LotUse, Reward
from tests.conftest import GraphQL, count_statements
from tests.plugins.loyalty.conftest import (
    assert_ledger_invariants, balance, customer, days_ago, purchase, refund, usd_rule,
)

OVERDUE_MESSAGE = ("The customer has 40 points; {needed} are needed. 60 more points have "
                   "passed their expiry date and can no longer be spent.")


def _member(name: str = "Ada") -> tuple[int, int, int]:
    """A member with a stored balance of 100: a lot of 60 past its expiry (bought 45 days
    ago, valid one month) that no job has written off, and a valid lot of 40."""
    ada = customer(name)
    old = purchase(ada, "60", at=days_ago(45))
    recent = purchase(ada, "40", at=days_ago(5))
    db.session.commit()
    return ada, old, recent


@pytest.fixture
def programme_rule(loyalty_app: Flask) -> int:
    return usd_rule(expiry_months=1)


def _ledger_size() -> int:
    return db.session.scalar(select(func.count()).select_from(LedgerEntry)) or 0


def _lot(interaction_id: int) -> LedgerEntry:
    lot = db.session.scalar(select(LedgerEntry).where(
        LedgerEntry.interaction_id == interaction_id, LedgerEntry.kind == EntryKind.EARN))
    assert lot is not None
    return lot


def _expiries(customer_id: int) -> list[tuple[int, dt.datetime, int, int]]:
    """(points, occurred_at, lot id, points used of the lot) of the member's expire entries."""
    return [tuple(row) for row in db.session.execute(  # type: ignore[misc]
        select(LedgerEntry.points, LedgerEntry.occurred_at, LotUse.lot_id, LotUse.points)
        .join(LotUse, LotUse.entry_id == LedgerEntry.id)
        .where(LedgerEntry.customer_id == customer_id, LedgerEntry.kind == EntryKind.EXPIRE)
        .order_by(LedgerEntry.id))]


def _insufficient(exc: pytest.ExceptionInfo[UserError]) -> str:
    [error] = exc.value.errors
    assert (error.code, error.field) == (LoyaltyErrorCode.INSUFFICIENT_POINTS, "points")
    return error.message


@pytest.mark.parametrize("points", [70, 120])  # the stored balance covers 70, not 120
def test_a_redemption_cannot_spend_expired_points(programme_rule: int, points: int) -> None:
    ada, _, _ = _member()
    before = _ledger_size()
    with pytest.raises(UserError) as exc:
        service.redeem_points({"customer_id": ada, "points": points, "idempotency_key": "r1"})
    assert _insufficient(exc) == OVERDUE_MESSAGE.format(needed=points)
    # a failed call writes nothing, not even the expiry: its key stays free
    db.session.expire_all()
    assert (_ledger_size(), balance(ada)) == (before, 100)
    assert service.redeem_points({"customer_id": ada, "points": 40,
                                  "idempotency_key": "r1"}).points == -40
    assert balance(ada) == 0
    assert_ledger_invariants()


def test_a_redemption_writes_off_expired_lots_as_the_job_would(programme_rule: int) -> None:
    ada, ada_old, ada_recent = _member("Ada")
    bob, bob_old, _ = _member("Bob")  # the same lots: the job will expire his
    entry = service.redeem_points({"customer_id": ada, "points": 30, "idempotency_key": "r"})
    db.session.expire_all()
    old, recent = _lot(ada_old), _lot(ada_recent)
    # the expired lot was written off, the 30 points came out of the valid lot
    assert (old.remaining, recent.remaining, balance(ada)) == (0, 10, 10)
    assert db.session.execute(select(LotUse.lot_id, LotUse.points).where(
        LotUse.entry_id == entry.id)).all() == [(recent.id, 30)]
    [expire] = db.session.scalars(select(LedgerEntry).where(
        LedgerEntry.customer_id == ada, LedgerEntry.kind == EntryKind.EXPIRE)).all()
    assert (expire.points, expire.occurred_at, expire.recorded_at) == (
        -60, old.expires_at, entry.recorded_at)
    assert old.expires_at is not None and old.expires_at < entry.occurred_at
    assert_ledger_invariants()

    # the job afterwards writes nothing more for Ada, and for Bob the same entry
    run = service.expire_points()
    assert (run.lots, run.points, run.customers) == (1, 60, 1)
    assert service.expire_points().lots == 0
    bob_lot = _lot(bob_old)
    assert _expiries(ada) == [(-60, old.expires_at, old.id, 60)]
    assert _expiries(bob) == [(-60, bob_lot.expires_at, bob_lot.id, 60)]
    assert bob_lot.expires_at == old.expires_at
    assert (balance(ada), balance(bob)) == (10, 40)
    assert_ledger_invariants()


def test_every_debit_path_expires_first(programme_rule: int) -> None:
    # a reward: refused on points, the unit goes back to the stock
    ada, _, _ = _member("Ada")
    reward = programme.create_reward({"name": "Mug", "point_cost": 50, "stock": 3})
    with pytest.raises(UserError) as exc:
        service.redeem_reward({"customer_id": ada, "reward_id": reward.id,
                               "idempotency_key": "w1"})
    assert _insufficient(exc) == OVERDUE_MESSAGE.format(needed=50)
    db.session.expire_all()
    assert (db.session.get(Reward, reward.id).stock, balance(ada)) == (3, 100)  # type: ignore[union-attr]
    cheap = programme.create_reward({"name": "Pen", "point_cost": 15})
    service.redeem_reward({"customer_id": ada, "reward_id": cheap.id, "quantity": 2,
                           "idempotency_key": "w2"})
    assert balance(ada) == 10 and [p for p, *_ in _expiries(ada)] == [-60]

    # a negative adjustment
    bob, _, _ = _member("Bob")
    with pytest.raises(UserError) as exc:
        service.adjust_points({"customer_id": bob, "points": -41, "reason": "fraud",
                               "idempotency_key": "a1"})
    assert "has 40 points; 41 are needed" in _insufficient(exc)
    service.adjust_points({"customer_id": bob, "points": -40, "reason": "fraud",
                           "idempotency_key": "a2"})
    assert balance(bob) == 0 and [p for p, *_ in _expiries(bob)] == [-60]

    # a refund of the purchase whose lot expired: the lot is written off first, and the
    # refund takes back what the valid lot holds, the rest being its shortfall
    cy, cy_old, _ = _member("Cy")
    refund(cy, cy_old, "60")
    reverse = db.session.scalar(select(LedgerEntry).where(
        LedgerEntry.customer_id == cy, LedgerEntry.kind == EntryKind.REVERSE))
    assert reverse is not None and (reverse.points, reverse.shortfall) == (-40, 20)
    assert balance(cy) == 0 and [p for p, *_ in _expiries(cy)] == [-60]

    assert service.expire_points().lots == 0  # nothing left for the job
    assert_ledger_invariants()


def test_a_refund_batch_spends_no_expired_points(programme_rule: int) -> None:
    ada, _, recent = _member("Ada")
    refund(ada, recent, "10")  # takes 10 of the valid lot; the expired one is written off
    assert balance(ada) == 30 and _lot(recent).remaining == 30
    assert [p for p, *_ in _expiries(ada)] == [-60]
    assert_ledger_invariants()


BALANCES = """query($n: Int!) { customers(first: $n) { edges { node { name loyalty {
    balance tier { name } } } } } }"""
MEMBER = """query($id: ID!) { customer(id: $id) { loyalty {
    member balance expiringPoints(withinDays: 60) } } }"""


def test_the_graphql_balance_excludes_overdue_points(gql: GraphQL, loyalty_app: Flask,
                                                     programme_rule: int) -> None:
    ada, _, _ = _member("Ada")
    bob = customer("Bob")
    purchase(bob, "25", at=days_ago(40))  # everything Bob has is past expiry
    db.session.commit()
    before = _ledger_size()
    assert gql(MEMBER, {"id": to_global_id("Customer", ada)})["customer"]["loyalty"] == {
        "member": True, "balance": 40, "expiringPoints": 40}
    # a page of members still costs one query for the accounts (reads never write)
    gql("{ plugins { name } }")
    with count_statements(loyalty_app) as statements:
        edges = gql(BALANCES, {"n": 10})["customers"]["edges"]
    # customers page, accounts (the key was checked by the request before: cached)
    assert len(statements) == 2, statements
    assert {e["node"]["name"]: e["node"]["loyalty"]["balance"] for e in edges} == {
        "Ada": 40, "Bob": 0}
    db.session.expire_all()
    assert _ledger_size() == before
    assert (balance(ada), balance(bob)) == (100, 25)  # stored until written off

    # the job then writes off what the reads already left out
    assert service.expire_points().points == 85
    edges = gql(BALANCES, {"n": 10})["customers"]["edges"]
    assert {e["node"]["name"]: e["node"]["loyalty"]["balance"] for e in edges} == {
        "Ada": 40, "Bob": 0}
    assert_ledger_invariants()


def test_the_mutation_returns_the_spendable_balance(gql: GraphQL, programme_rule: int) -> None:
    ada, _, _ = _member("Ada")
    mutation = """mutation($input: RedeemPointsInput!) { redeemPoints(input: $input) {
      entry { points } loyalty { balance } errors { code message } } }"""
    failed = gql(mutation, {"input": {"customerId": to_global_id("Customer", ada),
                                      "points": 41, "idempotencyKey": "g1"}})["redeemPoints"]
    assert failed["errors"] == [{"code": "INSUFFICIENT_POINTS", "message": (
        "The customer has 40 points; 41 are needed. 60 more points have passed their "
        "expiry date and can no longer be spent.")}]
    done = gql(mutation, {"input": {"customerId": to_global_id("Customer", ada),
                                    "points": 15, "idempotencyKey": "g2"}})["redeemPoints"]
    assert done == {"entry": {"points": -15}, "loyalty": {"balance": 25}, "errors": []}
    assert_ledger_invariants()


@pytest.mark.postgres_only
def test_concurrent_debits_and_the_job_expire_a_lot_once(loyalty_app: Flask, dialect: str,
                                                         programme_rule: int) -> None:
    if dialect != "postgresql":
        pytest.skip("SQLite serialises writers: concurrency only means something on PostgreSQL")
    ada, _, _ = _member("Ada")  # 40 spendable, 60 overdue
    threads, attempts_each, points = 8, 3, 3  # demand 72 > 40 spendable
    outcomes: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)

    def worker(n: int) -> None:
        with loyalty_app.app_context():
            start.wait()
            for attempt in range(attempts_each):
                try:
                    service.redeem_points({"customer_id": ada, "points": points,
                                           "idempotency_key": f"w{n}-{attempt}"})
                    result: Any = "ok"
                except UserError as exc:
                    result = exc.errors[0].code
                except Exception as exc:  # noqa: BLE001 - reported by the assertion
                    result = exc
                with lock:
                    outcomes.append(result)
            db.session.remove()

    def job() -> None:
        with loyalty_app.app_context():
            start.wait()
            service.expire_points()
            db.session.remove()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    pool.append(threading.Thread(target=job))
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert set(outcomes) == {"ok", LoyaltyErrorCode.INSUFFICIENT_POINTS}, outcomes
    assert outcomes.count("ok") == 40 // points
    db.session.expire_all()
    assert balance(ada) == 40 - 40 // points * points
    assert [p for p, *_ in _expiries(ada)] == [-60]
    assert db.session.scalar(select(Account.balance).where(Account.customer_id == ada)) == 1
    assert_ledger_invariants()
