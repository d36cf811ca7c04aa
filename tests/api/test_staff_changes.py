"""Staff changes and the hand-over of customers: updateAgent (validation, audit, the
agent.updated event, deactivation refusing the agent's keys at once, the last admin kept)
and reassignCustomers (by owner, by list, by team; refusals writing nothing; erased
customers untouched; one audit entry and one event per batch; statements bounded), with
``rapport customers reassign``."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, select, update

from core import hookimpl
from core.auth import create_api_key
from core.cli import cli
from core.db import db
from core.errors import UserError
from core.ids import global_id
from core.models import Agent, AgentRole, AuditEntry, Customer, OutboxEvent
from core.services import customers, staff
from tests.conftest import GraphQL, count_statements, wait_for_a_lock_wait

UPDATE = """mutation($input: UpdateAgentInput!) { updateAgent(input: $input) {
  agent { id name team role active } errors { field code message } } }"""
REASSIGN = """mutation($input: ReassignCustomersInput!) { reassignCustomers(input: $input) {
  moved assignments { owner { id name } count } errors { field code message } } }"""
WHO = "{ agents(first: 1) { totalCount } }"


def _agent(name: str, **fields: Any) -> Any:
    return staff.create_agent({"name": name, "email": f"{name.lower()}@shop.io", **fields})


def _gid(row: Any, kind: str = "Agent") -> str:
    return global_id(kind, row.id)


def _owners() -> dict[int, int | None]:
    db.session.expire_all()
    return dict(db.session.execute(select(Customer.id, Customer.owner_id)).tuples().all())


def _written() -> tuple[int, int]:
    """Audit entries and outbox events (after the tests' own set-up)."""
    return (db.session.scalar(select(func.count()).select_from(AuditEntry)) or 0,
            db.session.scalar(select(func.count()).select_from(OutboxEvent)) or 0)


def _events(kind: str) -> list[dict[str, Any]]:
    return [e.data for e in db.session.scalars(select(OutboxEvent).where(
        OutboxEvent.type == kind).order_by(OutboxEvent.id))]


# --- updateAgent ------------------------------------------------------------------------------


def test_deactivating_an_agent_refuses_its_key_on_the_next_request(app: Flask,
                                                                   gql: GraphQL) -> None:
    sam = _agent("Sam", role="account_manager")
    _, secret = create_api_key("sam", ["agents:read"], agent_email="sam@shop.io")
    sams = GraphQL(app, secret)
    assert sams(WHO)["agents"]["totalCount"] == 1  # the key is cached now
    data = gql(UPDATE, {"input": {"id": _gid(sam), "active": False}})["updateAgent"]
    assert data["errors"] == [] and data["agent"]["active"] is False
    response = sams.raw(WHO)
    assert response.status_code == 401, response.get_json()
    assert "deactivated" in response.get_json()["errors"][0]["message"]
    # Reactivated: the key works again, at once too.
    gql(UPDATE, {"input": {"id": _gid(sam), "active": True}})
    assert sams(WHO)["agents"]["totalCount"] == 1


def test_a_role_change_takes_effect_on_the_agents_key_at_once(app: Flask, gql: GraphQL) -> None:
    rae = _agent("Rae", role="team_leader")
    _, secret = create_api_key("rae", ["admin"], agent_email="rae@shop.io")
    raes = GraphQL(app, secret)
    assert raes(WHO)["agents"]["totalCount"] == 1
    gql(UPDATE, {"input": {"id": _gid(rae), "role": "TECHNICAL_SUPPORT"}})
    create = 'mutation { createCustomer(input: {name: "X"}) { errors { code } } }'
    assert raes.raw(create).status_code == 403  # technical support cannot write customers


def test_update_agent_is_audited_and_evented_without_the_email(app: Flask, gql: GraphQL) -> None:
    ada = _agent("Ada", team="North")
    data = gql(UPDATE, {"input": {"id": _gid(ada), "name": "Ada L.", "team": "South",
                                  "role": "TEAM_LEADER"}})["updateAgent"]
    assert data == {"agent": {"id": _gid(ada), "name": "Ada L.", "team": "South",
                              "role": "TEAM_LEADER", "active": True}, "errors": []}
    entry = db.session.scalars(select(AuditEntry).where(
        AuditEntry.operation == "updateAgent")).one()
    assert entry.object_ids == [_gid(ada)]
    assert entry.changes == {"name": ["Ada", "Ada L."], "team": ["North", "South"],
                             "role": ["service_representative", "team_leader"]}
    assert _events("agent.updated") == [{"agentId": _gid(ada),
                                         "changedFields": ["name", "role", "team"]}]
    gql(UPDATE, {"input": {"id": _gid(ada), "active": False}})
    assert _events("agent.updated")[-1] == {"agentId": _gid(ada), "changedFields": ["active"],
                                            "active": False}
    assert "ada@shop.io" not in str(_events("agent.updated"))
    # Nothing changed: no event.
    gql(UPDATE, {"input": {"id": _gid(ada), "team": "South"}})
    assert len(_events("agent.updated")) == 2


@pytest.mark.parametrize("fields, field, code", [
    ({"name": ""}, "input.name", "INVALID"),
    ({"name": "  "}, "input.name", "INVALID"),
    ({"team": " \t"}, "input.team", "INVALID"),
    ({"team": "x" * 121}, "input.team", "INVALID"),
    ({"id": global_id("Agent", 999)}, "input.id", "NOT_FOUND"),
    ({"id": global_id("Customer", 1)}, "input.id", "INVALID"),
])
def test_update_agent_refuses_bad_input(app: Flask, gql: GraphQL, fields: dict[str, Any],
                                        field: str, code: str) -> None:
    ada = _agent("Ada")
    before = _written()
    data = gql(UPDATE, {"input": {"id": _gid(ada), **fields}})["updateAgent"]
    assert data["agent"] is None
    assert [(e["field"], e["code"]) for e in data["errors"]] == [(field, code)]
    assert _written() == before
    db.session.expire_all()
    assert (ada.name, ada.team) == ("Ada", None)


def test_the_last_active_admin_can_be_neither_deactivated_nor_demoted(app: Flask,
                                                                     gql: GraphQL) -> None:
    boss = _agent("Boss", role="admin")
    for change in ({"active": False}, {"role": "TEAM_LEADER"}):
        data = gql(UPDATE, {"input": {"id": _gid(boss), **change}})["updateAgent"]
        field = "input." + next(iter(change))
        assert [(e["field"], e["code"]) for e in data["errors"]] == [(field, "NOT_ALLOWED")]
    db.session.expire_all()
    assert boss.active and boss.role.value == "admin"
    # With another active admin it may.
    _agent("Second", role="admin")
    _, secret = create_api_key("boss", ["admin"], agent_email="boss@shop.io")
    data = gql(UPDATE, {"input": {"id": _gid(boss), "active": False}})["updateAgent"]
    assert data["errors"] == [] and data["agent"]["active"] is False
    assert GraphQL(app, secret).raw(WHO).status_code == 401


def test_an_agent_changes_neither_its_own_role_nor_its_own_activity(app: Flask) -> None:
    boss, _ = _agent("Boss", role="admin"), _agent("Second", role="admin")
    _, secret = create_api_key("boss", ["admin"], agent_email="boss@shop.io")
    boss_key = GraphQL(app, secret)
    before = _written()
    for change in ({"active": False}, {"role": "TEAM_LEADER"}):
        data = boss_key(UPDATE, {"input": {"id": _gid(boss), **change}})["updateAgent"]
        field = "input." + next(iter(change))
        assert [(e["field"], e["code"]) for e in data["errors"]] == [(field, "NOT_ALLOWED")]
    assert _written() == before
    data = boss_key(UPDATE, {"input": {"id": _gid(boss), "name": "The Boss"}})["updateAgent"]
    assert data["errors"] == [] and data["agent"]["name"] == "The Boss"


CREATE_AGENT = """mutation($input: CreateAgentInput!) { createAgent(input: $input) {
  agent { id role } errors { field code } } }"""


def test_a_team_leader_can_neither_make_nor_touch_an_admin(app: Flask, gql: GraphQL) -> None:
    tom = _agent("Tom", role="team_leader")
    boss, rep = _agent("Boss", role="admin"), _agent("Rep")
    # An "admin" key of a team leader holds the team leader's scopes (agents:write).
    _, secret = create_api_key("t", ["admin"], agent_email="tom@shop.io")
    toms = GraphQL(app, secret)
    before = _written()
    refused = [
        (tom, {"role": "ADMIN"}, "input.role"),
        (tom, {"role": "ACCOUNT_MANAGER"}, "input.role"),  # its own role
        (tom, {"active": False}, "input.active"),
        (rep, {"role": "ADMIN"}, "input.role"),
        (boss, {"role": "TEAM_LEADER"}, "input.role"),
        (boss, {"active": False}, "input.active"),
        (boss, {"name": "Not the boss"}, "input.id"),
    ]
    for agent, change, field in refused:
        data = toms(UPDATE, {"input": {"id": _gid(agent), **change}})["updateAgent"]
        assert data["agent"] is None, (agent.name, change)
        assert [(e["field"], e["code"]) for e in data["errors"]] == [(field, "NOT_ALLOWED")]
    data = toms(CREATE_AGENT, {"input": {"name": "Eve", "email": "eve@shop.io",
                                         "role": "ADMIN"}})["createAgent"]
    assert data == {"agent": None, "errors": [{"field": "input.role", "code": "NOT_ALLOWED"}]}
    assert _written() == before
    db.session.expire_all()
    assert [(a.role.value, a.active, a.name) for a in (tom, boss, rep)] == [
        ("team_leader", True, "Tom"), ("admin", True, "Boss"),
        ("service_representative", True, "Rep")]
    assert db.session.scalar(select(Agent).where(Agent.email == "eve@shop.io")) is None
    # Other staff changes stay the team leader's to make; an admin key makes the rest.
    data = toms(UPDATE, {"input": {"id": _gid(rep), "role": "ACCOUNT_MANAGER",
                                   "team": "North"}})["updateAgent"]
    assert data["errors"] == [] and data["agent"]["role"] == "ACCOUNT_MANAGER"
    data = gql(UPDATE, {"input": {"id": _gid(tom), "role": "ADMIN"}})["updateAgent"]
    assert data["errors"] == [] and data["agent"]["role"] == "ADMIN"
    data = gql(CREATE_AGENT, {"input": {"name": "Eve", "email": "eve@shop.io",
                                        "role": "ADMIN"}})["createAgent"]
    assert data["errors"] == [] and data["agent"]["role"] == "ADMIN"


@pytest.mark.parametrize("name, team", [("  ", None), ("Eve", "  ")])
def test_create_agent_refuses_a_blank_name_or_team(app: Flask, gql: GraphQL, name: str,
                                                   team: str | None) -> None:
    data = gql(CREATE_AGENT, {"input": {"name": name, "email": "eve@shop.io",
                                        "team": team}})["createAgent"]
    field = "input.name" if team is None else "input.team"
    assert data == {"agent": None, "errors": [{"field": field, "code": "INVALID"}]}


# --- reassignCustomers ------------------------------------------------------------------------


def _team(gql: GraphQL) -> tuple[Any, Any, Any, Any]:
    """A departing owner (in team North) and three colleagues: two active in North (one
    holding a customer already), one deactivated."""
    old = _agent("Old", team="North")
    ann = _agent("Ann", team="North")
    bob = _agent("Bob", team="North")
    gone = _agent("Gone", team="North")
    staff.update_agent(gone.id, {"active": False})
    customers.create_customer({"name": "Held", "owner_id": bob.id})
    return old, ann, bob, gone


def _customers_of(owner: Any, count: int, **fields: Any) -> list[int]:
    return [customers.create_customer({"name": f"C{i}", "owner_id": owner.id, **fields}).id
            for i in range(count)]


def test_reassign_an_owners_customers_to_an_agent(app: Flask, gql: GraphQL) -> None:
    old, ann, bob, _ = _team(gql)
    moved = _customers_of(old, 3)
    churned = customers.create_customer({"name": "Churned", "owner_id": old.id}).id
    customers.set_customer_status(churned, customers.CustomerStatus.CHURNED)
    erased = customers.create_customer({"name": "Erased", "owner_id": old.id}).id
    customers.erase_customer(erased)
    # Erasure clears the owner; a tombstone that still names one (an erasure made before
    # that rule, a direct write) is never moved all the same.
    db.session.execute(update(Customer).where(Customer.id == erased).values(owner_id=old.id))
    db.session.commit()
    data = gql(REASSIGN, {"input": {"fromOwnerId": _gid(old), "toOwnerId": _gid(ann),
                                    "onlyActive": True}})["reassignCustomers"]
    assert data == {"moved": 3, "assignments": [
        {"owner": {"id": _gid(ann), "name": "Ann"}, "count": 3}], "errors": []}
    owners = _owners()
    assert [owners[c] for c in moved] == [ann.id] * 3
    assert owners[churned] == old.id and owners[erased] == old.id
    # Without onlyActive the churned customer follows; the erased one never does.
    data = gql(REASSIGN, {"input": {"fromOwnerId": _gid(old),
                                    "toOwnerId": _gid(bob)}})["reassignCustomers"]
    assert data["moved"] == 1 and _owners()[churned] == bob.id and _owners()[erased] == old.id
    data = gql(REASSIGN, {"input": {"customerIds": [global_id("Customer", erased)],
                                    "toOwnerId": _gid(ann)}})["reassignCustomers"]
    assert data["moved"] == 0 and _owners()[erased] == old.id


def test_reassign_a_list_and_the_intersection_with_an_owner(app: Flask, gql: GraphQL) -> None:
    old, ann, bob, _ = _team(gql)
    mine = _customers_of(old, 3)
    theirs = _customers_of(bob, 2)
    picked = [mine[0], theirs[0]]
    ids = [global_id("Customer", c) for c in picked]
    data = gql(REASSIGN, {"input": {"fromOwnerId": _gid(old), "customerIds": ids,
                                    "toOwnerId": _gid(ann)}})["reassignCustomers"]
    assert data["moved"] == 1
    owners = _owners()
    assert owners[mine[0]] == ann.id and owners[theirs[0]] == bob.id
    assert owners[mine[1]] == old.id
    data = gql(REASSIGN, {"input": {"customerIds": ids + [global_id("Customer", mine[1])],
                                    "toOwnerId": _gid(ann)}})["reassignCustomers"]
    assert data["moved"] == 2  # mine[0] is Ann's already
    owners = _owners()
    assert owners[theirs[0]] == ann.id and owners[mine[1]] == ann.id


def test_reassign_to_a_team_spreads_evenly_and_deterministically(app: Flask,
                                                                  gql: GraphQL) -> None:
    old, ann, bob, gone = _team(gql)
    cara = _agent("Cara", team="North")
    _agent("Dan", team="South")
    moved = _customers_of(old, 7)
    data = gql(REASSIGN, {"input": {"fromOwnerId": _gid(old),
                                    "toTeam": "North"}})["reassignCustomers"]
    # Bob holds one already: Ann and Cara take the first two, then in turn by fewest.
    assert data["moved"] == 7 and data["errors"] == []
    assert [(a["owner"]["name"], a["count"]) for a in data["assignments"]] == [
        ("Ann", 3), ("Bob", 2), ("Cara", 2)]
    owners = _owners()
    assert [owners[c] for c in moved] == [ann.id, cara.id, ann.id, bob.id, cara.id, ann.id,
                                          bob.id]
    assert gone.id not in owners.values() and old.id not in owners.values()


@pytest.mark.parametrize("case, field, code", [
    ("unknown destination", "input.toOwnerId", "NOT_FOUND"),
    ("inactive destination", "input.toOwnerId", "NOT_ALLOWED"),
    ("team without active agent", "input.toTeam", "NOT_FOUND"),
    ("no source", "input.fromOwnerId", "REQUIRED"),
    ("same owner", "input.toOwnerId", "INVALID"),
    ("two destinations", "input.toOwnerId", "INVALID"),
    ("unknown source", "input.fromOwnerId", "NOT_FOUND"),
    ("bad id", "input.customerIds.1", "INVALID"),
])
def test_reassign_refusals_write_nothing(app: Flask, gql: GraphQL, case: str, field: str,
                                         code: str) -> None:
    old, ann, _, gone = _team(gql)
    mine = _customers_of(old, 2)
    base = {"fromOwnerId": _gid(old)}
    inputs = {
        "unknown destination": {**base, "toOwnerId": global_id("Agent", 999)},
        "inactive destination": {**base, "toOwnerId": _gid(gone)},
        "team without active agent": {**base, "toTeam": "South"},
        "no source": {"toOwnerId": _gid(ann)},
        "same owner": {**base, "toOwnerId": _gid(old)},
        "two destinations": {**base, "toOwnerId": _gid(ann), "toTeam": "North"},
        "unknown source": {"fromOwnerId": global_id("Agent", 999), "toOwnerId": _gid(ann)},
        "bad id": {"customerIds": [global_id("Customer", 1), "nope"],
                   "toOwnerId": _gid(ann)},
    }
    before, owners = _written(), _owners()
    data = gql(REASSIGN, {"input": inputs[case]})["reassignCustomers"]
    assert [(e["field"], e["code"]) for e in data["errors"]] == [(field, code)], data
    assert data["moved"] == 0 and data["assignments"] == []
    assert _written() == before and _owners() == owners
    assert all(owners[c] == old.id for c in mine)


def test_more_than_a_thousand_ids_are_refused(app: Flask) -> None:
    ann = _agent("Ann")
    with pytest.raises(UserError) as refused:
        staff.reassign_customers({"customer_ids": list(range(1, 1002)), "to_owner_id": ann.id})
    assert [(e.field, e.code) for e in refused.value.errors] == [("customerIds", "TOO_MANY")]


def test_a_team_whose_only_agent_is_the_departing_owner_is_refused(app: Flask,
                                                                   gql: GraphQL) -> None:
    solo = _agent("Solo", team="East")
    _customers_of(solo, 1)
    data = gql(REASSIGN, {"input": {"fromOwnerId": _gid(solo),
                                    "toTeam": "East"}})["reassignCustomers"]
    assert [(e["field"], e["code"]) for e in data["errors"]] == [("input.toTeam", "NOT_FOUND")]


OWNER = """mutation($input: UpdateCustomerInput!) { updateCustomer(input: $input) {
  customer { id name } errors { field code } } }"""


@pytest.mark.parametrize("scopes", [["customers:read", "agents:read"],
                                    ["customers:read", "customers:write", "agents:read"]])
def test_a_hand_over_needs_the_reassign_scope(app: Flask, scopes: list[str]) -> None:
    """A new owner takes the customer's open tasks and follow-ups (another domain), so
    both mutations need ``customers:reassign``; ``customers:write`` alone still edits the
    rest of a customer."""
    old, ann = _agent("Old"), _agent("Ann")
    (customer_id,) = _customers_of(old, 1)
    client = GraphQL(app, create_api_key("narrow", scopes)[1])
    # The scope each refusal names: reassignCustomers' own; updateCustomer's write scope
    # first, then (with it) the hand-over's.
    owner_scope = "customers:reassign" if "customers:write" in scopes else "customers:write"
    for document, variables, missing in (
            (REASSIGN, {"fromOwnerId": _gid(old), "toOwnerId": _gid(ann)},
             "customers:reassign"),
            (OWNER, {"id": global_id("Customer", customer_id), "ownerId": _gid(ann)},
             owner_scope)):
        response = client.raw(document, {"input": variables})
        errors = response.get_json()["errors"]
        assert errors[0]["extensions"]["code"] == "FORBIDDEN", errors
        assert f"the {missing} scope" in errors[0]["message"], errors
    assert set(_owners().values()) == {old.id}
    if "customers:write" in scopes:
        renamed = client(OWNER, {"input": {"id": global_id("Customer", customer_id),
                                           "name": "Renamed"}})["updateCustomer"]
        assert renamed["errors"] == [] and renamed["customer"]["name"] == "Renamed"
    allowed = GraphQL(app, create_api_key("hand-over", [*scopes, "customers:reassign"])[1])
    if "customers:write" in scopes:
        moved = allowed(OWNER, {"input": {"id": global_id("Customer", customer_id),
                                          "ownerId": _gid(ann)}})["updateCustomer"]
        assert moved["errors"] == []
    else:
        moved = allowed(REASSIGN, {"input": {"fromOwnerId": _gid(old),
                                             "toOwnerId": _gid(ann)}})["reassignCustomers"]
        assert moved["errors"] == [] and moved["moved"] == 1
    assert _owners()[customer_id] == ann.id


def test_a_team_leader_may_hand_customers_over_and_an_account_manager_may_not() -> None:
    from core.builtin import CORE_SCOPES
    from core.roles import role_scopes

    known = [name for name, _ in CORE_SCOPES]
    allowed = {role for role in AgentRole if "customers:reassign" in role_scopes(role, known)}
    assert allowed == {AgentRole.ADMIN, AgentRole.TEAM_LEADER}


def _bulk(owner: Any, count: int, prefix: str) -> list[int]:
    result = customers.import_customers([{"external_id": f"{prefix}{i}", "name": f"N{i}",
                                          "owner_id": owner.id} for i in range(count)])
    return sorted(result.recorded_ids.values())


def test_batches_are_audited_and_evented_and_statements_bounded(
        app: Flask, gql: GraphQL, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staff, "REASSIGN_BATCH", 150)
    small, large = _agent("Small", team="A"), _agent("Large", team="A")
    ann, bob, cara = (_agent(n, team="B") for n in ("Ann", "Bob", "Cara"))
    _bulk(small, 20, "s")
    ids = _bulk(large, 200, "l")
    gql(WHO)  # the key is read (and its last use written) before counting
    counts = []
    for owner in (small, large):
        with count_statements(app) as statements:
            data = gql(REASSIGN, {"input": {"fromOwnerId": _gid(owner), "toTeam": "B"}})
        assert data["reassignCustomers"]["errors"] == []
        counts.append(len(statements))
    # 200 customers in two batches of 150 cost one batch more than 20 customers in one.
    per_batch = counts[1] - counts[0]
    assert per_batch <= 6, counts
    assert counts[0] <= 20, counts
    assert sum(a["count"] for a in data["reassignCustomers"]["assignments"]) == 200
    events = _events("customers.reassigned")
    assert [e["moved"] for e in events] == [20, 150, 50]
    first, second = events[1], events[2]
    assert first["fromOwnerId"] == _gid(large)
    assert (first["firstId"], first["lastId"]) == (global_id("Customer", ids[0]),
                                                   global_id("Customer", ids[149]))
    assert second["lastId"] == global_id("Customer", ids[-1])
    assert sum(a["count"] for a in first["assignments"]) == 150
    assert [a["ownerId"] for a in first["assignments"]] == [_gid(ann), _gid(bob), _gid(cara)]
    entries = db.session.scalars(select(AuditEntry).where(
        AuditEntry.operation == "reassignCustomers").order_by(AuditEntry.id)).all()
    assert len(entries) == 3
    assert global_id("Customer", ids[0]) in entries[1].object_ids
    assert _gid(large) in entries[1].object_ids
    before, after = entries[1].changes["ownerId"]
    assert before == {_gid(large): 150} and sum(after.values()) == 150


class Listener:
    """A plugin that records every rapport_customers_reassigned call."""

    def __init__(self) -> None:
        self.__name__ = "listener"
        self.seen: list[tuple[dict[int, int], dict[int, int | None]]] = []

    @hookimpl
    def rapport_customers_reassigned(self, assignments: dict[int, int],
                                     previous: dict[int, int | None]) -> None:
        self.seen.append((dict(assignments), dict(previous)))


def test_update_customer_owner_fires_the_reassigned_hook(make_app: Any) -> None:
    listener = Listener()
    app = make_app(plugins=(listener,))
    with app.app_context():
        ann, bob = _agent("Ann"), _agent("Bob")
        cid = customers.create_customer({"name": "C", "owner_id": ann.id}).id
        customers.update_customer(cid, {"city": "Rome"})
        assert listener.seen == []
        customers.update_customer(cid, {"owner_id": bob.id})
        assert listener.seen == [({cid: bob.id}, {cid: ann.id})]
        customers.update_customer(cid, {"owner_id": None})
        assert len(listener.seen) == 1
        staff.reassign_customers({"customer_ids": [cid], "to_owner_id": ann.id})
        assert listener.seen[-1] == ({cid: ann.id}, {cid: None})


def test_the_cli_reassigns_by_email_global_id_or_number(app: Flask) -> None:
    old, ann = _agent("Old", team="T"), _agent("Ann", team="T")
    _agent("Bob", team="T")  # the team's other member
    _customers_of(old, 3)
    runner = app.test_cli_runner()
    result = runner.invoke(cli, ["customers", "reassign", "--from", "old@shop.io",
                                 "--to", _gid(ann)])
    assert result.exit_code == 0, result.output
    assert "3 customer(s) moved" in result.output and f"3 to Ann ({_gid(ann)})" in result.output
    result = runner.invoke(cli, ["customers", "reassign", "--from", str(ann.id),
                                 "--to-team", "T"])
    assert result.exit_code == 0, result.output
    assert "2 to Old" in result.output and "1 to Bob" in result.output
    entry = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert entry.operation == "cli.customers.reassign" and entry.actor["service"] == "cli"
    refused = runner.invoke(cli, ["customers", "reassign", "--from", "old@shop.io",
                                  "--to", "nobody@shop.io"])
    assert refused.exit_code != 0 and "no agent with e-mail" in refused.output
    usage = runner.invoke(cli, ["customers", "reassign", "--from", "old@shop.io"])
    assert usage.exit_code == 2 and "exactly one of" in usage.output
    gone = runner.invoke(cli, ["customers", "reassign", "--from", "ann@shop.io",
                               "--to-team", "Nowhere"])
    assert gone.exit_code == 1 and "toTeam" in gone.output


def test_two_admins_deactivated_at_once_leave_one(app: Flask, dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("SQLite serialises writers: no race to lose")
    first_admin, second_admin = _agent("First", role="admin"), _agent("Second", role="admin")
    db.session.commit()
    # The first change: the admins locked as update_agent locks them, the first admin
    # deactivated, not yet committed.
    engine = create_engine(db.engine.url)
    first = engine.connect()
    first_tx = first.begin()
    first.execute(select(Agent.id).where(Agent.role == AgentRole.ADMIN,
                                         Agent.active.is_(True)).order_by(Agent.id)
                  .with_for_update())
    first.execute(update(Agent).where(Agent.id == first_admin.id).values(active=False))
    outcome: dict[str, object] = {}

    def second() -> None:
        with app.app_context():
            try:
                staff.update_agent(second_admin.id, {"active": False})
                outcome["result"] = "deactivated"
            except UserError as exc:
                outcome["result"] = [(e.field, e.code) for e in exc.errors]
            except Exception as exc:  # noqa: BLE001 - the defect this test guards against
                outcome["result"] = repr(exc)

    worker = threading.Thread(target=second)
    worker.start()
    assert wait_for_a_lock_wait(engine, tries=200)
    first_tx.commit()
    first.close()
    worker.join(timeout=30)
    engine.dispose()
    assert outcome["result"] == [("active", "NOT_ALLOWED")]
    db.session.expire_all()
    assert (first_admin.active, second_admin.active) == (False, True)


# --- Owners must be active ---------------------------------------------------------------------


def test_a_deactivated_agent_cannot_become_an_owner(app: Flask) -> None:
    ann, gone = _agent("Ann"), _agent("Gone")
    kept = customers.create_customer({"name": "Kept", "owner_id": gone.id}).id
    other = customers.create_customer({"name": "Other", "owner_id": ann.id}).id
    staff.update_agent(gone.id, {"active": False})
    before, owners = _written(), _owners()
    refusals = [lambda: customers.create_customer({"name": "New", "owner_id": gone.id}),
                lambda: customers.update_customer(other, {"owner_id": gone.id})]
    for refused in refusals:
        with pytest.raises(UserError) as caught:
            refused()
        assert [(e.field, e.code) for e in caught.value.errors] == [
            ("ownerId", "NOT_ALLOWED")]
        assert caught.value.errors[0].message == customers.INACTIVE_OWNER
    assert _written() == before and _owners() == owners
    # A customer still held by the departed agent may change otherwise (owner re-sent).
    customers.update_customer(kept, {"city": "Rome", "owner_id": gone.id})
    # The bulk import refuses that row alone.
    result = customers.import_customers([
        {"name": "I1", "external_id": "i1", "source": "crm", "owner_id": gone.id},
        {"name": "I2", "external_id": "i2", "source": "crm", "owner_id": ann.id}])
    assert [(e.field, e.code, e.message) for e in result.errors] == [
        ("0.ownerId", "NOT_ALLOWED", customers.INACTIVE_OWNER)]
    assert len(result.recorded_ids) == 1


def _hold_a_lock(*statements: Any) -> tuple[Any, Any, Any]:
    """A second connection that ran ``statements`` in a transaction left open."""
    engine = create_engine(db.engine.url)
    other = engine.connect()
    tx = other.begin()
    for statement in statements:
        other.execute(statement)
    return engine, other, tx


def _run(app: Flask, outcome: dict[str, Any], work: Any) -> threading.Thread:
    def target() -> None:
        with app.app_context():
            try:
                outcome["result"] = work()
            except UserError as exc:
                outcome["result"] = [(e.field, e.code) for e in exc.errors]
            except Exception as exc:  # noqa: BLE001 - the defect these tests guard against
                outcome["result"] = repr(exc)

    worker = threading.Thread(target=target)
    worker.start()
    return worker


def test_update_customer_owner_waits_for_a_running_hand_over(app: Flask,
                                                             dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("SQLite serialises writers: no race to lose")
    x, y, z = _agent("X"), _agent("Y"), _agent("Z")
    cid = customers.create_customer({"name": "C", "owner_id": x.id}).id
    db.session.commit()
    # A hand-over X -> Y in progress: the customer row locked and moved, not committed.
    engine, other, tx = _hold_a_lock(
        select(Customer.id).where(Customer.id == cid).with_for_update(),
        update(Customer).where(Customer.id == cid).values(owner_id=y.id))
    outcome: dict[str, Any] = {}
    worker = _run(app, outcome, lambda: customers.update_customer(
        cid, {"owner_id": z.id}).owner_id)
    assert wait_for_a_lock_wait(engine, tries=200)
    tx.commit()
    other.close()
    worker.join(timeout=30)
    engine.dispose()
    assert outcome["result"] == z.id
    entry = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert entry.changes["ownerId"] == [_gid(y), _gid(z)]  # not X -> Z


def test_a_hand_over_never_reaches_an_agent_deactivated_meanwhile(app: Flask,
                                                                  dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("SQLite serialises writers: no race to lose")
    old, ann = _agent("Old"), _agent("Ann")
    mine = _customers_of(old, 2)
    db.session.commit()
    # Ann's deactivation in progress, as update_agent does it: row locked, not committed.
    engine, other, tx = _hold_a_lock(
        select(Agent.id).where(Agent.id == ann.id).with_for_update(),
        update(Agent).where(Agent.id == ann.id).values(active=False))
    outcome: dict[str, Any] = {}
    worker = _run(app, outcome, lambda: staff.reassign_customers(
        {"from_owner_id": old.id, "to_owner_id": ann.id}).moved)
    assert wait_for_a_lock_wait(engine, tries=200)
    tx.commit()
    other.close()
    worker.join(timeout=30)
    engine.dispose()
    assert outcome["result"] == [("toOwnerId", "NOT_ALLOWED")]
    assert all(_owners()[c] == old.id for c in mine)
