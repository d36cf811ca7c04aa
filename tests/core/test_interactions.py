"""Recording interactions: idempotent external ids, references, batches, kinds."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.db import db
from core.errors import UserError
from core.models import Interaction
from core.services.customers import create_customer
from core.services.interactions import BatchRejected, record_interaction, record_interactions

WHEN = "2026-04-01T08:00:00"


def _count() -> int:
    return db.session.scalar(select(func.count()).select_from(Interaction)) or 0


def test_naive_time_means_utc_and_currency_is_normalised(app: Flask) -> None:
    customer = create_customer({"name": "T"})
    interaction = record_interaction({"customer_id": customer.id, "kind": "purchase",
                                      "occurred_at": WHEN, "amount": "3.5", "currency": "eur"})
    assert interaction.occurred_at == dt.datetime(2026, 4, 1, 8, tzinfo=dt.timezone.utc)
    assert interaction.currency == "EUR"


def test_same_external_id_returns_the_stored_interaction(app: Flask) -> None:
    customer = create_customer({"name": "T"})
    raw = {"customer_id": customer.id, "kind": "call", "occurred_at": WHEN, "source": "pbx",
           "external_id": "call-1"}
    first = record_interaction(raw)
    again = record_interaction(raw)
    assert again.id == first.id and _count() == 1


def test_refund_refers_to_a_purchase_of_the_same_customer(app: Flask) -> None:
    ann = create_customer({"name": "Ann"})
    bob = create_customer({"name": "Bob"})
    purchase = record_interaction({"customer_id": ann.id, "kind": "purchase", "occurred_at": WHEN,
                                   "amount": "10", "currency": "USD"})
    refund = record_interaction({"customer_id": ann.id, "kind": "refund", "occurred_at": WHEN,
                                 "amount": "10", "currency": "USD",
                                 "refers_to_id": purchase.id})
    assert refund.refers_to_id == purchase.id
    for customer_id, ref, code in ((bob.id, purchase.id, "INVALID"),
                                   (ann.id, 999_999, "NOT_FOUND")):
        with pytest.raises(UserError) as exc:
            record_interaction({"customer_id": customer_id, "kind": "refund",
                                "occurred_at": WHEN, "amount": "1", "currency": "USD",
                                "refers_to_id": ref})
        assert [(e.field, e.code) for e in exc.value.errors] == [("refersTo", code)]
    assert _count() == 2


def test_batch_skips_known_external_ids_and_duplicates_inside_the_batch(app: Flask) -> None:
    customer = create_customer({"name": "T"})

    def row(ext: str) -> dict:
        return {"customer_id": customer.id, "kind": "visit", "occurred_at": WHEN,
                "source": "store", "external_id": ext}

    first = record_interactions([row("a"), row("b")])
    assert first.recorded == 2
    second = record_interactions([row("a"), row("c"), row("c")], partial=True)
    assert second.recorded == 1
    assert second.existing_ids == {0: first.recorded_ids[0]}
    assert [(e.field, e.code) for e in second.errors] == [("2.externalId", "UNIQUE")]
    with pytest.raises(BatchRejected) as exc:
        record_interactions([row("d"), {"customer_id": customer.id, "kind": "nope",
                                        "occurred_at": WHEN}])
    assert [e.field for e in exc.value.errors] == ["1.kind"]
    assert _count() == 3


def test_batch_is_one_insert(app: Flask) -> None:
    from tests.conftest import count_statements

    customer = create_customer({"name": "T"})
    rows = [{"customer_id": customer.id, "kind": "email", "occurred_at": WHEN}] * 500
    with count_statements(app) as statements:
        result = record_interactions(rows)
    assert result.recorded == 500
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    # The interactions in one statement, plus the batch's one audit entry and one event:
    # on PostgreSQL the entry, its object rows and the event are one statement
    # (core.changes.record's data-modifying CTEs), on SQLite one INSERT each.
    if db.engine.dialect.name == "postgresql":
        audit = [s for s in statements if s.lstrip().upper().startswith("WITH ENTRY AS")]
        assert [s.split()[2] for s in inserts] == ["interactions"], inserts
        assert len(audit) == 1 and "INSERT INTO outbox_events" in audit[0], audit
    else:
        assert [s.split()[2] for s in inserts] == ["interactions", "audit_entries",
                                                   "outbox_events"], inserts
