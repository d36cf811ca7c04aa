"""Identity over HTTP: who a request acts as (keys of agents and services, roles,
X-Rapport-Agent with agents:act-as), every mutation audited with that actor, and the
auditEntries query."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import select

from api.mutations import RapportMutation
from core.auth import create_api_key
from core.db import db
from core.ids import global_id
from core.models import ApiKey, AuditEntry, OutboxEvent
from core.services.customers import create_customer
from core.services.staff import create_agent, raise_alert
from core.services import transaction
from tests.conftest import AppFactory, GraphQL, count_statements

CUSTOMERS = "{ customers(first: 1) { totalCount } }"
CREATE = 'mutation { createCustomer(input: {name: "X"}) { customer { id } errors { code } } }'


def _key(app: Flask, scopes: tuple[str, ...], **owner: str) -> tuple[GraphQL, ApiKey]:
    key, secret = create_api_key(owner.get("agent_email") or owner.get("service") or "k",
                                 scopes, **owner)
    return GraphQL(app, secret), key


def _changes_made() -> list[str]:
    """Operations in the audit log made through the API (not the tests' own set-up)."""
    return list(db.session.scalars(select(AuditEntry.operation).where(
        AuditEntry.actor_service.is_distinct_from("system"),
        AuditEntry.operation != "apikey.create").order_by(AuditEntry.id.desc())))


def _last_entry() -> AuditEntry:
    return db.session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()


# --- X-Rapport-Agent ---------------------------------------------------------------------------


def test_act_as_is_refused_without_the_scope(app: Flask) -> None:
    create_agent({"name": "Sam", "email": "sam@shop.io"})
    client, _ = _key(app, ("customers:write",), service="shop")
    for who in ("sam@shop.io", "ghost@shop.io"):  # no oracle: the same answer either way
        response = client.raw(CREATE, headers={"X-Rapport-Agent": who})
        assert response.status_code == 403, response.get_json()
        error = response.get_json()["errors"][0]
        assert error["extensions"]["code"] == "FORBIDDEN" and "agents:act-as" in error["message"]
    assert _changes_made() == []


def test_act_as_is_recorded_as_on_behalf_of(app: Flask) -> None:
    sam = create_agent({"name": "Sam", "email": "sam@shop.io"})
    client, key = _key(app, ("customers:read", "customers:write", "agents:act-as"),
                       service="front-desk")
    data = client(CREATE, headers={"X-Rapport-Agent": "sam@shop.io", "X-Request-Id": "rq-42"})
    assert data["createCustomer"]["errors"] == []
    entry = _last_entry()
    assert entry.operation == "createCustomer" and entry.request_id == "rq-42"
    assert entry.actor == {"agentId": None, "service": "front-desk",
                           "apiKeyPrefix": key.prefix,
                           "onBehalfOfAgentId": global_id("Agent", sam.id), "via": "graphql"}
    assert entry.actor_agent_id == sam.id
    event = db.session.scalars(select(OutboxEvent)).one()
    assert event.type == "customer.created" and event.actor == entry.actor


def test_development_admin_is_the_dev_admin_service(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_ENV="development")
    with app.app_context():
        response = app.test_client().post("/graphql", json={"query": CREATE})
        assert response.status_code == 200, response.get_json()
        assert _last_entry().actor["service"] == "dev-admin"


# --- roles -------------------------------------------------------------------------------------


def test_an_agent_key_never_exceeds_the_agents_role(app: Flask) -> None:
    rep = create_agent({"name": "Rae", "email": "rae@shop.io",
                        "role": "service_representative"})
    client, key = _key(app, ("admin",), agent_email="rae@shop.io")
    assert client(CREATE)["createCustomer"]["errors"] == []
    assert _last_entry().actor["agentId"] == global_id("Agent", rep.id)
    assert _last_entry().actor["service"] is None
    for query in ("{ auditEntries { totalCount } }",
                  'mutation { createAgent(input: {name: "A", email: "a@b.c"}) { agent { id } } }'):
        response = client.raw(query)
        assert response.status_code == 403, (query, response.get_json())
    # act-as is outside every role but admin.
    response = client.raw(CUSTOMERS, headers={"X-Rapport-Agent": "rae@shop.io"})
    assert response.status_code == 403


def test_a_deactivated_agents_key_stops_working(app: Flask) -> None:
    agent = create_agent({"name": "Old", "email": "old@shop.io", "role": "admin"})
    client, _ = _key(app, ("customers:read",), agent_email="old@shop.io")
    assert client(CUSTOMERS)["customers"]["totalCount"] == 0
    with transaction():
        agent.active = False
    assert client.raw(CUSTOMERS).status_code == 401


def test_agent_role_over_graphql(app: Flask, gql: GraphQL) -> None:
    data = gql('mutation { createAgent(input: {name: "T", email: "t@shop.io", '
               'role: TEAM_LEADER}) { agent { role } errors { code } } }')["createAgent"]
    assert data == {"agent": {"role": "TEAM_LEADER"}, "errors": []}


# --- every mutation audited with its actor --------------------------------------------------


def _core_cases(app: Flask) -> dict[str, Callable[[], tuple[str, dict[str, Any]]]]:
    """One call of each core mutation, built on demand (ids of rows made just before)."""

    def customer() -> str:
        return global_id("Customer", create_customer({"name": "C"}).id)

    def alert() -> str:
        with transaction():
            return global_id("Alert", raise_alert("probe", "low", "tests", {}).id)

    when = "2026-01-02T03:04:05+00:00"
    return {
        "createCustomer": lambda: ("createCustomer(input: {name: \"N\"})", {}),
        "updateCustomer": lambda: ("updateCustomer(input: {id: $id, city: \"Rome\"})",
                                   {"id": customer()}),
        "mergeCustomers": lambda: ("mergeCustomers(input: {survivorId: $id, mergedIds: [$other]})",
                                   {"id": customer(), "other": customer()}),
        "eraseCustomer": lambda: ("eraseCustomer(input: {id: $id})", {"id": customer()}),
        "exportCustomer": lambda: ("exportCustomer(input: {id: $id})", {"id": customer()}),
        "defineCustomerAttribute": lambda: (
            "defineCustomerAttribute(input: {key: \"vip\", type: \"boolean\", label: \"VIP\"})",
            {}),
        "recordInteraction": lambda: (
            f"recordInteraction(input: {{customerId: $id, kind: \"call\", occurredAt: \"{when}\"}})",
            {"id": customer()}),
        "recordInteractions": lambda: (
            "recordInteractions(input: {interactions: [{customerId: $id, kind: \"call\", "
            f"occurredAt: \"{when}\"}}]}})", {"id": customer()}),
        "createAgent": lambda: ("createAgent(input: {name: \"A\", email: \"a@shop.io\"})", {}),
        "updateAgent": lambda: ("updateAgent(input: {id: $id, team: \"North\"})",
                                {"id": global_id("Agent", create_agent(
                                    {"name": "U", "email": "u@shop.io"}).id)}),
        "reassignCustomers": lambda: (
            "reassignCustomers(input: {customerIds: [$id], toOwnerId: $agent})",
            {"id": customer(), "agent": global_id("Agent", create_agent(
                {"name": "R", "email": "r@shop.io"}).id)}),
        "acknowledgeAlert": lambda: ("acknowledgeAlert(input: {id: $id})", {"id": alert()}),
    }


#: Mutations of core's job API: audited by the base class like every other (the structural
#: test below), exercised by the job tests.
_JOB_MUTATIONS = {"startJob", "cancelJob", "createSchedule", "updateSchedule", "deleteSchedule"}


def test_every_core_mutation_is_audited_with_the_real_actor(app: Flask) -> None:
    schema = app.extensions["rapport_graphql"].schema.graphql_schema
    cases = _core_cases(app)
    assert set(schema.mutation_type.fields) - _JOB_MUTATIONS == set(cases), \
        "a new core mutation needs a case here"
    client, key = _key(app, ("admin",), service="backoffice")
    for name, case in cases.items():
        call, variables = case()
        declared = "".join(f"${v}: ID!" for v in variables)
        document = (f"mutation{'(' + declared + ')' if declared else ''} "
                    f"{{ {call} {{ errors {{ field code }} }} }}")
        before = db.session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc()))
        data = client(document, variables)
        assert data[name]["errors"] == [], (name, data)
        db.session.expire_all()
        entries = db.session.scalars(select(AuditEntry).where(
            AuditEntry.id > (before or 0), AuditEntry.operation == name)).all()
        assert entries, f"{name} wrote no audit entry"
        for entry in entries:
            assert entry.actor["service"] == "backoffice", (name, entry.actor)
            assert entry.actor["apiKeyPrefix"] == key.prefix and entry.actor["via"] == "graphql"


def test_every_mutation_of_every_plugin_goes_through_the_audited_base_class(
        make_app: AppFactory) -> None:
    from core.plugins import builtin_plugin_names

    app = make_app(enabled=list(builtin_plugin_names()))
    mutation = app.extensions["rapport_graphql"].schema.graphene_schema.mutation
    for name, field in mutation._meta.fields.items():
        cls = field.type
        assert isinstance(cls, type) and issubclass(cls, RapportMutation), name
        assert all("mutate" not in vars(k) for k in cls.__mro__ if k is not RapportMutation), \
            f"{name} overrides mutate(): it would skip the audit entry"


def test_a_refused_mutation_writes_neither_audit_nor_outbox(app: Flask, gql: GraphQL) -> None:
    data = gql('mutation { updateCustomer(input: {id: "Q3VzdG9tZXI6OTk5", name: "B"}) '
               '{ errors { code } } }')["updateCustomer"]
    assert data["errors"] == [{"code": "NOT_FOUND"}]
    data = gql('mutation { createCustomer(input: {name: "A", email: "not an e-mail"}) '
               '{ errors { code } } }')["createCustomer"]
    assert data["errors"]
    assert _changes_made() == []
    assert db.session.scalar(select(OutboxEvent.id)) is None


def test_a_plugin_mutation_records_its_event(make_app: AppFactory) -> None:
    app = make_app(enabled=["complaints"])
    with app.app_context():
        client, key = _key(app, ("admin",), service="helpdesk")
        customer = global_id("Customer", create_customer({"name": "C"}).id)
        data = client('mutation($c: ID!) { fileComplaint(input: {customerId: $c, '
                      'type: "price", channel: "email", severity: LOW, subject: "Late"}) '
                      '{ complaint { id } errors { field code } } }', {"c": customer})
        assert data["fileComplaint"]["errors"] == [], data
        complaint = data["fileComplaint"]["complaint"]["id"]
        entry = db.session.scalars(select(AuditEntry).where(
            AuditEntry.operation == "fileComplaint")).one()
        assert complaint in entry.object_ids and entry.actor["service"] == "helpdesk"
        types = db.session.scalars(select(OutboxEvent.type).order_by(OutboxEvent.id)).all()
        assert "complaint.filed" in types


# --- auditEntries ------------------------------------------------------------------------------

ENTRIES = """query($filter: AuditEntryFilterInput, $first: Int, $after: String) {
  auditEntries(first: $first, after: $after, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id operation objectIds actor changes requestId occurredAt } } } }"""


def test_audit_entries_need_audit_read_and_filter(app: Flask) -> None:
    sam = create_agent({"name": "Sam", "email": "sam@shop.io", "role": "admin"})
    service, _ = _key(app, ("admin",), service="shop")
    agent, _ = _key(app, ("admin",), agent_email="sam@shop.io")
    first = service(CREATE)["createCustomer"]["customer"]["id"]
    agent(CREATE)
    service("mutation($id: ID!) { updateCustomer(input: {id: $id, name: \"Y\"}) "
            "{ errors { code } } }", {"id": first})

    no_scope, _ = _key(app, ("customers:read",), service="reader")
    response = no_scope.raw("{ auditEntries { totalCount } }")
    assert response.status_code == 403

    def operations(spec: dict[str, Any]) -> list[str]:
        found = service(ENTRIES, {"filter": spec})["auditEntries"]
        return [e["node"]["operation"] for e in found["edges"]
                if e["node"]["actor"]["service"] != "system"
                and e["node"]["operation"] != "apikey.create"]

    assert operations({}) == ["updateCustomer", "createCustomer", "createCustomer"]
    assert operations({"objectId": first}) == ["updateCustomer", "createCustomer"]
    assert operations({"actorAgentId": global_id("Agent", sam.id)}) == ["createCustomer"]
    assert operations({"actorService": "shop", "operation": "updateCustomer"}) == [
        "updateCustomer"]
    assert operations({"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"}) == []
    by_shop = {"actorService": "shop"}
    page = service(ENTRIES, {"first": 1, "filter": by_shop})["auditEntries"]
    rest = service(ENTRIES, {"first": 1, "after": page["pageInfo"]["endCursor"],
                             "filter": by_shop})["auditEntries"]
    assert page["totalCount"] == 2 and page["pageInfo"]["hasNextPage"]
    assert [e["node"]["operation"] for e in rest["edges"]] == ["createCustomer"]
    assert not rest["pageInfo"]["hasNextPage"]
    bad = service.raw(ENTRIES, {"filter": {"objectId": "nope"}})
    assert bad.get_json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    # Values are customer data: an audit reader without customers:read sees field names only.
    updates = {"filter": {"operation": "updateCustomer"}}
    update = service(ENTRIES, updates)["auditEntries"]["edges"][0]["node"]
    assert update["changes"] == {"name": ["X", "Y"]}
    auditor, _ = _key(app, ("audit:read",), service="auditor")
    hidden = auditor(ENTRIES, updates)["auditEntries"]["edges"][0]["node"]
    assert hidden["changes"] == {"name": [None, None]}


def test_audit_entries_list_runs_a_fixed_number_of_statements(app: Flask) -> None:
    client, _ = _key(app, ("admin",), service="shop")

    def statements_for_page() -> int:
        client(ENTRIES, {"first": 50})  # warm: key look-up, last-used stamp
        with count_statements(app) as statements:
            assert client(ENTRIES, {"first": 50})["auditEntries"]["edges"]
        return len(statements)

    for _ in range(3):
        client(CREATE)
    few = statements_for_page()
    for _ in range(20):
        client(CREATE)
    assert statements_for_page() == few <= 4
