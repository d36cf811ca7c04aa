"""Review findings: hostile inputs that must come back as client errors, never a 500."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask import Flask

from core.services.customers import create_customer
from tests.conftest import GraphQL

PAGE = """
query($first: Int, $after: String, $filter: CustomerFilterInput, $order: CustomerOrder) {
  customers(first: $first, after: $after, filter: $filter, orderBy: $order) {
    edges { cursor node { id name } }
  }
}"""

TIMELINE = """
query($id: ID!, $after: String) {
  customer(id: $id) { interactions(first: 5, after: $after) { edges { cursor } } }
}"""

ALERTS = "query($after: String) { alerts(first: 5, after: $after) { edges { cursor } } }"


def _cursor(values: Any) -> str:
    raw = json.dumps(values).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _codes(response: Any) -> list[str]:
    body = response.get_json()
    return [e.get("extensions", {}).get("code") for e in body.get("errors", [])]


def _bad_input(gql: GraphQL, query: str, variables: dict[str, Any], **kwargs: Any) -> None:
    response = gql.raw(query, variables, **kwargs)
    codes = _codes(response)
    assert codes, response.get_json()
    assert "INTERNAL_SERVER_ERROR" not in codes, response.get_json()
    assert response.status_code in (200, 400), response.get_json()


@pytest.mark.parametrize("values", [
    [{"t": "2024-01-01T00:00:00"}, 1],          # naive datetime
    ["not a date", 1],                            # text where the sort value is a time
    [{"t": "2024-01-01T00:00:00+00:00"}, 2**70],  # id beyond BIGINT
    [{"t": "2024-01-01T00:00:00+00:00"}, "1"],    # id as text
    [[1, 2], 1],                                  # nested list
    [{"x": 1}, 1],                                # unknown object
])
def test_customers_malformed_cursor_is_bad_input(app: Flask, gql: GraphQL, values: Any) -> None:
    create_customer({"name": "Ann"})
    _bad_input(gql, PAGE, {"first": 1, "after": _cursor(values)})


def test_created_at_cursor_reused_with_name_order_is_bad_input(app: Flask, gql: GraphQL) -> None:
    create_customer({"name": "Ann"})
    create_customer({"name": "Bob"})
    cursor = gql(PAGE, {"first": 1})["customers"]["edges"][0]["cursor"]
    _bad_input(gql, PAGE, {"first": 1, "after": cursor, "order": {"field": "NAME"}})


@pytest.mark.parametrize("values", [
    [{"t": "2024-01-01T00:00:00"}, 1],
    [[1], 1],
    ["x", 1],
    [{"t": "2024-01-01T00:00:00+00:00"}, 2**70],
])
def test_timeline_malformed_cursor_is_bad_input(app: Flask, gql: GraphQL, values: Any) -> None:
    customer = create_customer({"name": "Ann"})
    from graphene import relay
    gid = relay.Node.to_global_id("Customer", customer.id)
    _bad_input(gql, TIMELINE, {"id": gid, "after": _cursor(values)})


@pytest.mark.parametrize("values", [["x"], [2**70], [[1]], [1.5]])
def test_alerts_malformed_cursor_is_bad_input(app: Flask, gql: GraphQL, values: Any) -> None:
    _bad_input(gql, ALERTS, {"after": _cursor(values)})


@pytest.mark.parametrize("spend", ["0.00001", "1e30"])
def test_spend_filter_out_of_money_range_is_bad_input(app: Flask, gql: GraphQL,
                                                      spend: str) -> None:
    _bad_input(gql, PAGE, {"filter": {"minSpend": spend}})
    _bad_input(gql, PAGE, {"filter": {"maxSpend": spend}})


@pytest.mark.parametrize("condition", [
    {"key": 'a"b', "equals": "x"},            # not an attribute key (JSON path syntax)
    {"key": "a", "equals": 10**400},          # beyond float
    {"key": "a", "equals": {"nested": [1]}},  # not a scalar
])
def test_attribute_filter_hostile_values_are_bad_input(app: Flask, gql: GraphQL,
                                                       condition: dict[str, Any]) -> None:
    _bad_input(gql, PAGE, {"filter": {"attributes": [condition]}})


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
def test_datetime_at_the_edge_of_the_calendar_is_bad_input(app: Flask, gql: GraphQL,
                                                           value: str) -> None:
    _bad_input(gql, PAGE, {"filter": {"createdAfter": value}})


@pytest.mark.parametrize("header", ["\u00b2", "99999999999999999999", "\u0663"])
def test_agent_header_that_is_not_an_id_is_unauthenticated(app: Flask, gql: GraphQL,
                                                           header: str) -> None:
    response = gql.raw("{ plugins { name } }", headers={"X-Rapport-Agent": header})
    assert response.status_code == 401, response.get_json()


def test_agent_header_is_not_an_oracle_for_anonymous_callers(app: Flask, gql: GraphQL) -> None:
    from core.services.staff import create_agent
    create_agent({"name": "Eve", "email": "eve@example.com"})
    known = gql.raw("{ plugins { name } }", token=None,
                    headers={"X-Rapport-Agent": "eve@example.com"})
    unknown = gql.raw("{ plugins { name } }", token=None,
                      headers={"X-Rapport-Agent": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 401
    assert known.get_json() == unknown.get_json()


@pytest.mark.parametrize("how", ["variable", "literal", "payload"])
def test_nul_character_in_text_is_bad_input_and_writes_nothing(app: Flask, gql: GraphQL,
                                                               how: str) -> None:
    if how == "variable":
        response = gql.raw("""mutation($input: CreateCustomerInput!) {
          createCustomer(input: $input) { customer { id } } }""", {"input": {"name": "a\u0000b"}})
    elif how == "literal":
        response = gql.raw('mutation { createCustomer(input: {name: "a\\u0000b"}) '
                           '{ customer { id } } }')
    else:
        response = gql.raw("""mutation($input: CreateCustomerInput!) {
          createCustomer(input: $input) { customer { id } } }""",
                           {"input": {"name": "x", "attributes": {"note": ["\u0000"]}}})
    assert response.status_code == 400, response.get_json()
    assert _codes(response) == ["BAD_USER_INPUT"]
    assert gql(PAGE, {"first": 5})["customers"]["edges"] == []


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-For": "203.0.113.9"},     # a reverse proxy on the same machine
    {"Forwarded": "for=203.0.113.9"},
    {"X-Real-IP": "203.0.113.9"},
    {"Host": "evil.example:5000"},          # DNS rebinding: a web page reaching 127.0.0.1
])
def test_development_loopback_is_not_trusted_when_proxied_or_rebound(
        make_app: Any, headers: dict[str, str]) -> None:
    app = make_app(RAPPORT_ENV="development")
    response = app.test_client().post("/graphql", json={"query": "{ plugins { name } }"},
                                      headers=headers)
    assert response.status_code == 401, response.get_json()


@pytest.mark.parametrize("host", ["localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000"])
def test_development_loopback_still_works_for_local_hosts(make_app: Any, host: str) -> None:
    app = make_app(RAPPORT_ENV="development")
    response = app.test_client().post("/graphql", json={"query": "{ plugins { name } }"},
                                      headers={"Host": host})
    assert response.status_code == 200, response.get_json()


def test_deeply_nested_json_body_is_bad_request(app: Flask, gql: GraphQL) -> None:
    depth = 100_000
    body = ('{"query": "{ plugins { name } }", "variables": {"a": ' + "[" * depth
            + "]" * depth + "}}")
    response = gql.client.post("/graphql", data=body, headers={
        "Authorization": f"Bearer {gql.token}", "Content-Type": "application/json"})
    assert response.status_code == 400
    assert _codes(response) == ["BAD_REQUEST"]


CREATE = """mutation($input: CreateCustomerInput!) {
  createCustomer(input: $input) { customer { id } errors { field code } } }"""


def test_infinity_in_variables_is_bad_input_and_writes_nothing(app: Flask, gql: GraphQL) -> None:
    body = ('{"query": ' + json.dumps(CREATE) + ', "variables": {"input": '
            '{"name": "x", "attributes": {"k": Infinity}}}}')
    response = gql.client.post("/graphql", data=body, headers={
        "Authorization": f"Bearer {gql.token}", "Content-Type": "application/json"})
    assert response.status_code == 400, response.get_json()
    assert _codes(response) == ["BAD_USER_INPUT"]
    assert gql(PAGE, {"first": 5})["customers"]["edges"] == []


def test_infinite_literal_attribute_is_a_field_error(app: Flask, gql: GraphQL) -> None:
    data = gql('mutation { createCustomer(input: {name: "x", attributes: {k: 1e400}}) '
               '{ customer { id } errors { field code } } }')["createCustomer"]
    assert data == {"customer": None, "errors": [{"field": "input.attributes",
                                                  "code": "INVALID"}]}


def test_infinite_literal_in_interaction_payload_is_a_field_error(app: Flask,
                                                                  gql: GraphQL) -> None:
    from graphene import relay
    customer = relay.Node.to_global_id("Customer", create_customer({"name": "Ann"}).id)
    data = gql('mutation($c: ID!) { recordInteraction(input: {customerId: $c, kind: "note", '
               'occurredAt: "2024-01-01T00:00:00Z", payload: {x: [1e400]}}) '
               '{ interaction { id } errors { field code } } }', {"c": customer}
               )["recordInteraction"]
    assert data["interaction"] is None
    assert [e["field"] for e in data["errors"]] == ["input.payload"]
