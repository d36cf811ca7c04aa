"""Authorization by type: the security probe's cross-domain reads (issue 11), the run-time
check of abstract types on both executors, linear fragment analysis, and the scopes of the
cross-domain operations (merge, erase, export)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import graphene
import pytest
from flask import Flask
from graphene import relay
from graphql import ExecutionContext, execute, parse, specified_rules, validate

import api
from api.authorization import authorization_rule
from api.context import RequestContext
from api.execution import PlanCache, RapportExecutionContext
from core import hookimpl
from core.auth import Principal
from core.db import db
from core.models import Customer
from tests.conftest import AppFactory, GraphQL, admin_token

PII = ("ada@example.com", "+33 6 12 34 56 78", "grace@example.com", "secret payload")


@pytest.fixture
def world(make_app: AppFactory) -> Iterator[tuple[Flask, dict[str, str]]]:
    """Ada (with e-mail and phone), an agent, a complaint assigned to the agent and
    recorded as an interaction, Ada marked churned with a win-back attempt, and a purchase
    that earned her loyalty points."""
    app = make_app(enabled=["loyalty", "complaints", "churn"])
    with app.app_context():
        admin = GraphQL(app, admin_token(app))
        ada = admin('''mutation { createCustomer(input: {name: "Ada", email: "ada@example.com",
            phone: "+33 6 12 34 56 78", birthDate: "1990-04-01"}) { customer { id } } }'''
                    )["createCustomer"]["customer"]["id"]
        grace = admin('''mutation { createAgent(input: {name: "Grace",
            email: "grace@example.com"}) { agent { id } } }''')["createAgent"]["agent"]["id"]
        now = dt.datetime.now(dt.timezone.utc)
        admin('''mutation($from: DateTime!) { createEarnRule(input: {name: "Base",
            currency: "USD", pointsPerUnit: "1", validFrom: $from}) { errors { code } } }''',
              {"from": (now - dt.timedelta(hours=2)).isoformat()})
        bought = (now - dt.timedelta(hours=1)).isoformat()
        purchase = admin('''mutation($c: ID!, $at: DateTime!) { recordInteraction(input: {
            customerId: $c, kind: "purchase", occurredAt: $at, amount: "40.00",
            currency: "USD", payload: {note: "secret payload"}}) { interaction { id } } }''',
                         {"c": ada, "at": bought})["recordInteraction"]["interaction"]["id"]
        complaint = admin('''mutation($c: ID!, $a: ID!) { fileComplaint(input: {customerId: $c,
            type: "logistics", channel: "phone", subject: "Late", assigneeId: $a,
            description: "secret payload"}) { complaint { id } errors { code } } }''',
                          {"c": ada, "a": grace})["fileComplaint"]["complaint"]["id"]
        record = admin('''mutation($c: ID!) { markCustomerChurned(input: {customerId: $c,
            type: COMPETITIVE, reason: PRICING}) { churnRecord { id } errors { code } } }''',
                       {"c": ada})["markCustomerChurned"]["churnRecord"]["id"]
        campaign = admin('''mutation { createWinbackCampaign(input: {name: "Back",
            strategy: PRICE}) { campaign { id } errors { code } } }'''
                         )["createWinbackCampaign"]["campaign"]["id"]
        attempt = admin('''mutation($c: ID!, $w: ID!) { recordWinbackAttempt(input: {
            campaignId: $w, customerId: $c}) { attempt { id } errors { code } } }''',
                        {"c": ada, "w": campaign})["recordWinbackAttempt"]["attempt"]["id"]
        entry = admin('''query($c: ID!) { customer(id: $c) { loyalty { ledger { edges {
            node { id } } } } } }''', {"c": ada})["customer"]["loyalty"]["ledger"]["edges"][0][
            "node"]["id"]
        yield app, {"ada": ada, "grace": grace, "purchase": purchase, "complaint": complaint,
                    "record": record, "attempt": attempt, "entry": entry}


def _key(app: Flask, *scopes: str) -> GraphQL:
    return GraphQL(app, admin_token(app, scopes))


def _refused(client: GraphQL, query: str, variables: dict[str, Any] | None = None,
             needs: str = "") -> None:
    response = client.raw(query, variables)
    body = response.get_json()
    assert response.status_code == 403, body
    assert {e["extensions"]["code"] for e in body["errors"]} == {"FORBIDDEN"}
    assert "data" not in body
    assert needs in str(body)
    assert not any(value in response.get_data(as_text=True) for value in PII)


@pytest.mark.parametrize("selection, needs", [
    ("customer { name email phone birthDate }", "Customer.name needs the customers:read"),
    ("assignee { email }", "Agent.email needs the agents:read"),
    ("timeline { actor { email } }", "Agent.email needs the agents:read"),
    ("interaction { payload amount { amount } }", "interactions:read"),
])
def test_complaints_read_reads_no_other_domain(world: tuple[Flask, dict[str, str]],
                                               selection: str, needs: str) -> None:
    app, ids = world
    reader = _key(app, "complaints:read")
    assert reader("{ complaints { edges { node { subject } } } }")["complaints"]["edges"] == [
        {"node": {"subject": "Late"}}]
    _refused(reader, f"{{ complaints {{ edges {{ node {{ {selection} }} }} }} }}", needs=needs)
    _refused(reader, f"query($id: ID!) {{ complaint(id: $id) {{ {selection} }} }}",
             {"id": ids["complaint"]}, needs)
    # Through a fragment, or a fragment spread twice at different places, all the same.
    _refused(reader, f"""query($id: ID!) {{ complaint(id: $id) {{ ...C }}
        complaints {{ edges {{ node {{ ...C }} }} }} }}
        fragment C on Complaint {{ {selection} }}""", {"id": ids["complaint"]}, needs)


def test_churn_read_reads_no_customer_through_node(
        world: tuple[Flask, dict[str, str]]) -> None:
    app, ids = world
    reader = _key(app, "churn:read")
    for key, type_name in (("record", "ChurnRecord"), ("attempt", "WinbackAttempt")):
        assert reader("query($id: ID!) { node(id: $id) { __typename id } }",
                      {"id": ids[key]})["node"]["__typename"] == type_name
        _refused(reader, f"""query($id: ID!) {{ node(id: $id) {{
            ... on {type_name} {{ customer {{ name email phone }} }} }} }}""",
                 {"id": ids[key]}, "customers:read")
        _refused(reader, f"""query($id: ID!) {{ node(id: $id) {{ ...F }} }}
            fragment F on {type_name} {{ customer {{ name }} }}""", {"id": ids[key]})
    # node(id:) of a type of another domain: null and FORBIDDEN at its path.
    body = reader.raw("query($id: ID!) { node(id: $id) { id } }", {"id": ids["ada"]}).get_json()
    assert body["data"] == {"node": None}
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["node"], "FORBIDDEN")]


def test_churn_write_reads_no_customer_from_its_payload(
        world: tuple[Flask, dict[str, str]]) -> None:
    app, ids = world
    with app.app_context():
        bob = db.session.scalar(db.select(Customer.id).where(Customer.name == "Ada"))
    writer = _key(app, "churn:write")
    mark = """mutation($c: ID!) { markCustomerChurned(input: {customerId: $c, type: NATURAL,
        reason: OTHER}) { %s } }"""
    _refused(writer, mark % "customer { name email phone }", {"c": ids["ada"]},
             "customers:read")
    _refused(writer, mark % "churnRecord { customer { name } }", {"c": ids["ada"]})
    # The payload's own errors are the answer to the call the key may make.
    answered = writer(mark % "errors { field code }", {"c": ids["ada"]})
    assert answered["markCustomerChurned"]["errors"][0]["code"]  # already churned
    assert bob is not None


def test_loyalty_read_reads_no_interaction_through_the_ledger(
        world: tuple[Flask, dict[str, str]]) -> None:
    app, ids = world
    reader = _key(app, "loyalty:read")
    entry = reader("query($id: ID!) { node(id: $id) { ... on LoyaltyLedgerEntry { points } } }",
                   {"id": ids["entry"]})["node"]
    assert entry == {"points": 40}
    _refused(reader, """query($id: ID!) { node(id: $id) { ... on LoyaltyLedgerEntry {
        interaction { kind payload amount { amount } customer { name } } } } }""",
             {"id": ids["entry"]}, "interactions:read")
    both = _key(app, "loyalty:read", "customers:read")
    _refused(both, """query($id: ID!) { customer(id: $id) { loyalty { ledger { edges { node {
        interaction { payload } } } } } } }""", {"id": ids["ada"]}, "interactions:read")


# --- Run time: interfaces, on both executors ------------------------------------------------


def _any_customer(root: Any, info: Any) -> Any:
    return db.session.scalar(db.select(Customer).limit(1))


class AnyNode:
    """A field returning the Node interface without node()'s own check: only the type
    resolver's check stands between the caller and the value."""

    name = "any_node"

    @hookimpl
    def rapport_graphql_query_fields(self) -> dict[str, graphene.Field]:
        return {"anyNode": api.scoped(graphene.Field(relay.Node, resolver=_any_customer),
                                      api.AUTHENTICATED)}


@pytest.mark.parametrize("executor", [ExecutionContext, RapportExecutionContext, "compiled"])
def test_an_interface_field_refuses_a_type_of_another_domain_at_run_time(
        make_app: AppFactory, executor: type[ExecutionContext] | str) -> None:
    app = make_app(plugins=(AnyNode(),))
    with app.app_context():
        db.session.add(Customer(name="Ada"))
        db.session.commit()
        schema = app.extensions["rapport_graphql"].schema
        def run(query: str, *scopes: str) -> Any:
            document = parse(query)
            principal = Principal("t", frozenset(scopes))
            assert not validate(schema.graphql_schema, document, [
                *specified_rules, authorization_rule(principal, {}, schema.type_domains)])
            context_class = (PlanCache(document).context_class(None)
                             if executor == "compiled" else executor)
            result = execute(schema.graphql_schema, document,
                             execution_context_class=context_class,  # type: ignore[arg-type]
                             context_value=RequestContext(principal=principal))
            return result

        refused = run("{ anyNode { id } }", "alerts:read")
        assert refused.data == {"anyNode": None}
        assert [(e.path, e.extensions["code"]) for e in refused.errors or []] == [
            (["anyNode"], "FORBIDDEN")]
        assert run("{ anyNode { id ... on Customer { name } } }", "customers:read").data == {"anyNode": {"id": relay.Node.to_global_id(
            "Customer", 1), "name": "Ada"}}


# --- Validation work is linear in the document ----------------------------------------------


def _fan_out(levels: int) -> str:
    """Each fragment spreads the next twice: 2**levels paths, ``levels`` fragments."""
    fragments = [f"fragment F{i} on Customer {{ name ...F{i + 1} ...F{i + 1} }}"
                 for i in range(levels)]
    fragments.append(f"fragment F{levels} on Customer {{ name owner {{ email }} }}")
    return "{ customers { edges { node { ...F0 } } } }\n" + "\n".join(fragments)


def test_each_fragment_is_analysed_once_per_inherited_scope(app: Flask) -> None:
    schema = app.extensions["rapport_graphql"].schema
    counted: list[Any] = []
    principal = Principal("t", frozenset({"customers:read"}))
    rule = authorization_rule(principal, schema.field_scopes, schema.type_domains)

    class Counting(rule):  # type: ignore[misc, valid-type]
        def __init__(self, context: Any):
            super().__init__(context)
            counted.append(self)

    for levels in (10, 30):
        counted.clear()
        errors = validate(schema.graphql_schema, parse(_fan_out(levels)), [Counting])
        # owner { email } needs agents:read (the field's scope and Agent's): found, and
        # reported once however many paths lead to it.
        assert [e.message for e in errors] == [
            "Selecting Customer.owner needs the agents:read scope, which this API key lacks.",
            "Selecting Agent.email needs the agents:read scope, which this API key lacks."]
        assert counted[0].analysed == {(f"F{i}", "customers:read") for i in range(levels + 1)}


# --- Cross-domain operations -------------------------------------------------------------


def test_customers_write_alone_no_longer_merges_erases_or_exports(
        world: tuple[Flask, dict[str, str]]) -> None:
    app, ids = world
    writer = _key(app, "customers:write", "customers:read")
    twin = writer('mutation { createCustomer(input: {name: "Ada2"}) { customer { id } } }'
                  )["createCustomer"]["customer"]["id"]
    for document, variables, scope in (
            ("""mutation($s: ID!, $m: ID!) { mergeCustomers(input: {survivorId: $s,
                mergedIds: [$m]}) { errors { code } } }""", {"s": ids["ada"], "m": twin},
             "customers:merge"),
            ("mutation($id: ID!) { eraseCustomer(input: {id: $id}) { errors { code } } }",
             {"id": twin}, "customers:erase"),
            ("mutation($id: ID!) { exportCustomer(input: {id: $id}) { document } }",
             {"id": ids["ada"]}, "customers:export")):
        _refused(writer, document, variables, scope)
        assert _key(app, scope)(document, variables)


def test_an_export_holds_only_the_sections_the_key_may_read(
        world: tuple[Flask, dict[str, str]]) -> None:
    app, ids = world
    export = "mutation($id: ID!) { exportCustomer(input: {id: $id}) { document errors { code } } }"
    narrow = _key(app, "customers:export", "customers:read")(export, {"id": ids["ada"]})
    document = narrow["exportCustomer"]["document"]
    assert document["customer"]["email"] == "ada@example.com"
    assert "interactions" not in document and "plugins" not in document
    assert sorted(document["omitted"]) == ["interactions", "plugins.churn",
                                           "plugins.complaints", "plugins.loyalty"]
    assert "secret payload" not in str(document)
    loyal = _key(app, "customers:export", "loyalty:read")(export, {"id": ids["ada"]})
    document = loyal["exportCustomer"]["document"]
    assert list(document["plugins"]) == ["loyalty"] and "customer" not in document
    assert "ada@example.com" not in str(document)
    full = _key(app, "admin")(export, {"id": ids["ada"]})["exportCustomer"]["document"]
    assert "omitted" not in full
    assert {"churn", "complaints", "loyalty"} <= set(full["plugins"])
    assert full["interactions"][0]["payload"] == {"note": "secret payload"}
    assert dt.datetime.fromisoformat(full["exportedAt"])
    # One face: every key Rapport defines is camelCase, users' keys pass unchanged.
    assert full["customer"]["id"] == ids["ada"]
    assert [k for k in _defined_keys(full) if "_" in k] == []
    assert full["plugins"]["complaints"]["complaints"][0]["id"].startswith("Q29tcGxhaW50")


def _defined_keys(document: Any) -> list[str]:
    if isinstance(document, list):
        return [k for item in document for k in _defined_keys(item)]
    if not isinstance(document, dict):
        return []
    user_defined = ("attributes", "payload", "answers")
    return [k for key, value in document.items()
            for k in [key, *([] if key in user_defined else _defined_keys(value))]]
