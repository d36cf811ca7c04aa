"""Merge, erase, export, duplicates, attributes, agents and alerts through GraphQL."""

from __future__ import annotations

from flask import Flask
from graphql_relay import to_global_id

from core.db import db
from core.models import Interaction
from core.services.customers import create_customer
from core.services.interactions import record_interaction
from core.services.staff import raise_alert
from tests.conftest import GraphQL


def test_duplicates_then_merge(app: Flask, gql: GraphQL) -> None:
    a = create_customer({"name": "Ann Lee", "email": "ann@x.io"})
    b = create_customer({"name": "Ann Lee", "email": "ANN@x.io", "city": "Oslo"})
    record_interaction({"customer_id": b.id, "kind": "call",
                        "occurred_at": "2026-01-01T00:00:00Z"})
    groups = gql("{ customerDuplicates { reason score customers { id name } } }")[
        "customerDuplicates"]
    assert groups == [{"reason": "email", "score": 1.0, "customers": [
        {"id": to_global_id("Customer", a.id), "name": "Ann Lee"},
        {"id": to_global_id("Customer", b.id), "name": "Ann Lee"}]}]
    merged = gql("""mutation($input: MergeCustomersInput!) { mergeCustomers(input: $input) {
        customer { city interactions { totalCount } } errors { code } } }""",
                 {"input": {"survivorId": to_global_id("Customer", a.id),
                            "mergedIds": [to_global_id("Customer", b.id)]}})["mergeCustomers"]
    assert merged == {"customer": {"city": "Oslo", "interactions": {"totalCount": 1}},
                      "errors": []}
    assert gql("{ customerDuplicates { reason } }")["customerDuplicates"] == []


def test_erase_and_export(app: Flask, gql: GraphQL) -> None:
    customer = create_customer({"name": "Eve", "email": "eve@x.io"})
    record_interaction({"customer_id": customer.id, "kind": "purchase", "amount": "9.90",
                        "currency": "USD", "occurred_at": "2026-01-01T00:00:00Z"})
    gid = to_global_id("Customer", customer.id)
    exported = gql("mutation($id: ID!) { exportCustomer(input: {id: $id}) { document } }",
                   {"id": gid})["exportCustomer"]["document"]
    assert exported["customer"]["email"] == "eve@x.io"
    assert exported["interactions"][0]["amount"] == "9.90"
    assert exported["customer"]["id"] == gid and "exportedAt" in exported
    assert exported["interactions"][0]["occurredAt"] and "occurred_at" not in \
        exported["interactions"][0]
    erased = gql("""mutation($id: ID!) { eraseCustomer(input: {id: $id}) {
        customer { name email status } report errors { code } } }""", {"id": gid})[
        "eraseCustomer"]
    assert erased["customer"] == {"name": None, "email": None, "status": "ERASED"}
    assert "email" in erased["report"]["core"]["fieldsCleared"]
    assert erased["report"]["core"]["externalIdsRemoved"] == 0
    assert db.session.query(Interaction).count() == 1  # revenue facts stay


def test_update_customer_and_attribute_definitions(app: Flask, gql: GraphQL) -> None:
    gid = to_global_id("Customer", create_customer({"name": "U", "city": "Rome"}).id)
    updated = gql("""mutation($input: UpdateCustomerInput!) { updateCustomer(input: $input) {
        customer { name city lifecycleStage attributes } errors { field code } } }""",
                  {"input": {"id": gid, "city": None, "lifecycleStage": "LOYAL",
                             "attributes": {"plan": "gold"}}})["updateCustomer"]
    assert updated == {"customer": {"name": "U", "city": None, "lifecycleStage": "LOYAL",
                                    "attributes": {"plan": "gold"}}, "errors": []}
    defined = gql("""mutation { defineCustomerAttribute(input: {key: "plan", type: "category",
        label: "Plan", categories: ["free", "gold"]}) { attribute { key type } errors { code } }
        }""")["defineCustomerAttribute"]
    assert defined == {"attribute": {"key": "plan", "type": "category"}, "errors": []}
    clash = gql("""mutation { defineCustomerAttribute(input: {key: "plan", type: "number",
        label: "Plan"}) { errors { field code } } }""")["defineCustomerAttribute"]
    assert clash["errors"] == [{"field": "input.type", "code": "CONFLICT"}]
    assert gql("{ customerAttributes { key label categories } }")["customerAttributes"] == [
        {"key": "plan", "label": "Plan", "categories": ["free", "gold"]}]


def test_alerts_are_listed_and_acknowledged(app: Flask, gql: GraphQL) -> None:
    customer = create_customer({"name": "A"})
    for n in range(3):
        raise_alert("complaint_spike", "high", "complaints", {"window_count": 40 + n},
                    customer=customer)
    db.session.commit()
    page = gql("""{ alerts(first: 2, status: OPEN) { totalCount
        edges { node { id kind severity evidence customer { name } } } pageInfo { hasNextPage } } }
        """)["alerts"]
    assert page["totalCount"] == 3 and page["pageInfo"]["hasNextPage"] is True
    # Evidence stored before it was written in camelCase reads in camelCase too.
    assert page["edges"][0]["node"]["evidence"] == {"windowCount": 42}
    assert page["edges"][0]["node"]["customer"] == {"name": "A"}
    alert_id = page["edges"][0]["node"]["id"]
    done = gql("""mutation($id: ID!) { acknowledgeAlert(input: {id: $id}) {
        alert { status acknowledgedAt } errors { code } } }""", {"id": alert_id})[
        "acknowledgeAlert"]
    assert done["alert"]["status"] == "ACKNOWLEDGED" and done["alert"]["acknowledgedAt"]
    again = gql("""mutation($id: ID!) { acknowledgeAlert(input: {id: $id}) { errors { code } } }""",
                {"id": alert_id})["acknowledgeAlert"]
    assert again["errors"] == [{"code": "NOT_ALLOWED"}]
    assert gql("{ alerts(status: OPEN) { totalCount } }")["alerts"]["totalCount"] == 2


def test_agents_list(app: Flask, gql: GraphQL) -> None:
    for name in ("Ann", "Bob"):
        gql('mutation($n: String!, $e: String!) { createAgent(input: {name: $n, email: $e}) '
            '{ errors { code } } }', {"n": name, "e": f"{name}@shop.io"})
    dup = gql('mutation { createAgent(input: {name: "X", email: "ann@SHOP.io"}) '
              '{ errors { field code } } }')["createAgent"]
    assert dup["errors"] == [{"field": "input.email", "code": "UNIQUE"}]
    agents = gql("{ agents { totalCount edges { node { name email active } } } }")["agents"]
    assert agents["totalCount"] == 2
    assert [e["node"]["name"] for e in agents["edges"]] == ["Bob", "Ann"]


def test_alert_is_a_node(app: Flask, gql: GraphQL) -> None:
    raise_alert("churn_jump", "medium", "churn", {"rate": 0.2})
    db.session.commit()
    alert_id = gql("{ alerts { edges { node { id } } } }")["alerts"]["edges"][0]["node"]["id"]
    node = gql("query($id: ID!) { node(id: $id) { ... on Alert { kind evidence } } }",
               {"id": alert_id})["node"]
    assert node == {"kind": "churn_jump", "evidence": {"rate": 0.2}}
