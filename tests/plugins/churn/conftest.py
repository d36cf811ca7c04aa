"""Fixtures and helpers of the churn tests: an app with the plugin, customers created in
the past, purchases and churn marks at chosen times."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update

from core.db import db
from core.models import Customer
from core.services.customers import create_customer, import_customers
from core.services.interactions import record_interaction
from plugins.churn import service
from plugins.churn.models import ChurnRecord
from tests.conftest import AppFactory, GraphQL, admin_token

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def days_ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


@pytest.fixture
def churn_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["churn"])
    with app.app_context():
        yield app


@pytest.fixture
def gql(churn_app: Flask) -> GraphQL:
    return GraphQL(churn_app, admin_token(churn_app))


def customer(name: str = "Ada", *, created_days_ago: float = 400, **fields: Any) -> int:
    """A customer that has existed for ``created_days_ago`` days."""
    made = create_customer({"name": name, **fields})
    db.session.execute(update(Customer).where(Customer.id == made.id)
                       .values(created_at=days_ago(created_days_ago)))
    db.session.commit()
    return made.id


def many_customers(count: int, *, created_days_ago: float = 400) -> list[int]:
    """``count`` customers "C0".. in one import, all created ``created_days_ago`` days ago
    (for tests about what is done with many customers, not about creating them)."""
    made = import_customers([{"name": f"C{k}", "external_id": f"C{k}"} for k in range(count)])
    assert not made.errors
    ids = [made.recorded_ids[k] for k in range(count)]
    db.session.execute(update(Customer).where(Customer.id.in_(ids))
                       .values(created_at=days_ago(created_days_ago)))
    db.session.commit()
    return ids


def purchase(customer_id: int, at: dt.datetime, amount: str = "10.00",
             currency: str = "USD", kind: str = "purchase") -> int:
    raw: dict[str, Any] = {"customer_id": customer_id, "kind": kind,
                           "occurred_at": at.isoformat()}
    if kind in ("purchase", "refund"):
        raw.update(amount=str(Decimal(amount)), currency=currency)
    return record_interaction(raw).id


def mark(customer_id: int, at: dt.datetime | None = None, type_: str = "competitive",
         reason: str = "pricing", **extra: Any) -> ChurnRecord:
    return service.mark_churned({"customer_id": customer_id, "type": type_, "reason": reason,
                                 "churned_at": (at or days_ago(1)).isoformat(), **extra})
