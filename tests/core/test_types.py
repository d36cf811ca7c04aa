"""Money and time behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.db import db
from core.models import Customer, Interaction


def _customer() -> Customer:
    customer = Customer(name="Money", attributes={})
    db.session.add(customer)
    db.session.flush()
    return customer


def test_money_round_trips_exactly_and_sums_exactly(app: Flask) -> None:
    customer = _customer()
    amounts = [Decimal("0.10"), Decimal("0.20"), Decimal("1234567890.1234"), Decimal("0.01")]
    when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for amount in amounts:
        db.session.add(Interaction(customer_id=customer.id, kind="purchase", occurred_at=when,
                                   amount=amount, currency="USD", payload={}))
    db.session.commit()
    db.session.expire_all()
    stored = db.session.scalars(select(Interaction.amount).order_by(Interaction.id)).all()
    assert stored == amounts
    assert all(isinstance(a, Decimal) for a in stored)
    total = db.session.scalar(select(func.sum(Interaction.amount)))
    assert total == sum(amounts) == Decimal("1234567890.4334")


def test_money_refuses_more_places_than_it_stores(app: Flask) -> None:
    customer = _customer()
    db.session.add(Interaction(customer_id=customer.id, kind="purchase", amount=Decimal("1.00001"),
                               currency="USD", occurred_at=dt.datetime.now(dt.timezone.utc),
                               payload={}))
    with pytest.raises(Exception, match="decimal places"):
        db.session.flush()
    db.session.rollback()


def test_datetimes_come_back_aware_utc(app: Flask) -> None:
    customer = _customer()
    paris = dt.timezone(dt.timedelta(hours=1))
    db.session.add(Interaction(customer_id=customer.id, kind="call", payload={},
                               occurred_at=dt.datetime(2026, 3, 1, 12, 30, tzinfo=paris)))
    db.session.commit()
    db.session.expire_all()
    occurred = db.session.scalar(select(Interaction.occurred_at))
    assert occurred == dt.datetime(2026, 3, 1, 11, 30, tzinfo=dt.timezone.utc)
    assert occurred.utcoffset() == dt.timedelta(0)
    created = db.session.get(Customer, customer.id).created_at
    assert created.tzinfo is not None


def test_naive_datetimes_are_refused(app: Flask) -> None:
    customer = _customer()
    db.session.add(Interaction(customer_id=customer.id, kind="call", payload={},
                               occurred_at=dt.datetime(2026, 3, 1, 12, 30)))
    with pytest.raises(Exception, match="naive datetime"):
        db.session.flush()
    db.session.rollback()
