"""The internal errors a fuzzer once found are typed errors now, and write nothing.

Each input here gave a 500-class INTERNAL_SERVER_ERROR or a database error before: a lone
surrogate in text, an interaction payload nested ~480 levels, a report period in year
9999, ``topReferrers(first: null)``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from graphql_relay import to_global_id
from sqlalchemy import func, select

from core.db import db
from core.models import Customer, Interaction
from core.schemas import MAX_JSON_DEPTH
from core.services.customers import create_customer
from tests.conftest import AppFactory, GraphQL, admin_token

CREATE = """mutation($input: CreateCustomerInput!) {
  createCustomer(input: $input) { customer { id } errors { field code } } }"""
RECORD = """mutation($input: RecordInteractionInput!) {
  recordInteraction(input: $input) { interaction { id } errors { field code message } } }"""
WHEN = "2024-01-01T00:00:00Z"


def _post(gql: GraphQL, body: str) -> Any:
    """A raw JSON body: the test client's own encoder refuses what these tests send."""
    return gql.client.post("/graphql", data=body, headers={
        "Authorization": f"Bearer {gql.token}", "Content-Type": "application/json"})


def _codes(response: Any) -> list[str]:
    return [e["extensions"]["code"] for e in response.get_json()["errors"]]


def _count(model: Any) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def _nested(depth: int, leaf: str = "{}") -> str:
    return '{"a": ' * depth + leaf + "}" * depth


@pytest.mark.parametrize("text", ["\\ud800", "a\\udfffb", "\\udc00\\ud800"])
def test_a_lone_surrogate_in_a_variable_is_bad_input(app: Flask, gql: GraphQL,
                                                     text: str) -> None:
    body = ('{"query": ' + json.dumps(CREATE) + ', "variables": {"input": {"name": "'
            + text + '"}}}')
    response = _post(gql, body)
    assert response.status_code == 400, response.get_json()
    assert _codes(response) == ["BAD_USER_INPUT"]
    assert "surrogate" in response.get_json()["errors"][0]["message"]
    assert _count(Customer) == 0


def test_a_lone_surrogate_anywhere_in_the_document_is_bad_input(app: Flask,
                                                                gql: GraphQL) -> None:
    # JSON's \ud800 puts the code point itself into the document's string literal.
    literal = 'mutation { createCustomer(input: {name: "\\ud800"}) { customer { id } } }'
    for query in [literal, "# \\udfff\n{ plugins { name } }"]:
        response = _post(gql, '{"query": "' + query.replace('"', '\\"').replace("\n", "\\n")
                         + '"}')
        assert response.status_code == 400, response.get_json()
        assert _codes(response) == ["BAD_USER_INPUT"]
    # GraphQL's own escape of a lone surrogate is a syntax error of the document.
    response = gql.raw('mutation { createCustomer(input: {name: "\\ud800"}) '
                       '{ customer { id } } }')
    assert (response.status_code, _codes(response)) == (400, ["GRAPHQL_PARSE_FAILED"])
    assert _count(Customer) == 0


def test_a_lone_surrogate_in_a_payload_or_a_key_is_refused(app: Flask, gql: GraphQL) -> None:
    customer = to_global_id("Customer", create_customer({"name": "Ann"}).id)
    for payload in ['{"note": "\\ud83d"}', '{"\\ud83d": 1}', '{"deep": [["\\udead"]]}']:
        body = ('{"query": ' + json.dumps(RECORD) + ', "variables": {"input": {"customerId": '
                + json.dumps(customer) + ', "kind": "note", "occurredAt": "' + WHEN
                + '", "payload": ' + payload + '}}}')
        response = _post(gql, body)
        assert (response.status_code, _codes(response)) == (400, ["BAD_USER_INPUT"])
    # A whole emoji (a valid surrogate pair in JSON) is ordinary text.
    body = ('{"query": ' + json.dumps(RECORD) + ', "variables": {"input": {"customerId": '
            + json.dumps(customer) + ', "kind": "note", "occurredAt": "' + WHEN
            + '", "payload": {"note": "\\ud83d\\ude00"}}}}')
    response = _post(gql, body)
    assert response.get_json()["data"]["recordInteraction"]["errors"] == []
    assert db.session.scalars(select(Interaction.payload)).one() == {"note": "\U0001F600"}


def test_a_lone_surrogate_is_a_field_error_for_the_services(app: Flask) -> None:
    """Importers and the CLI load through the same schemas: the row is rejected, not the
    whole run."""
    from core.errors import UserError

    with pytest.raises(UserError) as raised:
        create_customer({"name": "x", "city": "Paris\ud800"})
    assert [e.field for e in raised.value.errors] == ["city"]
    assert "surrogate" in raised.value.errors[0].message


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 60])
def test_a_payload_nested_beyond_the_limit_is_a_field_error(app: Flask, gql: GraphQL,
                                                            depth: int) -> None:
    customer = to_global_id("Customer", create_customer({"name": "Ann"}).id)
    variables = ('{"input": {"customerId": ' + json.dumps(customer) + ', "kind": "note", '
                 '"occurredAt": "' + WHEN + '", "payload": ' + _nested(depth) + '}}')
    response = _post(gql, '{"query": ' + json.dumps(RECORD) + ', "variables": '
                     + variables + '}')
    assert response.status_code == 200, response.get_json()
    errors = response.get_json()["data"]["recordInteraction"]["errors"]
    assert [(e["field"], e["code"]) for e in errors] == [("input.payload", "INVALID")]
    assert f"{MAX_JSON_DEPTH} levels" in errors[0]["message"]
    assert _count(Interaction) == 0


def test_a_payload_at_the_limit_is_stored_and_read_back(app: Flask, gql: GraphQL) -> None:
    customer = to_global_id("Customer", create_customer({"name": "Ann"}).id)
    variables = ('{"input": {"customerId": ' + json.dumps(customer) + ', "kind": "note", '
                 '"occurredAt": "' + WHEN + '", "payload": ' + _nested(MAX_JSON_DEPTH - 1)
                 + '}}')
    response = _post(gql, '{"query": ' + json.dumps(RECORD) + ', "variables": '
                     + variables + '}')
    assert response.get_json()["data"]["recordInteraction"]["errors"] == []
    payload = db.session.scalars(select(Interaction.payload)).one()
    depth = 0
    while payload:
        payload, depth = payload["a"], depth + 1
    assert depth == MAX_JSON_DEPTH - 1


@pytest.mark.parametrize("depth", [480, 900, 5_000])
@pytest.mark.parametrize("shape", ["object", "list"])
def test_variables_nested_hundreds_of_levels_are_bad_input(app: Flask, gql: GraphQL,
                                                           depth: int, shape: str) -> None:
    customer = to_global_id("Customer", create_customer({"name": "Ann"}).id)
    deep = _nested(depth) if shape == "object" else "[" * depth + "]" * depth
    variables = ('{"input": {"customerId": ' + json.dumps(customer) + ', "kind": "note", '
                 '"occurredAt": "' + WHEN + '", "payload": {"x": ' + deep + '}}}')
    response = _post(gql, '{"query": ' + json.dumps(RECORD) + ', "variables": '
                     + variables + '}')
    # Python's JSON parser gives up first on the deepest ones (BAD_REQUEST); either way a
    # typed 400, never a crash.
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert _codes(response) in (["BAD_USER_INPUT"], ["BAD_REQUEST"])
    assert _count(Interaction) == 0


def test_a_payload_literal_nested_beyond_the_limit_is_a_field_error(app: Flask,
                                                                   gql: GraphQL) -> None:
    customer = to_global_id("Customer", create_customer({"name": "Ann"}).id)
    literal = "{a: " * 150 + "{}" + "}" * 150
    data = gql('mutation($c: ID!) { recordInteraction(input: {customerId: $c, kind: "note", '
               f'occurredAt: "{WHEN}", payload: {literal}}}) '
               '{ interaction { id } errors { field code } } }', {"c": customer}
               )["recordInteraction"]
    assert data == {"interaction": None, "errors": [{"field": "input.payload",
                                                     "code": "INVALID"}]}


LOYALTY_REPORT = ("query($from: Date!, $to: Date!) { loyaltyReport(from: $from, to: $to) "
                  "{ members } }")


@pytest.mark.parametrize(("first", "last"), [
    ("2020-01-01", "9999-12-31"), ("9999-01-01", "9999-12-31"), ("9998-12-31", "9999-01-01"),
    ("0001-01-01", "0001-01-31"), ("1899-12-31", "1900-01-31"),
])
def test_a_loyalty_report_outside_the_calendar_is_bad_input(make_app: AppFactory, first: str,
                                                            last: str) -> None:
    app = make_app(enabled=["loyalty"])
    gql = GraphQL(app, admin_token(app))
    response = gql.raw(LOYALTY_REPORT, {"from": first, "to": last})
    body = response.get_json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"], body
    assert "1900-01-01 to 9998-12-31" in body["errors"][0]["message"]
    # the edges themselves are days like any other
    assert gql(LOYALTY_REPORT, {"from": "9998-12-01", "to": "9998-12-31"})
    assert gql(LOYALTY_REPORT, {"from": "1900-01-01", "to": "1900-01-31"})


def test_complaint_stats_outside_the_calendar_are_bad_input(make_app: AppFactory) -> None:
    app = make_app(enabled=["complaints"])
    gql = GraphQL(app, admin_token(app))
    query = ("query($from: Date!, $to: Date!) { complaintStats(from: $from, to: $to) "
             "{ total { volume } } }")
    for first, last in [("9999-01-01", "9999-12-31"), ("1899-01-01", "1899-12-31")]:
        response = gql.raw(query, {"from": first, "to": last})
        assert _codes(response) == ["BAD_USER_INPUT"], response.get_json()
    assert gql(query, {"from": "9998-12-01", "to": "9998-12-31"})


def test_dates_outside_the_calendar_are_field_errors_in_core_inputs(app: Flask,
                                                                    gql: GraphQL) -> None:
    data = gql(CREATE, {"input": {"name": "Old", "birthDate": "1899-12-31"}})["createCustomer"]
    assert data == {"customer": None, "errors": [{"field": "input.birthDate",
                                                  "code": "INVALID"}]}
    response = gql.raw("query($f: CustomerFilterInput) { customers(filter: $f) { totalCount } }",
                       {"f": {"bornAfter": "9999-06-01"}})
    assert _codes(response) == ["BAD_USER_INPUT"]


TOP = "query($first: Int) { topReferrers(first: $first) { referrals } }"


def test_top_referrers_takes_null_as_the_default_and_refuses_bad_sizes(
        make_app: AppFactory) -> None:
    app = make_app(enabled=["referrals"])
    gql = GraphQL(app, admin_token(app))
    assert gql(TOP, {"first": None}) == {"topReferrers": []}
    assert gql("{ topReferrers(first: null) { referrals } }") == {"topReferrers": []}
    for size in (-1, 101):
        response = gql.raw(TOP, {"first": size})
        assert _codes(response) == ["BAD_USER_INPUT"], response.get_json()


def test_an_import_rejects_rows_with_a_lone_surrogate_before_any_lookup(
        app: Flask, tmp_path: Any) -> None:
    """JSON Lines can carry a lone surrogate: the row is rejected, the rest imported (the
    interactions importer looked the customer's external id up first and crashed)."""
    from core.importers import open_import

    customers = tmp_path / "customers.jsonl"
    customers.write_text('{"external_id": "c1", "name": "Ann"}\n'
                         '{"external_id": "c2", "name": "Bob\\ud800"}\n')
    with open_import("customers", customers) as job:
        report = job.run()
    assert (report.imported, report.rejected) == (1, 1)
    interactions = tmp_path / "interactions.jsonl"
    interactions.write_text(
        '{"customer_external_id": "c1\\ud800", "source": "s", "external_id": "i1", '
        '"kind": "note", "occurred_at": "2024-01-01T00:00:00Z"}\n'
        '{"customer_external_id": "c1", "source": "s", "external_id": "i2", '
        '"kind": "note", "occurred_at": "2024-01-01T00:00:00Z", "payload_x": "\\udfff"}\n'
        '{"customer_external_id": "c1", "source": "s", "external_id": "i3", '
        '"kind": "note", "occurred_at": "2024-01-01T00:00:00Z"}\n')
    with open_import("interactions", interactions) as job:
        report = job.run()
    assert (report.imported, report.rejected) == (1, 2)
    rejects = report.rejects_path.read_text().splitlines()[1:]
    assert [line.split(",")[:2] for line in rejects] == [["1", "customer_external_id"],
                                                         ["2", "payload_x"]]
    db.session.expire_all()
    assert _count(Interaction) == 1
