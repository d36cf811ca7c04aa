"""The thinnest path end to end: create a customer, record purchases, read the timeline."""

from __future__ import annotations

from tests.conftest import GraphQL

CREATE = """
mutation($input: CreateCustomerInput!) {
  createCustomer(input: $input) { customer { id name email tags } errors { field message code } }
}"""
RECORD = """
mutation($input: RecordInteractionInput!) {
  recordInteraction(input: $input) {
    interaction { id kind occurredAt amount { amount currency } }
    errors { field message code }
  }
}"""
TIMELINE = """
query($id: ID!) {
  customer(id: $id) {
    name
    interactions(first: 10) {
      totalCount
      edges { cursor node { kind occurredAt amount { amount currency } } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""


def test_customer_purchases_and_timeline(gql: GraphQL) -> None:
    created = gql(CREATE, {"input": {"name": "Ada Lovelace", "email": "ada@example.com",
                                     "tags": ["VIP", "newsletter"]}})["createCustomer"]
    assert created["errors"] == []
    customer = created["customer"]
    assert customer["tags"] == ["newsletter", "vip"]
    for day, amount in (("2026-01-05", "19.99"), ("2026-02-07", "120.00")):
        result = gql(RECORD, {"input": {
            "customerId": customer["id"], "kind": "purchase",
            "occurredAt": f"{day}T10:00:00+00:00", "amount": amount, "currency": "usd"}})
        assert result["recordInteraction"]["errors"] == []
        assert result["recordInteraction"]["interaction"]["amount"] == {
            "amount": amount, "currency": "USD"}

    timeline = gql(TIMELINE, {"id": customer["id"]})["customer"]
    assert timeline["name"] == "Ada Lovelace"
    nodes = [e["node"] for e in timeline["interactions"]["edges"]]
    assert [n["occurredAt"] for n in nodes] == ["2026-02-07T10:00:00+00:00",
                                               "2026-01-05T10:00:00+00:00"]
    assert nodes[0]["amount"] == {"amount": "120.00", "currency": "USD"}
    assert timeline["interactions"]["totalCount"] == 2
    assert timeline["interactions"]["pageInfo"]["hasNextPage"] is False
