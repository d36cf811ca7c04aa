"""Fixtures and helpers of the complaints tests: an app with the plugin, customers, agents,
and complaints filed at chosen times."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from core.services.customers import create_customer
from core.services.staff import create_agent
from plugins.complaints import service
from plugins.complaints.models import Complaint
from tests.conftest import AppFactory, GraphQL, admin_token

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def days_ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


@pytest.fixture
def complaints_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["complaints"])
    with app.app_context():
        yield app


@pytest.fixture
def gql(complaints_app: Flask) -> GraphQL:
    return GraphQL(complaints_app, admin_token(complaints_app))


def customer(name: str = "Ada") -> int:
    return create_customer({"name": name}).id


def agent(name: str = "Grace") -> int:
    return create_agent({"name": name, "email": f"{name.lower()}@example.com"}).id


def file(customer_id: int, *, at: dt.datetime | None = None, **extra: Any) -> Complaint:
    raw: dict[str, Any] = {"customer_id": customer_id, "type": "logistics", "channel": "phone",
                           "severity": "medium", "subject": "Parcel late",
                           "description": "Ordered two weeks ago, still nothing.", **extra}
    if at is not None:
        raw["filed_at"] = at.isoformat()
    return service.file_complaint(raw, now=at or NOW)


#: Step data of each transition on the happy path.
HAPPY_PATH: list[tuple[str, dict[str, Any]]] = [
    ("confirmed", {"cause": "internal_management"}),
    ("analyzing", {"root_cause": "Warehouse backlog"}),
    ("solution_proposed", {"solution": "Ship by express, refund delivery"}),
    ("implementing", {}),
    ("feedback", {"satisfaction": 4, "customer_resolved": True}),
    ("closed", {}),
]


def move(complaint_id: int, to: str, at: dt.datetime | None = None, **data: Any) -> Complaint:
    return service.transition_complaint({"id": complaint_id, "to": to, **data}, now=at or NOW)


def run_through(complaint_id: int, start: dt.datetime, hours: list[float],
                upto: str = "closed") -> None:
    """Walk the happy path up to ``upto``, each step ``hours[i]`` after filing."""
    for (to, data), after in zip(HAPPY_PATH, hours):
        move(complaint_id, to, start + dt.timedelta(hours=after), **data)
        if to == upto:
            return
