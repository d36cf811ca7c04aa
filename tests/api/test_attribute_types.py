"""Declared attribute types hold on every write path, and attribute filters are right on
both databases (issue 13, item 2)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from core.errors import UserError
from core.services.customers import create_customer, import_customers, update_customer
from core.services.staff import define_customer_attribute
from tests.conftest import GraphQL

CREATE = """mutation($input: CreateCustomerInput!) { createCustomer(input: $input) {
    customer { id attributes } errors { field code message } } }"""
UPDATE = """mutation($input: UpdateCustomerInput!) { updateCustomer(input: $input) {
    customer { attributes } errors { field code message } } }"""
NAMES = """query($filter: CustomerFilterInput) { customers(first: 50, filter: $filter) {
    totalCount edges { node { name } } } }"""


def _declare() -> None:
    define_customer_attribute({"key": "seats", "type": "number", "label": "Seats"})
    define_customer_attribute({"key": "plan", "type": "category", "label": "Plan",
                               "categories": ["free", "gold"]})
    define_customer_attribute({"key": "trial", "type": "boolean", "label": "Trial"})
    define_customer_attribute({"key": "renewal", "type": "date", "label": "Renewal"})


def _create(gql: GraphQL, attributes: dict[str, Any]) -> dict[str, Any]:
    return gql(CREATE, {"input": {"name": "X", "attributes": attributes}})[  # type: ignore
        "createCustomer"]


def test_create_customer_types_declared_attributes_like_the_import(app: Flask,
                                                                    gql: GraphQL) -> None:
    _declare()
    for attributes, field in (({"seats": "lots"}, "seats"), ({"plan": "platinum"}, "plan"),
                              ({"trial": "perhaps"}, "trial"), ({"seats": True}, "seats"),
                              ({"renewal": "next week"}, "renewal")):
        rejected = _create(gql, attributes)
        assert rejected["customer"] is None, attributes
        assert [(e["field"], e["code"]) for e in rejected["errors"]] == [
            (f"input.attributes.{field}", "INVALID")], rejected
    created = _create(gql, {"seats": "12", "plan": "gold", "trial": "yes",
                            "renewal": "2026-01-31", "colour": "green", "size": "9"})
    assert created["errors"] == []
    assert created["customer"]["attributes"] == {
        "seats": 12, "plan": "gold", "trial": True, "renewal": "2026-01-31",
        "colour": "green", "size": "9"}  # undeclared keys: kept as given, untyped
    gid = created["customer"]["id"]
    bad = gql(UPDATE, {"input": {"id": gid, "attributes": {"seats": "many"}}})["updateCustomer"]
    assert bad["customer"] is None
    assert [e["field"] for e in bad["errors"]] == ["input.attributes.seats"]
    good = gql(UPDATE, {"input": {"id": gid, "attributes": {"seats": 3.5, "plan": None}}})[
        "updateCustomer"]
    assert good["errors"] == []
    assert good["customer"]["attributes"]["seats"] == 3.5
    assert "plan" not in good["customer"]["attributes"]  # null removes a key, untyped


def test_the_services_and_the_import_share_the_rule(app: Flask) -> None:
    _declare()
    try:
        create_customer({"name": "Y", "attributes": {"plan": "platinum"}})
    except UserError as exc:
        assert [(e.field, e.message) for e in exc.errors] == [
            ("attributes.plan", "Plan: one of free, gold is expected.")]
    else:
        raise AssertionError("an unknown category was accepted")
    customer = create_customer({"name": "Y"})
    try:
        update_customer(customer.id, {"attributes": {"trial": 3}})
    except UserError as exc:
        assert exc.errors[0].field == "attributes.trial"
    else:
        raise AssertionError("a number was accepted for a boolean attribute")
    result = import_customers([
        {"external_id": "a", "attributes": {"seats": "x"}},
        {"external_id": "b", "attributes": {"seats": "4", "note": "anything"}},
    ])
    assert list(result.rejected) == [0]
    assert result.rejected[0][0].message == "Seats: a number is expected."


def _filtered(gql: GraphQL, *conditions: dict[str, Any]) -> list[str]:
    data = gql(NAMES, {"filter": {"attributes": list(conditions)}})["customers"]
    return sorted(edge["node"]["name"] for edge in data["edges"])


def test_attribute_filters_never_match_a_missing_key_or_another_kind(app: Flask,
                                                                      gql: GraphQL) -> None:
    # Undeclared keys are untyped, so one customer may hold a text where others hold numbers.
    create_customer({"name": "Ann", "attributes": {"score": 12, "vip": True}})
    create_customer({"name": "Bob", "attributes": {"score": "high", "vip": "yes"}})
    create_customer({"name": "Cid", "attributes": {"score": 0}})
    create_customer({"name": "Dee"})
    assert _filtered(gql, {"key": "absent"}) == []
    assert _filtered(gql, {"key": "score"}) == ["Ann", "Bob", "Cid"]
    assert _filtered(gql, {"key": "score", "min": -5}) == ["Ann", "Cid"]
    assert _filtered(gql, {"key": "score", "min": 5}) == ["Ann"]
    assert _filtered(gql, {"key": "score", "max": 5}) == ["Cid"]
    assert _filtered(gql, {"key": "score", "equals": 0}) == ["Cid"]
    assert _filtered(gql, {"key": "vip", "equals": True}) == ["Ann"]
    assert _filtered(gql, {"key": "absent", "min": 0}) == []
    assert gql(NAMES, {"filter": {"attributes": [{"key": "score", "min": 1}]}})[
        "customers"]["totalCount"] == 1


def test_equals_and_in_compare_kind_by_kind_the_same_on_both_databases(
        app: Flask, gql: GraphQL) -> None:
    """Text read as the declared type reads it ("55.0" for a number, "yes" for a boolean);
    for an undeclared key, text also matches the number or true/false it reads as."""
    _declare()
    create_customer({"name": "Ann", "attributes": {"seats": 55, "trial": True, "plan": "gold",
                                                   "score": 5, "flag": True, "code": "007"}})
    create_customer({"name": "Bob", "attributes": {"seats": 55.5, "trial": False,
                                                   "plan": "free", "score": "5",
                                                   "flag": "true", "code": 7}})
    create_customer({"name": "Cid", "attributes": {"score": "five"}})
    assert _filtered(gql, {"key": "seats", "equals": "55.0"}) == ["Ann"]
    assert _filtered(gql, {"key": "seats", "equals": 55}) == ["Ann"]
    assert _filtered(gql, {"key": "seats", "in": ["55", "55.5"]}) == ["Ann", "Bob"]
    assert _filtered(gql, {"key": "seats", "equals": "many"}) == []  # cannot be a number
    assert _filtered(gql, {"key": "trial", "equals": "yes"}) == ["Ann"]
    assert _filtered(gql, {"key": "trial", "in": ["no", "1"]}) == ["Ann", "Bob"]
    assert _filtered(gql, {"key": "plan", "in": ["gold", "platinum"]}) == ["Ann"]
    # Undeclared: the text "5" and the number 5 are both five; "true" both true.
    assert _filtered(gql, {"key": "score", "in": ["5"]}) == ["Ann", "Bob"]
    assert _filtered(gql, {"key": "score", "equals": 5}) == ["Ann"]
    assert _filtered(gql, {"key": "score", "equals": "five"}) == ["Cid"]
    assert _filtered(gql, {"key": "flag", "equals": "true"}) == ["Ann", "Bob"]
    assert _filtered(gql, {"key": "flag", "equals": True}) == ["Ann"]
    assert _filtered(gql, {"key": "code", "equals": "007"}) == ["Ann", "Bob"]  # 007 reads 7
    assert _filtered(gql, {"key": "score", "in": []}) == []
