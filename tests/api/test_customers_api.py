"""Customers over GraphQL: pages, filters, order, lookups, mutations and their errors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask

from core.services.customers import create_customer
from core.services.interactions import record_interactions
from tests.conftest import GraphQL, count_statements

PAGE = """
query($first: Int, $after: String, $filter: CustomerFilterInput, $order: CustomerOrder) {
  customers(first: $first, after: $after, filter: $filter, orderBy: $order) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor startCursor }
    edges { cursor node { id name } }
  }
}"""


def _names(gql: GraphQL, **variables: Any) -> list[str]:
    data = gql(PAGE, variables)["customers"]
    return [e["node"]["name"] for e in data["edges"]]


def _seed(n: int) -> list[int]:
    return [create_customer({"name": f"Customer {i:03d}"}).id for i in range(n)]


def test_keyset_pages_walk_every_customer_once(app: Flask, gql: GraphQL) -> None:
    _seed(23)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        data = gql(PAGE, {"first": 10, "after": after})["customers"]
        seen += [e["node"]["name"] for e in data["edges"]]
        assert data["totalCount"] == 23
        assert data["pageInfo"]["hasPreviousPage"] is (after is not None)
        pages += 1
        if not data["pageInfo"]["hasNextPage"]:
            break
        after = data["pageInfo"]["endCursor"]
    assert pages == 3
    assert seen == [f"Customer {i:03d}" for i in range(23)]


def test_order_by_name_descending_pages_consistently(app: Flask, gql: GraphQL) -> None:
    for name in ("bravo", "Alpha", "charlie", "delta"):
        create_customer({"name": name})
    order = {"field": "NAME", "direction": "DESC"}
    first = gql(PAGE, {"first": 2, "order": order})["customers"]
    rest = gql(PAGE, {"first": 2, "order": order,
                      "after": first["pageInfo"]["endCursor"]})["customers"]
    assert [e["node"]["name"] for e in first["edges"] + rest["edges"]] == [
        "delta", "charlie", "bravo", "Alpha"]


def test_segment_filters(app: Flask, gql: GraphQL) -> None:
    ann = create_customer({"name": "Ann", "country": "FR", "city": "Lyon", "gender": "female",
                           "tags": ["vip"], "attributes": {"plan": "gold", "seats": 12},
                           "birth_date": "1980-01-01"})
    bob = create_customer({"name": "Bob", "country": "DE", "city": "Berlin", "tags": ["vip", "b2b"],
                           "lifecycle_stage": "loyal",
                           "attributes": {"plan": "free", "seats": 1},
                           "birth_date": "2001-01-01"})
    create_customer({"name": "Cid", "country": "FR", "city": "Paris"})
    now = dt.datetime.now(dt.timezone.utc)
    old = (now - dt.timedelta(days=200)).isoformat()
    recent = (now - dt.timedelta(days=3)).isoformat()
    record_interactions([
        {"customer_id": ann.id, "kind": "purchase", "occurred_at": old, "amount": "50",
         "currency": "USD"},
        {"customer_id": ann.id, "kind": "purchase", "occurred_at": recent, "amount": "70",
         "currency": "USD"},
        {"customer_id": bob.id, "kind": "purchase", "occurred_at": old, "amount": "500",
         "currency": "EUR"},
        {"customer_id": bob.id, "kind": "call", "occurred_at": recent},
    ])
    cutoff = (now - dt.timedelta(days=30)).isoformat()
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"country": ["fr"]}, ["Ann", "Cid"]),
        ({"city": ["Berlin", "Lyon"]}, ["Ann", "Bob"]),
        ({"tagsAny": ["b2b", "vip"]}, ["Ann", "Bob"]),
        ({"tagsAll": ["vip", "b2b"]}, ["Bob"]),
        ({"attributes": [{"key": "plan", "equals": "gold"}]}, ["Ann"]),
        ({"attributes": [{"key": "seats", "min": 5}]}, ["Ann"]),
        ({"attributes": [{"key": "plan", "in": ["free", "pro"]}]}, ["Bob"]),
        ({"bornBefore": "1990-01-01"}, ["Ann"]),
        ({"lastPurchaseAfter": cutoff}, ["Ann"]),
        ({"lastPurchaseBefore": cutoff}, ["Bob"]),
        ({"minPurchaseCount": 2}, ["Ann"]),
        ({"maxPurchaseCount": 1}, ["Bob", "Cid"]),
        ({"minSpend": "100"}, ["Ann"]),
        ({"minSpend": "100", "country": ["DE"]}, []),  # Bob's EUR is not base currency
        ({"minSpend": "120.00"}, ["Ann"]),
        ({"minSpend": "120.01"}, []),
        ({"maxSpend": "10"}, ["Bob", "Cid"]),
        ({"search": "AN"}, ["Ann"]),
        ({"gender": ["female"], "country": ["FR"]}, ["Ann"]),
        ({"lifecycleStage": ["LOYAL"]}, ["Bob"]),
        ({"status": ["ACTIVE"], "lifecycleStage": ["CUSTOMER", "TRIAL"]}, ["Ann", "Cid"]),
    ]
    for spec, expected in cases:
        assert sorted(_names(gql, filter=spec, first=50)) == expected, spec
        count = gql(PAGE, {"filter": spec})["customers"]["totalCount"]
        assert count == len(expected), spec


@pytest.mark.parametrize(("variables", "message"), [
    ({"first": 101}, "first must be between 0 and 100"),
    ({"first": -1}, "first must be between 0 and 100"),
    ({"after": "not-a-cursor"}, "Invalid cursor"),
    ({"filter": {"minPurchaseCount": 5, "maxPurchaseCount": 2}}, "range is empty"),
    ({"filter": {"country": ["FRA"]}}, "filter.country"),
])
def test_bad_page_arguments_are_user_errors(app: Flask, gql: GraphQL,
                                            variables: dict[str, Any], message: str) -> None:
    body = gql.raw(PAGE, variables).get_json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert message in body["errors"][0]["message"]


NESTED = """
query($n: Int!) {
  customers(first: $n) {
    totalCount
    edges { node {
      id name tags externalIds { source externalId } owner { name }
      interactions(first: 5) {
        totalCount
        edges { node { id kind occurredAt amount { amount currency }
                       refersTo { id } customer { name } } }
      }
    } }
  }
}"""


def test_nested_query_statement_count_does_not_grow_with_page_size(app: Flask,
                                                                   gql: GraphQL) -> None:
    ids = _seed(60)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    record_interactions([
        {"customer_id": cid, "kind": "purchase", "amount": "10", "currency": "USD",
         "occurred_at": (start + dt.timedelta(days=day)).isoformat()}
        for cid in ids for day in range(7)])
    gql("{ plugins { name } }")  # the key's last-use stamp is written at most every 5 min
    counts = {}
    for n in (5, 50):
        with count_statements(app) as statements:
            data = gql(NESTED, {"n": n})["customers"]
        assert len(data["edges"]) == n
        assert all(len(e["node"]["interactions"]["edges"]) == 5 for e in data["edges"])
        assert all(e["node"]["interactions"]["totalCount"] == 7 for e in data["edges"])
        counts[n] = len(statements)
    assert counts[5] == counts[50], counts
    # customers page, count, tags, external ids, interactions, their counts (the API key
    # was read by the request before and is cached: core.auth); interaction -> customer
    # comes from the page already loaded.
    assert counts[50] == 6, counts


def test_customer_lookups(app: Flask, gql: GraphQL) -> None:
    customer = create_customer({"name": "Ext", "source": "shop", "external_id": "S-1"})
    from graphql_relay import to_global_id

    gid = to_global_id("Customer", customer.id)
    data = gql("""query($id: ID!) {
        customer(id: $id) { name }
        byExt: customerByExternalId(source: "shop", externalId: "S-1") { id }
        missing: customerByExternalId(source: "shop", externalId: "nope") { id }
    }""", {"id": gid})
    assert data == {"customer": {"name": "Ext"}, "byExt": {"id": gid}, "missing": None}
    body = gql.raw('{ customer(id: "garbage") { name } }').get_json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
