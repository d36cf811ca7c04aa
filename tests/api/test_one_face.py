"""One face on every surface: messages name objects by the global id a client sent or can
look up, never by the internal integer; ids the CLI and report URLs take are either."""

from __future__ import annotations

import pytest
from flask import Flask

from core.ids import global_id, parse_id, shown_id
from core.services.customers import create_customer
from tests.conftest import GraphQL

UPDATE = """mutation($input: UpdateCustomerInput!) { updateCustomer(input: $input) {
  errors { field message code } } }"""
CREATE = """mutation($input: CreateCustomerInput!) { createCustomer(input: $input) {
  customer { id } errors { field message code } } }"""
MERGE = """mutation($s: ID!, $m: [ID!]!) { mergeCustomers(input: {survivorId: $s, mergedIds: $m})
  { errors { field message code } } }"""
RECORD = """mutation($input: RecordInteractionInput!) { recordInteraction(input: $input) {
  errors { field message code } } }"""


def test_parse_id_takes_a_global_id_or_a_number() -> None:
    assert parse_id(global_id("Survey", 42), "Survey") == 42
    assert parse_id("42", "Survey") == parse_id(42, "Survey") == 42
    for wrong in (global_id("Customer", 42), "0", "-1", "abc", str(2**63), "²", ""):
        with pytest.raises(ValueError):
            parse_id(wrong, "Survey")
    assert shown_id("Customer", 7) == global_id("Customer", 7)
    assert shown_id("Customer", "X") == "X"  # already a reference: as it is


def test_not_found_messages_show_the_global_id(app: Flask, gql: GraphQL) -> None:
    missing = global_id("Customer", 9999)
    errors = gql(UPDATE, {"input": {"id": missing, "name": "X"}})["updateCustomer"]["errors"]
    assert errors == [{"field": "input.id", "message": f"No customer with id {missing}.",
                       "code": "NOT_FOUND"}]
    ada = global_id("Customer", create_customer({"name": "Ada"}).id)
    merged = gql(MERGE, {"s": ada, "m": [missing]})["mergeCustomers"]["errors"]
    assert merged[0]["message"] == f"No customer with id {missing}."
    recorded = gql(RECORD, {"input": {"customerId": missing, "kind": "call",
                                     "occurredAt": "2026-01-05T10:00:00Z"}}
                   )["recordInteraction"]["errors"]
    assert recorded[0]["message"] == f"No customer with id {missing}."
    assert "9999" not in str([errors, merged, recorded]).replace(missing, "")


def test_a_taken_external_id_names_its_owner_by_global_id(app: Flask, gql: GraphQL) -> None:
    owner = gql(CREATE, {"input": {"name": "A", "source": "shop", "externalId": "S-1"}}
                )["createCustomer"]["customer"]["id"]
    other = gql(CREATE, {"input": {"name": "B"}})["createCustomer"]["customer"]["id"]
    errors = gql(UPDATE, {"input": {"id": other, "source": "shop", "externalId": "S-1"}}
                 )["updateCustomer"]["errors"]
    assert errors and errors[0]["message"].endswith(f"already belongs to customer {owner}.")


def test_an_erased_customer_in_a_merge_is_named_by_global_id(app: Flask, gql: GraphQL) -> None:
    from core.services.customers import erase_customer

    ada = create_customer({"name": "Ada"}).id
    gone = create_customer({"name": "Gone"}).id
    erase_customer(gone)
    errors = gql(MERGE, {"s": global_id("Customer", ada), "m": [global_id("Customer", gone)]}
                 )["mergeCustomers"]["errors"]
    assert errors[0]["message"] == (f"Customer {global_id('Customer', gone)} is erased and "
                                    f"cannot be merged.")
