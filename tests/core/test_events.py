"""The event catalogue, the outbox and the relay.

- every declared type is documented in docs/events.md with its payload's fields;
- the catalogue refuses badly formed declarations;
- a rolled-back change emits nothing; committed events are relayed oldest first, in order
  per aggregate, marked delivered, and come again when a consumer fails;
- on PostgreSQL two relays never hand out the same event and keep the order per aggregate.

tests/core/test_event_emission.py checks that each declared type is emitted.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from core import hookimpl, outbox
from core.changes import Event, record
from core.config import ConfigError
from core.db import db
from core.ids import global_id
from core.models import OutboxEvent
from core.services import transaction
from core.services.customers import create_customer
from tests.conftest import AppFactory

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"
ALL_PLUGINS = ["loyalty", "complaints", "churn", "surveys", "webhooks", "care",
               "segments"]


def _sections(text: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("#"):
            current = line[4:].strip() if line.startswith("### ") else None
            if current is not None:
                assert current not in sections, f"### {current} appears twice"
                sections[current] = ""
            continue
        if current is not None:
            sections[current] += line + "\n"
    return sections


def test_every_declared_type_is_documented(make_app: AppFactory) -> None:
    app = make_app(enabled=ALL_PLUGINS)
    declared = outbox.catalogue(app)
    sections = _sections(DOCS.read_text())
    assert sorted(sections) == sorted(declared), "docs/events.md and the catalogue differ"
    for name, event_type in declared.items():
        documented = set(re.findall(r"^\| `(\w+)` \|", sections[name], re.M))
        assert documented == set(event_type.schema["properties"]), name
        assert "```json" in sections[name], f"{name}: no JSON example"


def test_the_envelope_is_documented() -> None:
    text = DOCS.read_text()
    for key in ("id", "type", "occurredAt", "actor", "data"):
        assert f'"{key}":' in text


class Declares:
    def __init__(self, *types: tuple[str, str, dict[str, Any]]):
        self.types = list(types)
        self.__name__ = "declares"

    @hookimpl
    def rapport_event_types(self) -> list[tuple[str, str, dict[str, Any]]]:
        return self.types


@pytest.mark.parametrize("declared, message", [
    (("Customer.Created", "", {"type": "object"}), "lower case"),
    (("customer", "", {"type": "object"}), "lower case"),
    (("customer.created", "", {"type": "object"}), "already declared"),
    (("widget.made", "", {"type": "object"}), "no '<domain>:read' scope"),
    (("customer.poked", "", {"properties": {}}), "JSON Schema object"),
])
def test_the_catalogue_refuses_bad_declarations(make_app: AppFactory, declared: Any,
                                                message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_app(plugins=(Declares(declared),))


def test_a_domain_is_the_first_word_or_its_plural(make_app: AppFactory) -> None:
    app = make_app(enabled=["loyalty"])
    types = outbox.catalogue(app)
    assert types["customer.created"].domain == "customers"
    assert types["interactions.imported"].domain == "interactions"
    assert types["alert.raised"].domain == "alerts"
    assert types["loyalty.tier.changed"].domain == "loyalty"


# --- Outbox and relay ------------------------------------------------------------------------


class Collects:
    """A consumer of relayed events; fails while ``failing`` is set."""

    __name__ = "collects"

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.failing = False

    @hookimpl
    def rapport_events_relayed(self, events: list[dict[str, Any]]) -> None:
        if self.failing:
            raise RuntimeError("consumer down")
        self.batches.append(events)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for batch in self.batches for e in batch]


class Refuses:
    __name__ = "refuses"

    @hookimpl
    def rapport_customer_created(self, customer: Any) -> None:
        raise RuntimeError("no")


def _waiting() -> int:
    return int(db.session.scalar(select(func.count()).select_from(OutboxEvent).where(
        OutboxEvent.delivered_at.is_(None))))


def test_a_rolled_back_change_emits_nothing(make_app: AppFactory) -> None:
    consumer = Collects()
    app = make_app(plugins=(Refuses(), consumer))
    with app.app_context():
        with pytest.raises(RuntimeError):
            create_customer({"name": "Ada"})
        assert db.session.scalar(select(func.count()).select_from(OutboxEvent)) == 0
        assert outbox.relay_all() == 0
        assert consumer.events == []


def test_committed_events_are_relayed_in_order_and_marked(make_app: AppFactory) -> None:
    consumer = Collects()
    app = make_app(plugins=(consumer,))
    with app.app_context():
        ids = [create_customer({"name": f"C{n}", "email": f"c{n}@example.com"}).id
               for n in range(5)]
        assert _waiting() == 5
        assert outbox.relay_all(limit=2) == 5
        assert [len(b) for b in consumer.batches] == [2, 2, 1]
        relayed = consumer.events
        assert [e["data"]["customerId"] for e in relayed] == [
            global_id("Customer", i) for i in ids]
        assert all(set(e) == {"id", "type", "occurredAt", "actor", "data"} for e in relayed)
        assert "example.com" not in repr(relayed)
        assert _waiting() == 0
        assert outbox.relay_all() == 0 and len(consumer.events) == 5


def test_a_failing_consumer_gets_the_events_again(make_app: AppFactory) -> None:
    consumer = Collects()
    app = make_app(plugins=(consumer,))
    with app.app_context():
        create_customer({"name": "Ada"})
        consumer.failing = True
        with pytest.raises(RuntimeError):
            outbox.relay_once()
        assert _waiting() == 1
        consumer.failing = False
        assert outbox.relay_once() == 1
        assert [e["type"] for e in consumer.events] == ["customer.created"]


def test_the_relay_job_and_the_cli(make_app: AppFactory) -> None:
    consumer = Collects()
    app = make_app(plugins=(consumer,))
    with app.app_context():
        create_customer({"name": "Ada"})
        result = app.test_cli_runner().invoke(args=["outbox", "status"])
        assert "1 event(s) waiting" in result.output
        result = app.test_cli_runner().invoke(args=["outbox", "relay"])
        assert result.exit_code == 0, result.output
        assert "1 event(s) relayed" in result.output
        create_customer({"name": "Grace"})
        from core import jobs

        kind = jobs.job_kinds()[outbox.RELAY_JOB_KIND]
        assert kind.function({}, None) == {"relayed": 1}
        assert len(consumer.events) == 2


def test_the_embedded_relay_is_woken_by_a_commit(make_app: AppFactory) -> None:
    consumer = Collects()
    app = make_app(plugins=(consumer,), RAPPORT_OUTBOX_RELAY="thread")
    state = app.extensions[outbox.EXTENSION]
    state.relay.poll = 60.0  # only a wake-up can make it relay within the test
    try:
        with app.app_context():
            app.test_client().get("/graphql")  # a first request starts it, as in a server
            create_customer({"name": "Ada"})
            for _ in range(200):
                if consumer.events:
                    break
                threading.Event().wait(0.02)
            assert [e["type"] for e in consumer.events] == ["customer.created"]
    finally:
        state.relay.stop()


@pytest.mark.postgres_only
def test_two_relays_never_deliver_one_event_twice(make_app: AppFactory, dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("SQLite serialises writers: concurrency only means something on PostgreSQL")
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Slow:
        __name__ = "slow"

        @hookimpl
        def rapport_events_relayed(self, events: list[dict[str, Any]]) -> None:
            threading.Event().wait(0.01)  # hold the batch while the other relay runs
            with lock:
                seen.extend(events)

    app = make_app(plugins=(Slow(),))
    aggregates = [global_id("Customer", n) for n in range(1, 6)]
    with app.app_context():
        for round_ in range(40):
            with transaction():
                record("test", [], events=[Event("customer.updated", a, {
                    "customerId": a, "changedFields": [f"r{round_}"]}) for a in aggregates])

    def relay() -> None:
        with app.app_context():
            while outbox.relay_once(limit=15):
                pass
            db.session.remove()

    threads = [threading.Thread(target=relay) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 200 and len({e["id"] for e in seen}) == 200
    for aggregate in aggregates:
        rounds = [int(e["data"]["changedFields"][0][1:]) for e in seen
                  if e["data"]["customerId"] == aggregate]
        assert rounds == sorted(rounds) == list(range(40))
