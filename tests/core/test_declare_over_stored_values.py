"""Declaring an attribute's type (defineCustomerAttribute, ``rapport import customers
--declare-attributes``) over values customers already hold that do not fit it is refused,
naming how many values and one customer; nothing is declared."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from sqlalchemy import func, select

from core.cli import cli
from core.db import db
from core.ids import global_id
from core.models import Customer, CustomerAttributeDefinition
from core.services.customers import create_customer, update_customer
from tests.conftest import GraphQL

DEFINE = """mutation($input: DefineCustomerAttributeInput!) {
  defineCustomerAttribute(input: $input) { attribute { key type categories }
                                           errors { field code message } } }"""


def _define(gql: GraphQL, **input: object) -> dict[str, object]:
    return gql(DEFINE, {"input": input})["defineCustomerAttribute"]  # type: ignore[no-any-return]


def _declared() -> set[str]:
    return set(db.session.scalars(select(CustomerAttributeDefinition.key)))


def test_a_type_that_stored_values_do_not_fit_is_refused(app: Flask, gql: GraphQL) -> None:
    create_customer({"name": "A", "attributes": {"seats": "12", "plan": "gold"}})
    many = create_customer({"name": "B", "attributes": {"seats": "many", "plan": "gold"}}).id
    create_customer({"name": "C", "attributes": {"seats": 3, "plan": "free"}})
    lots = create_customer({"name": "D", "attributes": {"seats": "lots", "plan": "bronze"}}).id
    create_customer({"name": "E"})

    refused = _define(gql, key="seats", type="number", label="Seats")
    (error,) = refused["errors"]  # type: ignore[misc]
    assert error["field"] == "input.type" and error["code"] == "CONFLICT"
    assert error["message"].startswith("2 stored values of attribute 'seats' do not fit")
    assert global_id("Customer", many) in error["message"] and "'many'" in error["message"]
    assert refused["attribute"] is None and _declared() == set()

    refused = _define(gql, key="plan", type="category", label="Plan",
                      categories=["free", "gold"])
    (error,) = refused["errors"]  # type: ignore[misc]
    assert error["field"] == "input.categories"
    assert error["message"].startswith("1 stored value of attribute 'plan' does not fit")
    assert global_id("Customer", lots) in error["message"]
    # Text holds anything; once the values are fixed the declarations go through.
    assert _define(gql, key="plan", type="text", label="Plan")["errors"] == []
    for customer_id in (many, lots):
        update_customer(customer_id, {"attributes": {"seats": None}})
    assert _define(gql, key="seats", type="number", label="Seats")["errors"] == []
    assert _declared() == {"plan", "seats"}


def test_narrowing_the_categories_is_checked_too(app: Flask, gql: GraphQL) -> None:
    assert _define(gql, key="tier", type="category", label="Tier",
                   categories=["a", "b"])["errors"] == []
    create_customer({"name": "A", "attributes": {"tier": "b"}})
    (error,) = _define(gql, key="tier", type="category", label="Tier",  # type: ignore[misc]
                       categories=["a"])["errors"]
    assert error["field"] == "input.categories" and "'b'" in error["message"]
    assert _define(gql, key="tier", type="category", label="Tier level",
                   categories=["a", "b", "c"])["errors"] == []


def test_the_import_declares_nothing_over_values_that_do_not_fit(app: Flask,
                                                                 tmp_path: Path) -> None:
    held = create_customer({"name": "Old", "attributes": {"charges": "n/a"}}).id
    path = tmp_path / "customers.csv"
    path.write_text("external_id,name,charges,plan\nT-1,Ann,29.85,gold\nT-2,Bob,56.95,free\n"
                    "T-3,Cy,12,gold\n", encoding="utf-8")
    result = app.test_cli_runner().invoke(
        cli, ["import", "customers", str(path), "--declare-attributes"])
    assert result.exit_code != 0
    assert "1 stored value of attribute 'charges' does not fit the type number" in result.output
    assert global_id("Customer", held) in result.output
    assert _declared() == set()
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1
