"""``rapport demo``: realistic, reproducible data in which every analysis finds something."""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, func, select

from core import hookimpl
from core.cli import cli as rapport_cli
from core.db import db
from core.demo import DEMO_SOURCE, DemoSummary, generate_demo
from core.errors import UserError
from core.models import (
    Agent, Alert, Customer, CustomerExternalId, CustomerTag, Interaction,
)
from core.money import currency_decimals
from core.schemas import CustomerSchema
from core.services.customers import find_duplicates
from core.services.interactions import interaction_schema
from tests.conftest import AppFactory

AS_OF = dt.datetime(2026, 6, 30, 12, 0, tzinfo=dt.timezone.utc)
CORE_KINDS = {"purchase", "refund", "call", "email", "visit", "service", "chat", "note"}


class DemoProbe:
    """A plugin adding demo rows of its own: one alert per chunk, from ``rng``."""

    name = "demo_probe"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    @hookimpl
    def rapport_demo_data(self, rng: Any, customers: Sequence[Customer],
                          as_of: dt.datetime) -> None:
        draw = rng.random()
        self.calls.append({"ids": [c.id for c in customers], "as_of": as_of, "draw": draw,
                           "in_transaction": db.session().in_transaction()})
        db.session.add(Alert(kind="demo_probe", severity="info", source="demo_probe",
                             evidence={"draw": draw}, customer_id=customers[0].id))


@pytest.fixture
def probe() -> DemoProbe:
    return DemoProbe()


@pytest.fixture
def app(make_app: AppFactory, probe: DemoProbe) -> Iterator[Flask]:
    application = make_app(plugins=(probe,))
    with application.app_context():
        yield application


def count(model: Any) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def demo(count: int = 120, seed: int = 7, chunk_size: int = 50) -> DemoSummary:
    return generate_demo(count, seed, AS_OF, chunk_size=chunk_size)


def test_customers_get_a_full_profile_and_a_year_of_every_kind_of_interaction(
        app: Flask) -> None:
    summary = demo()

    assert (summary.customers, summary.agents, summary.seed) == (120, 6, 7)
    assert count(Customer) == 120 and count(Agent) == 6
    assert count(CustomerExternalId) == 120
    assert summary.interactions == count(Interaction) > 120 * 5
    assert set(db.session.scalars(select(Interaction.kind).distinct())) == CORE_KINDS
    first, last = db.session.execute(select(func.min(Interaction.occurred_at),
                                            func.max(Interaction.occurred_at))).one()
    assert AS_OF - dt.timedelta(days=366) <= first and last <= AS_OF
    people = db.session.scalars(select(Customer)).all()
    for column in ("name", "country", "region", "city", "birth_date", "gender", "education",
                   "occupation", "income_band"):
        assert all(getattr(c, column) for c in people), column
    assert len({c.city for c in people}) >= 10
    assert len({c.lifecycle_stage for c in people}) >= 5
    assert count(CustomerTag) > 0
    unowned = db.session.scalar(select(func.count()).where(Customer.owner_id.is_(None))) or 0
    assert unowned < count(Customer)  # VIP and B2B customers have an account owner


def test_every_row_passes_the_api_rules(app: Flask) -> None:
    demo(60)
    tags: dict[int, list[str]] = defaultdict(list)
    for customer_id, tag in db.session.execute(select(CustomerTag.customer_id,
                                                      CustomerTag.tag)):
        tags[customer_id].append(tag)
    for c in db.session.scalars(select(Customer)):
        assert c.birth_date is not None
        CustomerSchema().load({
            "name": c.name, "email": c.email, "phone": c.phone,
            "birth_date": c.birth_date.isoformat(), "gender": c.gender,
            "education": c.education, "occupation": c.occupation, "income_band": c.income_band,
            "country": c.country, "region": c.region, "city": c.city, "tags": tags[c.id],
            "attributes": c.attributes, "lifecycle_stage": c.lifecycle_stage.value})
    schema = interaction_schema(now=AS_OF)
    for i in db.session.scalars(select(Interaction)):
        schema.load({"customer_id": i.customer_id, "kind": i.kind, "channel": i.channel,
                     "occurred_at": i.occurred_at.isoformat(),
                     "amount": None if i.amount is None else str(i.amount),
                     "currency": i.currency, "payload": i.payload,
                     "refers_to_id": i.refers_to_id, "agent_id": i.agent_id})


def test_refunds_reverse_an_earlier_purchase_of_the_same_customer(app: Flask) -> None:
    demo()
    purchases = {p.id: p for p in db.session.scalars(
        select(Interaction).where(Interaction.kind == "purchase"))}
    refunds = db.session.scalars(select(Interaction).where(Interaction.kind == "refund")).all()

    assert refunds
    for refund in refunds:
        assert refund.refers_to_id is not None and refund.amount is not None
        purchase = purchases[refund.refers_to_id]
        assert purchase.amount is not None
        assert refund.customer_id == purchase.customer_id
        assert refund.currency == purchase.currency
        assert Decimal(0) < refund.amount <= purchase.amount
        assert refund.occurred_at > purchase.occurred_at
    for purchase in purchases.values():
        assert purchase.amount is not None and purchase.amount > 0
        assert purchase.currency is not None
        exponent = purchase.amount.normalize().as_tuple().exponent
        assert isinstance(exponent, int) and -exponent <= currency_decimals(purchase.currency)


def test_frequency_recency_and_spend_differ_enough_for_rfm_segments(app: Flask) -> None:
    demo(200)
    rows = db.session.execute(
        select(Interaction.customer_id, func.count(), func.max(Interaction.occurred_at),
               func.sum(Interaction.amount))
        .where(Interaction.kind == "purchase", Interaction.currency == "USD")
        .group_by(Interaction.customer_id)).all()
    frequency = sorted(n for _, n, _, _ in rows)
    recency_days = [(AS_OF - last).days for _, _, last, _ in rows]
    spend = sorted(total for _, _, _, total in rows)
    buyers = {customer_id for customer_id, *_ in rows}

    assert frequency[-len(frequency) // 10] >= 3 * statistics.median(frequency)
    assert sum(d <= 30 for d in recency_days) >= len(rows) // 4       # recent buyers
    assert sum(d >= 120 for d in recency_days) >= len(rows) // 10     # gone quiet
    assert spend[-len(spend) // 10] >= 3 * statistics.median(spend)
    assert count(Customer) - len(buyers) >= 10                        # prospects, abroad


def test_a_seed_and_as_of_reproduce_the_data(app: Flask, probe: DemoProbe) -> None:
    demo(45, seed=3, chunk_size=20)
    first, draws = snapshot(), [c["draw"] for c in probe.calls]
    clear()
    probe.calls.clear()
    demo(45, seed=3, chunk_size=20)
    assert snapshot() == first
    assert [c["draw"] for c in probe.calls] == draws  # plugins share the seeded stream
    clear()
    demo(45, seed=4, chunk_size=20)
    assert snapshot() != first


def test_the_hook_gets_each_chunk_of_customers_inside_its_transaction(
        app: Flask, probe: DemoProbe) -> None:
    demo(120, chunk_size=50)

    assert [len(c["ids"]) for c in probe.calls] == [50, 50, 20]
    assert sorted(i for c in probe.calls for i in c["ids"]) == sorted(
        db.session.scalars(select(Customer.id)))
    assert all(c["as_of"] == AS_OF and c["in_transaction"] for c in probe.calls)
    assert count(Alert) == 3  # the plugin's rows were committed with each chunk


def test_customers_registered_twice_are_found_by_duplicate_detection(app: Flask) -> None:
    summary = demo(160)

    groups = find_duplicates()
    assert len(summary.near_duplicates) == 4
    found = {frozenset(g.customer_ids): g.reason for g in groups}
    reasons = [found.get(frozenset(pair)) for pair in summary.near_duplicates]
    assert None not in reasons
    assert set(reasons) == {"email", "phone", "name_city"}


def test_a_second_demo_on_the_same_database_is_refused(app: Flask) -> None:
    demo(10)
    with pytest.raises(UserError, match="already holds demo data"):
        demo(10)
    assert count(Customer) == 10


def test_the_demo_command(app: Flask) -> None:
    runner = app.test_cli_runner()

    result = runner.invoke(rapport_cli, args=["demo", "--customers", "30", "--seed", "11"])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("demo data: 30 customers, ")
    assert result.stdout.rstrip().endswith("(seed 11)")
    assert count(Customer) == 30
    again = runner.invoke(rapport_cli, args=["demo"])
    assert again.exit_code == 1 and "already holds demo data" in again.output


# --- helpers -----------------------------------------------------------------------------


def snapshot() -> tuple[list[Any], list[Any]]:
    """The data without database ids: customers by external id, their interactions."""
    external: dict[int, str] = {customer_id: external_id for customer_id, external_id in
                                db.session.execute(select(CustomerExternalId.customer_id,
                                                          CustomerExternalId.external_id))}
    customers = sorted(
        (external[c.id], c.name, c.email, c.phone, c.birth_date, c.gender, c.city,
         c.income_band, c.lifecycle_stage, c.attributes, c.created_at)
        for c in db.session.scalars(select(Customer)))
    by_id = {i.id: i for i in db.session.scalars(select(Interaction))}
    interactions = sorted(
        (external[i.customer_id], i.occurred_at, i.kind, i.amount, i.currency, i.channel,
         sorted(i.payload.items()),
         by_id[i.refers_to_id].occurred_at if i.refers_to_id else None)
        for i in by_id.values())
    return customers, interactions


def clear() -> None:
    for model in (Alert, Interaction, CustomerTag, CustomerExternalId, Customer, Agent):
        db.session.execute(delete(model))
    db.session.commit()
    assert db.session.scalar(select(func.count()).where(
        CustomerExternalId.source == DEMO_SOURCE)) == 0
