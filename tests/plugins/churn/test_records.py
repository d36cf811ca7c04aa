"""Churn records: marking one or a batch, reactivating, and every kind of bad input."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask
from graphene import relay
from sqlalchemy import func, select

from core.db import db
from core.errors import UserError
from core.models import Customer, CustomerStatus
from core.services.customers import erase_customer
from core.services.staff import create_agent
from core.services.interactions import BatchRejected
from plugins.churn import service
from plugins.churn.errors import ChurnErrorCode
from plugins.churn.models import ChurnReason, ChurnRecord, ChurnType
from tests.conftest import GraphQL, count_statements
from tests.plugins.churn.conftest import NOW, customer, days_ago, mark, purchase


def gid(type_name: str, number: int) -> str:
    return relay.Node.to_global_id(type_name, number)


def codes(exc: pytest.ExceptionInfo[UserError]) -> list[str]:
    return [e.code for e in exc.value.errors]


def status(customer_id: int) -> CustomerStatus:
    db.session.expire_all()
    return db.session.get(Customer, customer_id).status  # type: ignore[union-attr]


def test_mark_sets_the_record_and_the_core_status(churn_app: Flask) -> None:
    ada = customer()
    record = mark(ada, days_ago(3), "negligence", "CORE_SERVICE_FAILURE", note="Broke twice")
    assert (record.type, record.reason, record.churned_at, record.note) == (
        ChurnType.NEGLIGENCE, ChurnReason.CORE_SERVICE_FAILURE, days_ago(3), "Broke twice")
    assert record.reactivated_at is None
    assert status(ada) == CustomerStatus.CHURNED


@pytest.mark.parametrize(("change", "code", "field"), [
    ({"type": "bored"}, ChurnErrorCode.UNKNOWN_TYPE, "type"),
    ({"reason": "weather"}, ChurnErrorCode.UNKNOWN_REASON, "reason"),
    ({"churned_at": days_ago(500).isoformat()}, ChurnErrorCode.BEFORE_CUSTOMER_EXISTED,
     "churnedAt"),
    ({"churned_at": days_ago(-2).isoformat()}, ChurnErrorCode.IN_THE_FUTURE, "churnedAt"),
    ({"churned_at": "yesterday"}, "INVALID", "churnedAt"),
    ({"customer_id": 999_999}, "NOT_FOUND", "customerId"),
    ({"colour": "red"}, "UNKNOWN_FIELD", "colour"),
])
def test_bad_marks_are_typed_errors_and_write_nothing(churn_app: Flask, change: dict,
                                                      code: str, field: str) -> None:
    ada = customer()
    raw = {"customer_id": ada, "type": "natural", "reason": "other",
           "churned_at": days_ago(1).isoformat(), **change}
    with pytest.raises(UserError) as exc:
        service.mark_churned(raw)
    assert (exc.value.errors[0].code, exc.value.errors[0].field.split(".")[-1]) == (code, field)
    assert db.session.scalar(select(func.count()).select_from(ChurnRecord)) == 0
    assert status(ada) == CustomerStatus.ACTIVE


def test_existence_starts_at_the_first_interaction(churn_app: Flask) -> None:
    """An imported customer (created today) with purchases last year existed last year."""
    ada = customer(created_days_ago=0)
    purchase(ada, days_ago(300))
    assert mark(ada, days_ago(200)).churned_at == days_ago(200)


def test_already_churned_and_reactivating_an_active_customer(churn_app: Flask) -> None:
    ada, bob = customer(), customer("Bob")
    mark(ada, days_ago(10))
    with pytest.raises(UserError) as exc:
        mark(ada, days_ago(5))
    assert codes(exc) == [ChurnErrorCode.ALREADY_CHURNED]
    with pytest.raises(UserError) as exc:
        service.reactivate_customer({"customer_id": bob})
    assert codes(exc) == [ChurnErrorCode.NOT_CHURNED]
    with pytest.raises(UserError) as exc:
        service.reactivate_customer({"customer_id": ada,
                                     "reactivated_at": days_ago(20).isoformat()})
    assert codes(exc) == ["INVALID"]
    record = service.reactivate_customer({"customer_id": ada, "reason": "Moved back"})
    assert (record.reactivation_reason, status(ada)) == ("Moved back", CustomerStatus.ACTIVE)
    again = mark(ada, dt.datetime.now(dt.timezone.utc))  # after the reactivation: a 2nd record
    assert again.id != record.id


def test_erased_customer_cannot_be_marked(churn_app: Flask) -> None:
    ada = customer()
    erase_customer(ada)
    with pytest.raises(UserError) as exc:
        mark(ada)
    assert codes(exc) == [ChurnErrorCode.CUSTOMER_ERASED]


def test_batch_all_or_nothing_and_partial(churn_app: Flask) -> None:
    ada, bob, cy = customer("Ada"), customer("Bob"), customer("Cy")
    items = [{"customer_id": ada, "type": "natural", "reason": "other"},
             {"customer_id": bob, "type": "nope", "reason": "other"},
             {"customer_id": ada, "type": "natural", "reason": "pricing"},
             {"customer_id": cy, "type": "malicious", "reason": "ethical",
              "churned_at": days_ago(2).isoformat()}]
    with pytest.raises(BatchRejected) as exc:
        service.mark_customers_churned(items)
    assert [(e.field, e.code) for e in exc.value.errors] == [
        ("1.type", ChurnErrorCode.UNKNOWN_TYPE), ("2.customerId", ChurnErrorCode.ALREADY_CHURNED)]
    assert db.session.scalar(select(func.count()).select_from(ChurnRecord)) == 0
    result = service.mark_customers_churned(items, partial=True, now=NOW)
    assert sorted(result.recorded_ids) == [0, 3]
    assert sorted(result.rejected) == [1, 2]
    assert [status(c) for c in (ada, bob, cy)] == [
        CustomerStatus.CHURNED, CustomerStatus.ACTIVE, CustomerStatus.CHURNED]
    # Re-sending the same marks (same customer and date) skips them: an import re-run.
    rerun = service.mark_customers_churned([items[3]], partial=True)
    assert (rerun.recorded, rerun.existing_ids) == (0, {0: result.recorded_ids[3]})


MARK = """mutation($input: MarkCustomerChurnedInput!) { markCustomerChurned(input: $input) {
  churnRecord { id type reason churnedAt note open } customer { status }
  errors { field message code } } }"""

MARK_MANY = """mutation($input: MarkCustomersChurnedInput!) { markCustomersChurned(input: $input) {
  churnRecords { type customer { id } } recordedCount errors { field code } } }"""


def test_graphql_mark_history_and_reactivate(churn_app: Flask, gql: GraphQL) -> None:
    ada = customer()
    create_agent({"name": "Grace", "email": "grace@example.com"})
    data = gql(MARK, {"input": {"customerId": gid("Customer", ada), "type": "COMPETITIVE",
                                "reason": "COMPETITION", "note": "Went to a rival",
                                "churnedAt": days_ago(4).isoformat()}},
               headers={"X-Rapport-Agent": "grace@example.com"})["markCustomerChurned"]
    assert data["errors"] == []
    assert (data["churnRecord"]["type"], data["churnRecord"]["reason"],
            data["churnRecord"]["open"], data["customer"]["status"]) == (
        "COMPETITIVE", "COMPETITION", True, "CHURNED")
    again = gql(MARK, {"input": {"customerId": gid("Customer", ada), "type": "NATURAL",
                                 "reason": "OTHER"}})["markCustomerChurned"]
    assert again["churnRecord"] is None
    assert again["errors"][0]["code"] == "ALREADY_CHURNED"
    assert again["errors"][0]["field"] == "input.customerId"
    back = gql("""mutation($input: ReactivateCustomerInput!) { reactivateCustomer(input: $input)
        { churnRecord { open reactivationReason } customer { status } errors { code } } }""",
               {"input": {"customerId": gid("Customer", ada), "reason": "Came back"}})
    assert back["reactivateCustomer"] == {
        "churnRecord": {"open": False, "reactivationReason": "Came back"},
        "customer": {"status": "ACTIVE"}, "errors": []}
    history = gql("query($id: ID!) { node(id: $id) { ... on Customer { churnRecords { type "
                  "open recordedBy { name } } } } }", {"id": gid("Customer", ada)})
    assert history["node"]["churnRecords"] == [
        {"type": "COMPETITIVE", "open": False, "recordedBy": {"name": "Grace"}}]


def test_graphql_unknown_enum_value_is_a_validation_error(churn_app: Flask,
                                                          gql: GraphQL) -> None:
    response = gql.raw(MARK, {"input": {"customerId": gid("Customer", customer()),
                                        "type": "BORED", "reason": "OTHER"}})
    body = response.get_json()
    assert response.status_code in (200, 400)
    assert body["errors"][0]["extensions"]["code"] in ("GRAPHQL_VALIDATION_FAILED",
                                                       "BAD_USER_INPUT")
    assert db.session.scalar(select(func.count()).select_from(ChurnRecord)) == 0


def test_graphql_batch_errors_carry_the_index(churn_app: Flask, gql: GraphQL) -> None:
    ada, bob = customer("Ada"), customer("Bob")
    marks = [{"customerId": gid("Customer", ada), "type": "NATURAL", "reason": "OTHER"},
             {"customerId": "not-an-id", "type": "NATURAL", "reason": "OTHER"},
             {"customerId": gid("Customer", bob), "type": "NATURAL", "reason": "OTHER",
              "churnedAt": days_ago(-3).isoformat()}]
    data = gql(MARK_MANY, {"input": {"marks": marks}})["markCustomersChurned"]
    assert data["recordedCount"] == 0
    assert [(e["field"], e["code"]) for e in data["errors"]] == [
        ("input.marks.1.customerId", "INVALID"), ("input.marks.2.churnedAt", "IN_THE_FUTURE")]
    partial = gql(MARK_MANY, {"input": {"marks": marks, "partial": True}})
    result = partial["markCustomersChurned"]
    assert result["recordedCount"] == 1
    assert result["churnRecords"][0]["customer"]["id"] == gid("Customer", ada)
    assert result["churnRecords"][1:] == [None, None]


def test_churn_records_of_a_page_of_customers_in_constant_statements(
        churn_app: Flask, gql: GraphQL) -> None:
    query = "{ customers(first: 50) { edges { node { churnRecords { type recordedBy { name } } " \
            "winbackAttempts { outcome } } } } }"
    for n in range(3):
        mark(customer(f"C{n}"))
    gql(query)  # warm up: the first request of a key also records its use
    with count_statements(churn_app) as few:
        gql(query)
    for n in range(12):
        mark(customer(f"D{n}"))
    with count_statements(churn_app) as many:
        data = gql(query)
    assert len(many) == len(few)
    assert sum(len(e["node"]["churnRecords"]) for e in data["customers"]["edges"]) == 15
