"""The example partner plugin (examples/rapport-referrals), installed as its own package.

It reaches the app through its ``rapport.plugins`` entry point only, as any partner's would.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from graphene import relay

from tests.conftest import AppFactory, GraphQL, admin_token, count_statements

pytest.importorskip("rapport_referrals", reason="pip install -e examples/rapport-referrals")

CREATE = """mutation($name: String!) {
  createCustomer(input: {name: $name}) { customer { id } errors { code } } }"""
RECORD = """mutation($input: RecordReferralInput!) {
  recordReferral(input: $input) {
    referral { referrer { name } referred { name } note referredAt }
    errors { field message code }
  }
}"""
REFERRALS = """query($id: ID!) {
  customer(id: $id) { name referrals { referred { name } note } } }"""
TOP = "{ topReferrers(first: 5) { customer { name } referrals } }"


@pytest.fixture
def referrals_app(make_app: AppFactory) -> Flask:
    return make_app(enabled=["referrals"])


@pytest.fixture
def gql(referrals_app: Flask) -> GraphQL:
    return GraphQL(referrals_app, admin_token(referrals_app))


def _create(gql: GraphQL, name: str) -> str:
    created = gql(CREATE, {"name": name})["createCustomer"]
    assert created["errors"] == []
    return created["customer"]["id"]  # type: ignore[no-any-return]


def _refer(gql: GraphQL, referrer: str, referred: str, **extra: Any) -> dict[str, Any]:
    return gql(RECORD, {"input": {"referrerId": referrer, "referredId": referred, **extra}}
               )["recordReferral"]  # type: ignore[no-any-return]


def test_the_plugin_is_discovered_through_its_entry_point(gql: GraphQL) -> None:
    plugins = {p["name"]: p for p in gql("{ plugins { name version enabled hooks } }")["plugins"]}
    assert plugins["referrals"]["enabled"] is True
    assert plugins["referrals"]["version"] == "0.1.0"
    assert "rapport_graphql_customer_fields" in plugins["referrals"]["hooks"]


def test_record_and_read_referrals(gql: GraphQL, referrals_app: Flask) -> None:
    ada, bob, cy, dee = (_create(gql, n) for n in ("Ada", "Bob", "Cy", "Dee"))
    recorded = _refer(gql, ada, bob, note="met at the fair",
                      referredAt="2026-01-10T09:00:00+00:00")
    assert recorded == {"errors": [], "referral": {
        "referrer": {"name": "Ada"}, "referred": {"name": "Bob"}, "note": "met at the fair",
        "referredAt": "2026-01-10T09:00:00+00:00"}}
    assert _refer(gql, ada, cy)["errors"] == []
    assert _refer(gql, bob, dee)["errors"] == []

    assert gql(REFERRALS, {"id": ada})["customer"] == {"name": "Ada", "referrals": [
        {"referred": {"name": "Bob"}, "note": "met at the fair"},
        {"referred": {"name": "Cy"}, "note": None}]}
    assert gql(REFERRALS, {"id": dee})["customer"]["referrals"] == []
    assert gql(TOP)["topReferrers"] == [{"customer": {"name": "Ada"}, "referrals": 2},
                                        {"customer": {"name": "Bob"}, "referrals": 1}]

    # Customer.referrals is served by a DataLoader: a page of customers, one referral query
    page = "{ customers(first: 10) { edges { node { referrals { referred { name } } } } } }"
    with count_statements(referrals_app) as statements:
        gql(page)
    assert sum("referrals_referral" in s for s in statements) == 1


def test_self_referral_is_a_typed_error(gql: GraphQL) -> None:
    ada = _create(gql, "Ada")
    assert _refer(gql, ada, ada) == {"referral": None, "errors": [{
        "field": "input.referredId", "message": "A customer cannot refer themselves.",
        "code": "INVALID"}]}


def test_unknown_or_malformed_customer_ids_are_typed_errors(gql: GraphQL) -> None:
    ada = _create(gql, "Ada")
    missing = relay.Node.to_global_id("Customer", 999_999)
    assert _refer(gql, missing, ada) == {"referral": None, "errors": [{
        "field": "input.referrerId", "message": f"No customer with id {missing}.",
        "code": "NOT_FOUND"}]}
    assert _refer(gql, ada, missing)["errors"][0]["field"] == "input.referredId"
    malformed = _refer(gql, "not-an-id", ada)["errors"]
    assert [(e["field"], e["code"]) for e in malformed] == [("input.referrerId", "INVALID")]


def test_a_customer_has_one_referrer(gql: GraphQL) -> None:
    ada, bob, cy = (_create(gql, n) for n in ("Ada", "Bob", "Cy"))
    assert _refer(gql, ada, cy)["errors"] == []
    assert _refer(gql, bob, cy)["errors"] == [{
        "field": "input.referredId", "message": "This customer already has a referrer.",
        "code": "UNIQUE"}]


def test_merge_erase_and_export_hooks(gql: GraphQL) -> None:
    ada, ada_dup, bob, cy = (_create(gql, n) for n in ("Ada", "Ada L.", "Bob", "Cy"))
    assert _refer(gql, ada_dup, bob, note="her cousin")["errors"] == []
    assert _refer(gql, ada, cy)["errors"] == []
    merged = gql("""mutation($s: ID!, $m: [ID!]!) {
      mergeCustomers(input: {survivorId: $s, mergedIds: $m}) {
        customer { referrals { referred { name } } } errors { code } } }""",
                 {"s": ada, "m": [ada_dup]})["mergeCustomers"]
    assert merged == {"errors": [], "customer": {"referrals": [
        {"referred": {"name": "Bob"}}, {"referred": {"name": "Cy"}}]}}

    exported = gql("mutation($id: ID!) { exportCustomer(input: {id: $id}) { document } }",
                   {"id": ada})["exportCustomer"]["document"]
    rows = exported["plugins"]["referrals"]["referrals"]
    assert sorted((r["note"] or "") for r in rows) == ["", "her cousin"]
    assert {r["referrerId"] for r in rows} == {ada} and "referredAt" in rows[0]

    erased = gql("mutation($id: ID!) { eraseCustomer(input: {id: $id}) { report } }",
                 {"id": ada})["eraseCustomer"]
    assert erased["report"]["referrals"] == {"notesCleared": 1}
    # the referral facts stay (top referrers still count them), the free text is gone
    assert gql(TOP)["topReferrers"][0]["referrals"] == 2


def test_the_plugin_contributes_nothing_when_not_enabled(make_app: AppFactory) -> None:
    app = make_app(enabled=[])
    schema = app.extensions["rapport_graphql"].schema.graphql_schema
    assert "referrals" not in schema.get_type("Customer").fields
    assert "topReferrers" not in schema.query_type.fields
    assert "recordReferral" not in schema.mutation_type.fields
    assert schema.get_type("Referral") is None

    gql = GraphQL(app, admin_token(app))
    response = gql.raw("{ customers(first: 1) { edges { node { referrals { note } } } } }")
    assert response.status_code == 400
    [error] = response.get_json()["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "referrals" in error["message"]
    plugins = {p["name"]: p for p in gql("{ plugins { name enabled reason } }")["plugins"]}
    assert plugins["referrals"] == {"name": "referrals", "enabled": False,
                                    "reason": "not listed in RAPPORT_PLUGINS"}
