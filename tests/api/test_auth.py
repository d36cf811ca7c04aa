"""API keys, scopes and development mode."""

from __future__ import annotations

from flask import Flask

from core.auth import revoke_api_key
from tests.conftest import AppFactory, GraphQL, admin_token

CUSTOMERS = "{ customers(first: 1) { totalCount } }"


def _code(response) -> str:  # type: ignore[no-untyped-def]
    return response.get_json()["errors"][0]["extensions"]["code"]


def test_production_needs_a_key(app: Flask) -> None:
    client = GraphQL(app, None)
    response = client.raw(CUSTOMERS)
    assert response.status_code == 401
    assert _code(response) == "UNAUTHENTICATED"
    assert "rapport apikey create" in response.get_json()["errors"][0]["message"]
    for header in ("Basic abc", "Bearer nonsense", "Bearer rpk_ffffffff_wrong"):
        response = client.raw(CUSTOMERS, token=None, headers={"Authorization": header})
        assert response.status_code == 401 and _code(response) == "UNAUTHENTICATED"


def test_key_is_hashed_at_rest_and_revocable(app: Flask) -> None:
    from core.models import ApiKey

    token = admin_token(app)
    key = ApiKey.query.one()
    assert token not in (key.secret_hash, key.prefix) and len(key.secret_hash) == 64
    client = GraphQL(app, token)
    assert client(CUSTOMERS)["customers"]["totalCount"] == 0
    revoke_api_key(key.prefix)
    response = client.raw(CUSTOMERS)
    assert response.status_code == 401
    assert "revoked" in response.get_json()["errors"][0]["message"]


def test_scopes_are_enforced_on_queries_fields_and_mutations(app: Flask) -> None:
    reader = GraphQL(app, admin_token(app, ("customers:read",)))
    assert reader(CUSTOMERS)["customers"]["totalCount"] == 0
    response = reader.raw('mutation { createCustomer(input: {name: "X"}) { errors { code } } }')
    assert response.status_code == 403
    assert _code(response) == "FORBIDDEN"
    assert "customers:write" in response.get_json()["errors"][0]["message"]
    response = reader.raw("{ alerts { totalCount } }")
    assert response.status_code == 403 and _code(response) == "FORBIDDEN"
    # Fields any key may use.
    assert reader("{ interactionKinds { name } plugins { name } }")["plugins"]


def test_node_checks_the_scope_of_the_type(app: Flask) -> None:
    admin = GraphQL(app, admin_token(app))
    created = admin('mutation { createCustomer(input: {name: "N"}) { customer { id } } }')
    node_id = created["createCustomer"]["customer"]["id"]
    alerts_only = GraphQL(app, admin_token(app, ("alerts:read",)))
    response = alerts_only.raw("query($id: ID!) { node(id: $id) { id } }", {"id": node_id})
    body = response.get_json()
    assert body["data"]["node"] is None
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert admin("query($id: ID!) { node(id: $id) { ... on Customer { name } } }",
                 {"id": node_id})["node"] == {"name": "N"}


def test_development_mode_trusts_loopback_only(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_ENV="development")
    client = app.test_client()
    local = client.post("/graphql", json={"query": CUSTOMERS})
    assert local.status_code == 200 and local.get_json()["data"]["customers"]["totalCount"] == 0
    remote = client.post("/graphql", json={"query": CUSTOMERS},
                         environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert remote.status_code == 401
    page = client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and b"GraphiQL" in page.data


def test_graphiql_is_off_in_production(app: Flask) -> None:
    response = app.test_client().get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 405


def test_agent_header_names_the_actor(app: Flask) -> None:
    admin = GraphQL(app, admin_token(app))
    agent = admin('mutation { createAgent(input: {name: "Sam", email: "Sam@Shop.io"}) '
                  '{ agent { id email } errors { code } } }')["createAgent"]
    assert agent["errors"] == [] and agent["agent"]["email"] == "sam@shop.io"
    ok = admin.raw(CUSTOMERS, headers={"X-Rapport-Agent": "sam@shop.io"})
    assert ok.status_code == 200
    unknown = admin.raw(CUSTOMERS, headers={"X-Rapport-Agent": "ghost@shop.io"})
    assert unknown.status_code == 401 and _code(unknown) == "UNAUTHENTICATED"


def test_fields_that_cross_domains_need_both_scopes(app: Flask) -> None:
    reader = GraphQL(app, admin_token(app, ("customers:read",)))
    response = reader.raw("{ customers { edges { node { name interactions { totalCount } } } } }")
    assert response.status_code == 403
    assert "interactions:read" in response.get_json()["errors"][0]["message"]
    both = GraphQL(app, admin_token(app, ("customers:read", "interactions:read")))
    assert both("{ customers { edges { node { interactions { totalCount } } } } }")


def test_search_ignores_case_and_accents(app: Flask, gql: GraphQL) -> None:
    from core.services.customers import create_customer

    create_customer({"name": "José Núñez", "email": "JN@Example.com"})
    # E-mails are encrypted at rest: search reaches names only (the email filter is exact).
    for text, expected in (("josé", 1), ("JOSE", 1), ("nunez", 1), ("example.COM", 0)):
        data = gql("query($s: String) { customers(filter: {search: $s}) { totalCount } }",
                   {"s": text})
        assert data["customers"]["totalCount"] == expected, text


def test_search_wildcards_match_only_themselves(app: Flask, gql: GraphQL) -> None:
    from core.services.customers import create_customer

    create_customer({"name": "Ann_Lee", "email": "ann_lee@x.io"})
    create_customer({"name": "Bob", "email": "bob@x.io"})
    for text, expected in (("%", 0), ("_", 1), ("ann_", 1), ("b_b", 0)):
        data = gql("query($s: String) { customers(filter: {search: $s}) { totalCount } }",
                   {"s": text})
        assert data["customers"]["totalCount"] == expected, text
