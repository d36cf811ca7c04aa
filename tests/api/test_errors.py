"""Bad input never gives a 500 or a stack trace: typed payload errors or top-level codes."""

from __future__ import annotations

from typing import Any

import graphene
import pytest
from flask import Flask
from graphql_relay import to_global_id

from api import scoped
from core import hookimpl
from core.db import db
from core.models import Customer, Interaction
from core.services.customers import create_customer
from tests.conftest import AppFactory, GraphQL, admin_token


def _top(response: Any) -> tuple[int, str, str]:
    body = response.get_json()
    error = body["errors"][0]
    assert "Traceback" not in error["message"]
    return response.status_code, error["extensions"]["code"], error["message"]


def test_malformed_requests(app: Flask, gql: GraphQL) -> None:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {gql.token}"}
    status, code, _ = _top(client.post("/graphql", data="{not json", headers=headers,
                                       content_type="application/json"))
    assert (status, code) == (400, "BAD_REQUEST")
    status, code, _ = _top(client.post("/graphql", json={"query": 42}, headers=headers))
    assert (status, code) == (400, "BAD_REQUEST")
    status, code, _ = _top(client.post("/graphql", json={"query": "{ plugins { name } }",
                                                         "variables": [1]}, headers=headers))
    assert (status, code) == (400, "BAD_REQUEST")
    status, code, message = _top(gql.raw("{ customers { "))
    assert (status, code) == (400, "GRAPHQL_PARSE_FAILED") and "Syntax Error" in message
    status, code, message = _top(gql.raw("{ customers { nope } }"))
    assert (status, code) == (400, "GRAPHQL_VALIDATION_FAILED") and "nope" in message
    status, code, _ = _top(gql.raw("query($n: Int!) { customers(first: $n) { totalCount } }",
                                   {"n": "many"}))
    assert code == "BAD_USER_INPUT"


def test_depth_and_cost_limits(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_GRAPHQL_MAX_DEPTH=7, RAPPORT_GRAPHQL_MAX_COMPLEXITY=2000)
    gql = GraphQL(app, admin_token(app))
    deep = ("{ customers { edges { node { interactions { edges { node { customer { "
            "interactions { totalCount } } } } } } } } }")
    status, code, message = _top(gql.raw(deep))
    assert (status, code) == (400, "QUERY_TOO_COMPLEX") and "levels deep" in message
    wide = ("{ customers(first: 100) { edges { node { interactions(first: 100) { edges { node "
            "{ kind } } } } } } }")
    status, code, message = _top(gql.raw(wide))
    assert (status, code) == (400, "QUERY_TOO_COMPLEX") and "limit is 2000" in message
    # Fragments are followed, and introspection costs like any other selection.
    sneaky = ("{ customers(first: 100) { ...F } } fragment F on CustomerConnection "
              "{ edges { node { interactions(first: 100) { edges { node { kind } } } } } }")
    assert _top(gql.raw(sneaky))[1] == "QUERY_TOO_COMPLEX"
    schema_walk = ("{ __schema { types { name description fields { name description type "
                   "{ name ofType { name ofType { name } } } } } } }")
    assert _top(gql.raw(schema_walk))[:2] == (400, "QUERY_TOO_COMPLEX")
    default = make_app()
    assert GraphQL(default, admin_token(default))(schema_walk)["__schema"]["types"]


class Exploding:
    """A plugin whose resolver has a bug."""

    __name__ = "exploding"

    @hookimpl
    def rapport_register_scopes(self) -> list[tuple[str, str]]:
        return [("boom:read", "Read the bomb")]

    @hookimpl
    def rapport_graphql_query_fields(self) -> dict[str, graphene.Field]:
        def resolve(root: Any, info: Any) -> str:
            raise RuntimeError("secret database password in a message")

        return {"boom": scoped(graphene.Field(graphene.String, resolver=resolve), "boom:read")}


def test_a_crashing_resolver_leaks_nothing(make_app: AppFactory, caplog: Any) -> None:
    app = make_app(plugins=(Exploding(),))
    gql = GraphQL(app, admin_token(app))
    response = gql.raw("{ boom plugins { name } }")
    assert response.status_code == 200
    body = response.get_json()
    assert body["errors"] == [{"message": "Internal server error.", "path": ["boom"],
                               "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]
    assert "secret" not in response.get_data(as_text=True)
    assert body["data"]["plugins"]
    assert "secret database password" in caplog.text  # the operator still sees it


MUTATIONS: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
    ("createCustomer", "customer { id }", {"email": "bad"},
     {"input.email": "INVALID"}),
    ("createCustomer", "customer { id }", {"name": "A", "ownerId": "bad-id"},
     {"input.ownerId": "INVALID"}),
    ("updateCustomer", "customer { id }", {"id": to_global_id("Customer", 999), "name": "B"},
     {"input.id": "NOT_FOUND"}),
    ("updateCustomer", "customer { id }", {"id": to_global_id("Interaction", 1), "name": "B"},
     {"input.id": "INVALID"}),
    ("mergeCustomers", "customer { id }", {"survivorId": "CUSTOMER_1", "mergedIds": ["x"]},
     {"input.mergedIds.0": "INVALID"}),
    ("eraseCustomer", "customer { id }", {"id": to_global_id("Customer", 999)},
     {"input.id": "NOT_FOUND"}),
    ("exportCustomer", "document", {"id": to_global_id("Customer", 999)},
     {"input.id": "NOT_FOUND"}),
    ("defineCustomerAttribute", "attribute { key }", {"key": "9x", "type": "colour",
                                                      "label": "L"},
     {"input.key": "INVALID", "input.type": "INVALID"}),
    ("recordInteraction", "interaction { id }",
     {"customerId": "CUSTOMER_1", "kind": "teleport", "occurredAt": "2026-01-01T00:00:00Z",
      "amount": "-3", "currency": "EURO"},
     {"input.kind": "INVALID", "input.amount": "INVALID", "input.currency": "INVALID"}),
    ("recordInteraction", "interaction { id }",
     {"customerId": "CUSTOMER_1", "kind": "purchase", "occurredAt": "2026-01-01T00:00:00Z"},
     {"input.amount": "INVALID"}),
    ("recordInteraction", "interaction { id }",
     {"customerId": "CUSTOMER_1", "kind": "purchase", "occurredAt": "2026-01-01T00:00:00Z",
      "amount": "1.001", "currency": "USD"},
     {"input.amount": "INVALID"}),
    ("recordInteraction", "interaction { id }",
     {"customerId": "CUSTOMER_1", "kind": "call", "occurredAt": "2999-01-01T00:00:00Z"},
     {"input.occurredAt": "INVALID"}),
    ("recordInteraction", "interaction { id }",
     {"customerId": to_global_id("Customer", 999), "kind": "call",
      "occurredAt": "2026-01-01T00:00:00Z"},
     {"input.customerId": "NOT_FOUND"}),
    ("createAgent", "agent { id }", {"name": "", "email": "x"},
     {"input.name": "INVALID", "input.email": "INVALID"}),
    ("acknowledgeAlert", "alert { id }", {"id": to_global_id("Alert", 5)},
     {"input.id": "NOT_FOUND"}),
]


@pytest.mark.parametrize(("name", "selection", "input", "expected"), MUTATIONS,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MUTATIONS)])
def test_every_mutation_turns_bad_input_into_typed_errors(
        app: Flask, gql: GraphQL, name: str, selection: str, input: dict[str, Any],
        expected: dict[str, str]) -> None:
    customer = create_customer({"name": "Existing"})
    gid = to_global_id("Customer", customer.id)
    input = {k: ([gid if x == "CUSTOMER_1" else x for x in v] if isinstance(v, list)
                 else gid if v == "CUSTOMER_1" else v) for k, v in input.items()}
    input_type = name[0].upper() + name[1:] + "Input"
    data = gql(f"mutation($input: {input_type}!) {{ {name}(input: $input) {{ {selection} "
               f"errors {{ field message code }} }} }}", {"input": input})[name]
    assert {e["field"]: e["code"] for e in data["errors"]} == expected, data["errors"]
    assert all(e["message"] for e in data["errors"])
    assert db.session.query(Customer).count() == 1
    assert db.session.query(Interaction).count() == 0


RECORD_MANY = """
mutation($input: RecordInteractionsInput!) {
  recordInteractions(input: $input) {
    recordedCount interactions { id kind } errors { field message code }
  }
}"""


def _items(gid: str) -> list[dict[str, Any]]:
    return [
        {"customerId": gid, "kind": "call", "occurredAt": "2026-01-01T00:00:00Z"},
        {"customerId": gid, "kind": "purchase", "occurredAt": "2026-01-02T00:00:00Z",
         "amount": "5.00"},
        {"customerId": "nonsense", "kind": "call", "occurredAt": "2026-01-03T00:00:00Z"},
        {"customerId": gid, "kind": "purchase", "occurredAt": "2026-01-04T00:00:00Z",
         "amount": "7.00", "currency": "USD", "source": "pos", "externalId": "T1"},
    ]


def test_record_interactions_is_all_or_nothing_by_default(app: Flask, gql: GraphQL) -> None:
    gid = to_global_id("Customer", create_customer({"name": "Batch"}).id)
    data = gql(RECORD_MANY, {"input": {"interactions": _items(gid)}})["recordInteractions"]
    assert {e["field"]: e["code"] for e in data["errors"]} == {
        "input.interactions.1.currency": "INVALID",
        "input.interactions.2.customerId": "INVALID"}
    assert data["recordedCount"] == 0
    assert db.session.query(Interaction).count() == 0


def test_record_interactions_partial_keeps_the_valid_items(app: Flask, gql: GraphQL) -> None:
    gid = to_global_id("Customer", create_customer({"name": "Batch"}).id)
    data = gql(RECORD_MANY, {"input": {"interactions": _items(gid), "partial": True}}
               )["recordInteractions"]
    assert data["recordedCount"] == 2
    assert [i and i["kind"] for i in data["interactions"]] == ["call", None, None, "purchase"]
    assert len(data["errors"]) == 2
    again = gql(RECORD_MANY, {"input": {"interactions": [_items(gid)[3]]}})["recordInteractions"]
    assert again["recordedCount"] == 0
    assert again["interactions"][0]["id"] == data["interactions"][3]["id"]
    assert db.session.query(Interaction).count() == 2


def test_record_interactions_caps_the_batch(app: Flask, gql: GraphQL) -> None:
    gid = to_global_id("Customer", create_customer({"name": "Batch"}).id)
    items = [{"customerId": gid, "kind": "call", "occurredAt": "2026-01-01T00:00:00Z"}] * 1001
    status, code, message = _top(gql.raw(RECORD_MANY, {"input": {"interactions": items}}))
    assert (status, code) == (400, "BAD_USER_INPUT") and "1,000" in message
    assert db.session.query(Interaction).count() == 0
    data = gql(RECORD_MANY, {"input": {"interactions": items[:1000]}})["recordInteractions"]
    assert data["recordedCount"] == 1000 and data["errors"] == []


def test_ids_beyond_bigint_are_user_errors(app: Flask, gql: GraphQL) -> None:
    huge_customer = to_global_id("Customer", 2**64)
    data = gql("""mutation($id: ID!) { recordInteraction(input: {customerId: $id, kind: "call",
        occurredAt: "2026-01-01T00:00:00Z"}) { errors { field code } } }""",
               {"id": huge_customer})["recordInteraction"]
    assert data["errors"] == [{"field": "input.customerId", "code": "INVALID"}]
    for query in ("query($id: ID!) { node(id: $id) { id } }",
                  "query($id: ID!) { customer(id: $id) { id } }"):
        body = gql.raw(query, {"id": huge_customer}).get_json()
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
