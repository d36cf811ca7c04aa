"""Customer services: validation, external ids, duplicates, merge, erase, export."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.db import db
from core.errors import UserError
from core.ids import global_id
from core.models import Customer, CustomerExternalId, CustomerStatus, CustomerTag, Interaction
from core.services import customers
from core.services.interactions import record_interaction
from tests.conftest import wait_for_a_lock_wait

WHEN = "2026-05-01T09:00:00Z"


def _codes(exc: pytest.ExceptionInfo[UserError]) -> dict[str | None, str]:
    return {e.field: e.code for e in exc.value.errors}


def test_create_normalises_and_stores_everything(app: Flask) -> None:
    customer = customers.create_customer({
        "name": "  José  Álvarez ", "email": "Jose@Example.COM", "phone": "+33 (1) 23 45 67 89",
        "birth_date": "1990-04-02", "country": "fr", "city": "Lyon", "tags": ["VIP", "vip", " b "],
        "attributes": {"segment": "gold", "score": 3}, "source": "shop", "external_id": "C1"})
    assert customer.name == "José  Álvarez"
    # The look-up columns hold keyed hashes of the normalised values, never the values.
    assert customer.email_blind_index == customers.email_blind_index("jose@example.com")
    assert customer.phone_blind_index == customers.phone_blind_index("3123456789")
    assert "jose" not in customer.email_blind_index
    assert customer.name_normalized == "jose alvarez"
    assert customer.country == "FR"
    assert customer.birth_date == dt.date(1990, 4, 2)
    assert customers.tags_of([customer.id])[customer.id] == ["b", "vip"]
    assert customers.find_by_external_id("shop", "C1").id == customer.id


@pytest.mark.parametrize(("raw", "field", "code"), [
    ({}, "name", "INVALID"),
    ({"name": "A", "email": "not-an-email"}, "email", "INVALID"),
    ({"name": "A", "phone": "call me"}, "phone", "INVALID"),
    ({"name": "A", "birth_date": "2999-01-01"}, "birthDate", "INVALID"),
    ({"name": "A", "country": "France"}, "country", "INVALID"),
    ({"name": "A", "attributes": {"bad key": 1}}, "attributes", "INVALID"),
    ({"name": "A", "attributes": {"nested": {"a": 1}}}, "attributes", "INVALID"),
    ({"name": "A", "shoe_size": 42}, "shoeSize", "UNKNOWN_FIELD"),
    ({"name": "A", "lifecycle_stage": "zombie"}, "lifecycleStage", "INVALID"),
    ({"name": "A", "owner_id": 999}, "ownerId", "NOT_FOUND"),
])
def test_bad_customer_input_is_a_typed_error_and_writes_nothing(
        app: Flask, raw: dict, field: str, code: str) -> None:
    with pytest.raises(UserError) as exc:
        customers.create_customer(raw)
    assert _codes(exc).get(field) == code, exc.value.errors
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_external_id_is_unique_per_source(app: Flask) -> None:
    first = customers.create_customer({"name": "A", "source": "shop", "external_id": "1"})
    customers.create_customer({"name": "B", "source": "crm", "external_id": "1"})
    with pytest.raises(UserError) as exc:
        customers.create_customer({"name": "C", "source": "shop", "external_id": "1"})
    assert _codes(exc) == {"externalId": "UNIQUE"}
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 2
    assert customers.find_by_external_id("shop", "1").id == first.id


def test_update_is_partial_and_null_clears(app: Flask) -> None:
    customer = customers.create_customer({"name": "A", "email": "a@x.io", "city": "Oslo",
                                          "attributes": {"k": "v", "n": 1}, "tags": ["x"]})
    updated = customers.update_customer(customer.id, {"city": None, "attributes": {"k": None},
                                                      "tags": ["y"]})
    assert updated.email == "a@x.io"
    assert updated.city is None
    assert updated.attributes == {"n": 1}
    assert customers.tags_of([customer.id])[customer.id] == ["y"]
    with pytest.raises(UserError) as exc:
        customers.update_customer(customer.id, {"email": "nope"})
    assert _codes(exc) == {"email": "INVALID"}
    with pytest.raises(UserError) as exc:
        customers.update_customer(12345, {"name": "B"})
    assert _codes(exc) == {"id": "NOT_FOUND"}


def test_duplicates_by_email_phone_and_similar_name(app: Flask) -> None:
    a = customers.create_customer({"name": "Ann Lee", "email": "ANN@x.io"})
    b = customers.create_customer({"name": "Ann Lee", "email": " ann@x.io"})
    c = customers.create_customer({"name": "Bob", "phone": "+1 555 0100 200"})
    d = customers.create_customer({"name": "Robert", "phone": "555-0100-200"})
    e = customers.create_customer({"name": "Katherine Smith", "city": "Leeds"})
    f = customers.create_customer({"name": "Katharine Smith", "city": "Leeds"})
    customers.create_customer({"name": "Katherine Smith", "city": "York"})
    groups = {(g.reason, tuple(g.customer_ids)) for g in customers.find_duplicates()}
    assert ("email", (a.id, b.id)) in groups
    assert ("phone", (c.id, d.id)) in groups
    assert ("name_city", (e.id, f.id)) in groups
    assert len(groups) == 3


def _purchase(customer_id: int, amount: str, external_id: str | None = None) -> Interaction:
    raw = {"customer_id": customer_id, "kind": "purchase", "occurred_at": WHEN,
           "amount": amount, "currency": "USD"}
    if external_id:
        raw |= {"source": "shop", "external_id": external_id}
    return record_interaction(raw)


def test_merge_keeps_every_interaction_and_fills_gaps(app: Flask) -> None:
    survivor = customers.create_customer({"name": "Ann Lee", "email": "ann@x.io",
                                          "tags": ["a"], "source": "shop", "external_id": "1"})
    other = customers.create_customer({"name": "Ann L.", "phone": "555 1234", "city": "Oslo",
                                       "tags": ["b"], "source": "crm", "external_id": "9",
                                       "attributes": {"k": 1}})
    _purchase(survivor.id, "10.00")
    _purchase(other.id, "5.50")
    merged = customers.merge_customers(survivor.id, [other.id])
    assert merged.name == "Ann Lee"
    assert merged.phone == "555 1234" and merged.city == "Oslo"
    assert merged.attributes == {"k": 1}
    assert db.session.get(Customer, other.id) is None
    total = db.session.scalar(select(func.sum(Interaction.amount)).where(
        Interaction.customer_id == survivor.id))
    assert total == Decimal("15.50")
    assert customers.tags_of([survivor.id])[survivor.id] == ["a", "b"]
    assert customers.find_by_external_id("crm", "9").id == survivor.id


def test_merge_errors(app: Flask) -> None:
    a = customers.create_customer({"name": "A"})
    for others, field, code in (([a.id], "mergedIds", "INVALID"),
                                ([999], "mergedIds", "NOT_FOUND")):
        with pytest.raises(UserError) as exc:
            customers.merge_customers(a.id, others)
        assert _codes(exc) == {field: code}
    with pytest.raises(UserError) as exc:
        customers.merge_customers(999, [a.id])
    assert _codes(exc) == {"survivorId": "NOT_FOUND"}


def test_erase_removes_personal_data_and_keeps_accounting(app: Flask) -> None:
    customer = customers.create_customer({
        "name": "Eve", "email": "eve@x.io", "phone": "555 9999", "birth_date": "1980-01-01",
        "city": "Rome", "tags": ["vip"], "attributes": {"k": "v"}, "source": "shop",
        "external_id": "E1"})
    purchase = _purchase(customer.id, "99.99")
    db.session.execute(Interaction.__table__.update().values(payload={"note": "call Eve"}))
    db.session.commit()
    result = customers.erase_customer(customer.id)
    erased = db.session.get(Customer, customer.id)
    assert erased.status == CustomerStatus.ERASED
    assert (erased.name, erased.email, erased.phone, erased.birth_date, erased.city) == (
        None, None, None, None, None)
    assert (erased.email_blind_index, erased.phone_blind_index) == (None, None)
    assert erased.attributes == {}
    assert db.session.scalar(select(func.count()).select_from(CustomerTag)) == 0
    assert db.session.scalar(select(func.count()).select_from(CustomerExternalId)) == 0
    kept = db.session.get(Interaction, purchase.id)
    assert kept.amount == Decimal("99.99") and kept.payload == {}
    assert result.reports["core"]["external_ids_removed"] == 1
    assert "email" in result.reports["core"]["fields_cleared"]
    with pytest.raises(UserError) as exc:
        customers.erase_customer(customer.id)
    assert _codes(exc) == {"id": "NOT_ALLOWED"}
    with pytest.raises(UserError):
        customers.update_customer(customer.id, {"name": "Back"})
    with pytest.raises(UserError) as exc:
        _purchase(customer.id, "1.00")
    assert _codes(exc) == {"customerId": "NOT_ALLOWED"}


def _keys(document: Any) -> list[str]:
    """Every key Rapport defines in an export (users' attributes and payloads left out)."""
    if isinstance(document, list):
        return [k for item in document for k in _keys(item)]
    if not isinstance(document, dict):
        return []
    return [k for key, value in document.items() for k in
            [key, *([] if key in ("attributes", "payload") else _keys(value))]]


def test_export_is_one_json_document(app: Flask) -> None:
    import json

    customer = customers.create_customer({"name": "Xi", "email": "xi@x.io", "tags": ["t"],
                                          "source": "shop", "external_id": "X"})
    bought = _purchase(customer.id, "12.30", "P1")
    document = customers.export_customer(customer.id)
    assert json.loads(json.dumps(document)) == document
    assert document["customer"]["email"] == "xi@x.io"
    assert document["customer"]["externalIds"] == [{"source": "shop", "externalId": "X"}]
    assert document["interactions"][0]["amount"] == "12.30"
    # One face: global ids and camelCase keys, as GraphQL shows them.
    assert document["customer"]["id"] == global_id("Customer", customer.id)
    assert document["interactions"][0]["id"] == global_id("Interaction", bought.id)
    assert {"birthDate", "incomeBand", "lifecycleStage", "ownerId", "createdAt",
            "updatedAt"} <= set(document["customer"])
    assert {"occurredAt", "externalId", "refersToId"} <= set(document["interactions"][0])
    assert "exportedAt" in document
    assert not [k for k in _keys(document) if "_" in k]


def test_status_changes_only_through_the_service(app: Flask) -> None:
    customer = customers.create_customer({"name": "C"})
    assert customers.set_customer_status(customer.id, CustomerStatus.CHURNED).status == \
        CustomerStatus.CHURNED
    with pytest.raises(ValueError):
        customers.set_customer_status(customer.id, CustomerStatus.ERASED)


def test_two_creates_racing_for_one_external_id_give_one_typed_error(
        app: Flask, dialect: str) -> None:
    """The second creator waits on the first's row and gets UNIQUE, not a crash."""
    import threading

    from sqlalchemy import create_engine, insert

    from core.models import Customer as CustomerRow

    if dialect != "postgresql":
        pytest.skip("SQLite serialises writers: no race to lose")
    # The first request: inserted, not yet committed, holding the unique key.
    engine = create_engine(db.engine.url)
    first = engine.connect()
    first_tx = first.begin()
    first_id = first.execute(insert(CustomerRow).values(
        name="First", attributes={}, lifecycle_stage="customer", status="active",
        created_at=dt.datetime.now(dt.timezone.utc),
        updated_at=dt.datetime.now(dt.timezone.utc)).returning(CustomerRow.id)).scalar_one()
    first.execute(insert(CustomerExternalId).values(customer_id=first_id, source="shop",
                                                   external_id="RACE"))
    outcome: dict[str, object] = {}

    def second() -> None:
        with app.app_context():
            try:
                customers.create_customer({"name": "Second", "source": "shop",
                                           "external_id": "RACE"})
                outcome["result"] = "created"
            except UserError as exc:
                outcome["result"] = [(e.field, e.code) for e in exc.errors]
            except Exception as exc:  # noqa: BLE001 - the defect this test guards against
                outcome["result"] = repr(exc)

    worker = threading.Thread(target=second)
    worker.start()
    # Let the second request reach the unique index and wait on the first's row.
    wait_for_a_lock_wait(engine, tries=200)
    first_tx.commit()
    first.close()
    worker.join(timeout=30)
    engine.dispose()
    assert outcome["result"] == [("externalId", "UNIQUE")]
    assert customers.find_by_external_id("shop", "RACE").id == first_id
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1
