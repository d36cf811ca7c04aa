"""Fixtures of the care tests: an app with the plugin, agents and customers, and a helper
that relays the outbox and runs the rule job in this thread (no background threads)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from core import jobs, outbox
from core.db import db
from core.ids import global_id
from core.models import Agent, Customer
from core.services import customers, staff
from tests.conftest import AppFactory, GraphQL, admin_token


@pytest.fixture
def care_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["care"])
    with app.app_context():
        yield app


@pytest.fixture
def gql(care_app: Flask) -> GraphQL:
    return GraphQL(care_app, admin_token(care_app))


def agent(name: str = "Ada", **fields: Any) -> Agent:
    return staff.create_agent({"name": name, "email": f"{name.lower()}@example.com", **fields})


def customer(name: str = "Cleo", owner: Agent | None = None) -> Customer:
    return customers.create_customer({"name": name,
                                      "owner_id": owner.id if owner is not None else None})


def gid(kind: str, row: Any) -> str:
    return global_id(kind, row.id)


def relay_and_run_rules(app: Flask) -> int:
    """Relay every waiting event and wait for the ``care.run_rules`` job the relay queues
    after its commit (it runs on the job threads, as in a server without a broker)."""
    relayed = outbox.relay_all()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            t.name == "rapport-after-commit" for t in threading.enumerate()):
        time.sleep(0.005)
    jobs.wait_for_threads(app)
    db.session.rollback()
    return relayed
