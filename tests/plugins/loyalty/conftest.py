"""Fixtures and helpers of the loyalty tests: an app with the plugin, members, purchases,
and the ledger invariants every test can assert."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.db import db
from core.models import Customer
from core.services.customers import create_customer
from core.services.interactions import record_interaction
from plugins.loyalty import programme
from plugins.loyalty.models import Account, EntryKind, LedgerEntry, LotUse
from tests.conftest import AppFactory, GraphQL, admin_token

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def days_ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


@pytest.fixture
def loyalty_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["loyalty"])
    with app.app_context():
        yield app


@pytest.fixture
def gql(loyalty_app: Flask) -> GraphQL:
    return GraphQL(loyalty_app, admin_token(loyalty_app))


def customer(name: str = "Ada") -> int:
    return create_customer({"name": name}).id


def purchase(customer_id: int, amount: str, *, currency: str = "USD",
             at: dt.datetime | None = None, kind: str = "purchase",
             refers_to: int | None = None) -> int:
    raw: dict[str, Any] = {"customer_id": customer_id, "kind": kind,
                           "occurred_at": (at or NOW).isoformat()}
    if amount:
        raw |= {"amount": amount, "currency": currency}
    if refers_to is not None:
        raw["refers_to_id"] = refers_to
    return record_interaction(raw).id


def refund(customer_id: int, purchase_id: int, amount: str, *, currency: str = "USD",
           at: dt.datetime | None = None) -> int:
    return purchase(customer_id, amount, currency=currency, at=at, kind="refund",
                    refers_to=purchase_id)


def usd_rule(**extra: Any) -> int:
    """One point per USD, from a year ago, rounded down, points valid 24 months."""
    raw = {"name": "Points on purchases", "kind": "purchase", "currency": "USD",
           "points_per_unit": "1", "valid_from": days_ago(365).isoformat(), **extra}
    return programme.create_earn_rule(raw).id


def balance(customer_id: int) -> int:
    return db.session.scalar(select(Account.balance).where(
        Account.customer_id == customer_id)) or 0


def entries(customer_id: int) -> list[tuple[EntryKind, int]]:
    return [(e.kind, e.points) for e in db.session.scalars(
        select(LedgerEntry).where(LedgerEntry.customer_id == customer_id)
        .order_by(LedgerEntry.id))]


def assert_ledger_invariants() -> None:
    """For every account: balance = sum of entries = sum of lots' remaining >= 0; every
    lot's remaining = its points - its uses; every debit's uses add up to its points."""
    db.session.expire_all()
    sums = dict(db.session.execute(select(LedgerEntry.customer_id, func.sum(LedgerEntry.points))
                                   .group_by(LedgerEntry.customer_id)).all())
    left = dict(db.session.execute(
        select(LedgerEntry.customer_id, func.sum(LedgerEntry.remaining))
        .where(LedgerEntry.remaining.is_not(None)).group_by(LedgerEntry.customer_id)).all())
    for account in db.session.scalars(select(Account)):
        assert account.balance >= 0
        assert account.balance == (sums.get(account.customer_id) or 0), account.customer_id
        assert account.balance == (left.get(account.customer_id) or 0), account.customer_id
    assert set(sums) <= {a for a in db.session.scalars(select(Account.customer_id))}
    used_of_lot = dict(db.session.execute(select(LotUse.lot_id, func.sum(LotUse.points))
                                          .group_by(LotUse.lot_id)).all())
    for lot in db.session.scalars(select(LedgerEntry).where(LedgerEntry.remaining.is_not(None))):
        assert lot.remaining == lot.points - (used_of_lot.get(lot.id) or 0), lot.id
    used_by_entry = dict(db.session.execute(select(LotUse.entry_id, func.sum(LotUse.points))
                                            .group_by(LotUse.entry_id)).all())
    for debit in db.session.scalars(select(LedgerEntry).where(LedgerEntry.points < 0)):
        assert used_by_entry.get(debit.id) == -debit.points, debit.id


def customer_row(customer_id: int) -> Customer:
    return db.session.get(Customer, customer_id)  # type: ignore[return-value]
