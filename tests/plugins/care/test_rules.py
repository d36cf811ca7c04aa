"""Rules: saving checks the trigger, conditions, actions and the key's scopes; relayed
events run matching rules once (idempotent on redelivery), each action in its own
transaction acting as the rule's key (via rule); a failing action is recorded without
stopping the others; a rule's own events never trigger it again; another plugin's action
arrives through ``rapport_rule_actions``."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema, fields

from core import hookimpl
from core.changes import record
from core.db import db
from core.errors import UserError
from core.ids import decode_global_id
from core.models import AuditEntry, OutboxEvent
from core.rules import RuleAction, RuleContext
from tests.conftest import AppFactory, GraphQL, admin_token, count_statements
from tests.plugins.care.conftest import agent, customer, gid, relay_and_run_rules

CREATE_RULE = """mutation($input: CreateRuleInput!) { createRule(input: $input) {
  rule { id name eventType enabled conditions { field op value }
         actions { action parameters } }
  errors { field code message } } }"""
RUNS = """query($rule: ID) { ruleRuns(ruleId: $rule) { totalCount edges { node {
  eventType status outcome error rule { id } } } } }"""


def _rule(gql: GraphQL, **fields: Any) -> dict[str, Any]:
    spec = {"name": "Welcome call", "eventType": "customer.created",
            "actions": [{"action": "care.create_task",
                         "parameters": {"kind": "call", "title": "Welcome call"}}], **fields}
    return gql(CREATE_RULE, {"input": spec})["createRule"]  # type: ignore[no-any-return]


class Recorder:
    """A partner plugin contributing ``test.note`` (it records an audit entry) and
    ``test.fail`` (it always fails)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], RuleContext]] = []

    @hookimpl
    def rapport_rule_actions(self) -> list[RuleAction]:
        class NoteParameters(Schema):
            text = fields.String(required=True)

        def note(event: Any, parameters: dict[str, Any], context: RuleContext) -> dict[str, Any]:
            self.calls.append((event["id"], parameters, context))
            record("test.note", [event["data"]["customerId"]])
            return {"noted": parameters["text"]}

        class FailParameters(Schema):
            crash = fields.Boolean(load_default=False)

        def fail(event: Any, parameters: dict[str, Any], context: RuleContext) -> None:
            if parameters["crash"]:  # an unexpected error, quoting what it should not
                raise RuntimeError("duplicate key: email=cleo@example.com")
            raise UserError.single("The partner system is down.")

        return [RuleAction("test.note", "Note it", NoteParameters, "customers", note),
                RuleAction("test.fail", "Fail", FailParameters, "customers", fail)]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def rules_app(make_app: AppFactory, recorder: Recorder) -> Any:
    app = make_app(enabled=["care"], plugins=(recorder,))
    with app.app_context():
        yield app


@pytest.fixture
def rgql(rules_app: Flask) -> GraphQL:
    return GraphQL(rules_app, admin_token(rules_app))


def test_a_rule_creates_a_task_once_acting_as_its_key(rules_app: Flask, rgql: GraphQL) -> None:
    created = _rule(rgql, conditions=[{"field": "status", "op": "EQ", "value": "active"}])
    assert created["errors"] == []
    rule_id = created["rule"]["id"]
    owner = agent()
    client = customer(owner=owner)
    relay_and_run_rules(rules_app)
    from plugins.care.models import Task, TaskSource

    task = Task.query.one()
    assert (task.customer_id, task.assignee_id, task.source) == (client.id, owner.id,
                                                                 TaskSource.RULE)
    assert task.title == "Welcome call"
    entry = AuditEntry.query.filter_by(operation="care.create_task").one()
    assert entry.actor["via"] == "rule" and entry.actor["ruleIds"] == [rule_id]
    assert entry.actor["service"] == "tests"
    runs = rgql(RUNS, {"rule": rule_id})["ruleRuns"]
    assert runs["totalCount"] == 1
    node = runs["edges"][0]["node"]
    assert node["status"] == "SUCCEEDED" and node["outcome"][0]["outcome"] == "succeeded"
    # Redelivery: the relay hands the same events again (a consumer failed after them).
    OutboxEvent.query.update({"delivered_at": None})
    db.session.commit()
    relay_and_run_rules(rules_app)
    assert Task.query.count() == 1
    assert rgql(RUNS, {"rule": rule_id})["ruleRuns"]["totalCount"] == 1


def test_conditions_filter_events(rules_app: Flask, rgql: GraphQL, recorder: Recorder
                                  ) -> None:
    from core.services import interactions

    _rule(rgql, eventType="interaction.recorded", conditions=[
        {"field": "kind", "op": "IN", "value": ["purchase"]},
        {"field": "amount", "op": "GTE", "value": 100}],
        actions=[{"action": "test.note", "parameters": {"text": "big spender"}}])
    client = customer(owner=agent())
    for kind, amount in (("purchase", "150.00"), ("purchase", "99.99"), ("refund", "500")):
        interactions.record_interaction({"customer_id": client.id, "kind": kind,
                                         "amount": amount, "currency": "USD",
                                         "occurred_at": "2026-11-01T10:00:00Z"})
    relay_and_run_rules(rules_app)
    assert [c[1] for c in recorder.calls] == [{"text": "big spender"}]


def test_a_failing_action_does_not_stop_the_others(rules_app: Flask, rgql: GraphQL,
                                                  recorder: Recorder) -> None:
    rule = _rule(rgql, actions=[{"action": "test.fail"},
                                {"action": "test.note", "parameters": {"text": "after"}}])
    assert rule["errors"] == []
    customer(owner=agent())
    relay_and_run_rules(rules_app)
    run = rgql(RUNS, {"rule": rule["rule"]["id"]})["ruleRuns"]["edges"][0]["node"]
    assert run["status"] == "FAILED"
    assert run["error"] == "The partner system is down."
    assert [o["outcome"] for o in run["outcome"]] == ["failed", "succeeded"]
    assert len(recorder.calls) == 1


def test_an_unexpected_error_is_recorded_without_its_message(rules_app: Flask,
                                                             rgql: GraphQL) -> None:
    rule = _rule(rgql, actions=[{"action": "test.fail", "parameters": {"crash": True}}])
    assert rule["errors"] == []
    customer(owner=agent())
    relay_and_run_rules(rules_app)
    run = rgql(RUNS, {"rule": rule["rule"]["id"]})["ruleRuns"]["edges"][0]["node"]
    assert run["status"] == "FAILED"
    assert run["error"] == "Internal error (RuntimeError); see the server log."
    assert "example.com" not in str(run["outcome"])


def test_a_rule_does_not_trigger_itself(rules_app: Flask, rgql: GraphQL) -> None:
    rule = _rule(rgql, eventType="task.created", actions=[{
        "action": "care.create_task", "parameters": {"title": "Again", "assigneeId": None}}])
    owner = agent()
    second = _rule(rgql, name="Chain", eventType="task.created", actions=[{
        "action": "care.create_task",
        "parameters": {"title": "Chained", "assigneeId": gid("Agent", owner)}}])
    from plugins.care import service
    from plugins.care.models import Task

    service.create_task({"assignee_id": owner.id, "kind": "call", "title": "Seed",
                         "due_on": "2027-01-01"})
    for _ in range(4):
        relay_and_run_rules(rules_app)
    titles = sorted(t.title for t in Task.query)
    # Seed -> rule 2 makes "Chained" (rule 1 fails: no customer, no assignee); "Chained"
    # was made by rule 2, so only rule 1 may react to it, which fails again; nothing loops.
    assert titles == ["Chained", "Seed"]
    runs = rgql(RUNS, {"rule": rule["rule"]["id"]})["ruleRuns"]["edges"]
    assert {r["node"]["status"] for r in runs} == {"FAILED"}
    assert len(runs) == 2
    assert rgql(RUNS, {"rule": second["rule"]["id"]})["ruleRuns"]["totalCount"] == 1


def test_the_runs_one_event_causes_are_bounded(rules_app: Flask, rgql: GraphQL,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Four rules on task.created that each create a task react to each other's tasks:
    unbounded, one new customer makes 1 + 4 + 12 + 24 + 24 = 65 runs (ten rules: 5,861)."""
    from plugins.care import rules
    from plugins.care.models import RuleRun, RunStatus, Task

    monkeypatch.setattr(rules, "MAX_RUNS_PER_ROOT", 10)
    assert _rule(rgql)["errors"] == []
    for n in range(4):
        assert _rule(rgql, name=f"Chase {n}", eventType="task.created")["errors"] == []
    customer(owner=agent())
    root = OutboxEvent.query.filter_by(type="customer.created").one().event_id
    for _ in range(8):
        if not relay_and_run_rules(rules_app):
            break
    assert Task.query.count() == 10
    runs = RuleRun.query.all()
    assert {r.root_event_id for r in runs} == {root}
    assert sum(r.status is RunStatus.SUCCEEDED for r in runs) == 10
    stopped = [r for r in runs if r.status is RunStatus.FAILED]
    assert stopped and all("reached 10 runs" in (r.error or "") for r in stopped)
    actors = [e.actor for e in AuditEntry.query.filter_by(operation="care.create_task")]
    assert {a["ruleRoot"] for a in actors} == {root}


def test_saving_checks_the_vocabulary_and_the_keys_scopes(rules_app: Flask,
                                                          rgql: GraphQL) -> None:
    errors = _rule(rgql, eventType="no.such.event")["errors"]
    assert errors[0]["code"] == "UNKNOWN_EVENT_TYPE" and errors[0]["field"] == "input.eventType"
    errors = _rule(rgql, conditions=[{"field": "colour", "op": "EQ", "value": 1},
                                     {"field": "status", "op": "IN", "value": "x"}],
                   actions=[{"action": "care.nothing"},
                            {"action": "care.create_task", "parameters": {"kind": "nap"}}]
                   )["errors"]
    assert {(e["field"], e["code"]) for e in errors} == {
        ("input.conditions.0.field", "UNKNOWN_FIELD"), ("input.conditions.1.value", "INVALID"),
        ("input.actions.0.action", "UNKNOWN_ACTION"),
        ("input.actions.1.parameters.kind", "INVALID"),
        ("input.actions.1.parameters.title", "REQUIRED")}
    narrow = GraphQL(rules_app, admin_token(rules_app, ("rules:write", "rules:read",
                                                        "customers:read")))
    errors = _rule(narrow)["errors"]
    assert errors == [{"field": "input.actions.0.action", "code": "FORBIDDEN",
                       "message": errors[0]["message"]}]
    assert "tasks:write" in errors[0]["message"]


def test_disable_and_delete(rules_app: Flask, rgql: GraphQL) -> None:
    rule_id = _rule(rgql)["rule"]["id"]
    update = """mutation($input: UpdateRuleInput!) { updateRule(input: $input) {
      rule { enabled } errors { code } } }"""
    assert rgql(update, {"input": {"id": rule_id, "enabled": False}})["updateRule"] == {
        "rule": {"enabled": False}, "errors": []}
    customer(owner=agent())
    relay_and_run_rules(rules_app)
    assert rgql(RUNS, {"rule": rule_id})["ruleRuns"]["totalCount"] == 0
    delete = """mutation($input: DeleteRuleInput!) { deleteRule(input: $input) {
      deletedId errors { code } } }"""
    assert rgql(delete, {"input": {"id": rule_id}})["deleteRule"]["deletedId"] == rule_id
    assert rgql("{ rules { totalCount } }")["rules"]["totalCount"] == 0
    again = rgql(delete, {"input": {"id": rule_id}})["deleteRule"]["errors"]
    assert again == [{"code": "NOT_FOUND"}]


def test_the_vocabulary_lists_every_plugins_actions(rules_app: Flask, rgql: GraphQL) -> None:
    data = rgql("{ ruleActions { name domain } ruleTriggers { eventType } }")
    assert {a["name"] for a in data["ruleActions"]} == {
        "care.create_task", "care.open_incident", "test.note", "test.fail"}
    assert {"eventType": "customer.created"} in data["ruleTriggers"]


def test_another_plugins_action_loyalty_adjust_points(make_app: AppFactory) -> None:
    from plugins.loyalty.models import LedgerEntry

    app = make_app(enabled=["care", "loyalty"])
    with app.app_context():
        gql = GraphQL(app, admin_token(app))
        created = _rule(gql, name="Welcome points", actions=[{
            "action": "loyalty.adjust_points",
            "parameters": {"points": 50, "reason": "welcome"}}])
        assert created["errors"] == []
        assert _rule(gql, actions=[{"action": "loyalty.adjust_points",
                                    "parameters": {"points": 0}}])["errors"][0]["field"] == \
            "input.actions.0.parameters.points"
        client = customer()
        relay_and_run_rules(app)
        entry = LedgerEntry.query.one()
        assert (entry.customer_id, entry.points, entry.reason) == (client.id, 50, "welcome")
        assert entry.idempotency_key.startswith("rule:")


def test_a_rule_stops_acting_when_its_key_is_revoked(rules_app: Flask) -> None:
    from core.auth import create_api_key, revoke_api_key
    from plugins.care.models import Task

    key, secret = create_api_key("crm-sync", ("admin",))
    gql = GraphQL(rules_app, secret)
    rule_id = _rule(gql)["rule"]["id"]
    revoke_api_key(key.prefix)
    customer(owner=agent())
    relay_and_run_rules(rules_app)
    assert Task.query.count() == 0
    run = GraphQL(rules_app, admin_token(rules_app))(RUNS, {"rule": rule_id})
    node = run["ruleRuns"]["edges"][0]["node"]
    assert node["status"] == "FAILED" and "no longer holds tasks:write" in node["error"]


def test_a_rule_stops_reacting_when_its_key_may_no_longer_read_the_trigger(
        rules_app: Flask) -> None:
    from core.auth import create_api_key
    from core.models import ApiKey
    from plugins.care.models import Task

    key, secret = create_api_key("narrow", ("rules:read", "rules:write", "customers:read",
                                            "tasks:write"))
    gql = GraphQL(rules_app, secret)
    rule_id = _rule(gql)["rule"]["id"]
    key = db.session.get(ApiKey, key.id)
    key.scopes = ["rules:read", "rules:write", "tasks:write"]  # customers:read taken away
    db.session.commit()
    customer(owner=agent())
    relay_and_run_rules(rules_app)
    assert Task.query.count() == 0
    node = GraphQL(rules_app, admin_token(rules_app))(RUNS, {"rule": rule_id})[
        "ruleRuns"]["edges"][0]["node"]
    assert node["status"] == "FAILED" and "no longer holds customers:read" in node["error"]


@pytest.mark.postgres_only
def test_concurrent_workers_run_each_action_once(rules_app: Flask, rgql: GraphQL,
                                                dialect: str) -> None:
    import threading

    if dialect != "postgresql":
        pytest.skip("SQLite serialises writers: concurrency only means something on PostgreSQL")

    from core import outbox
    from plugins.care import rules
    from plugins.care.models import RuleRun, Task

    _rule(rgql)
    for n in range(5):
        customer(f"C{n}", owner=agent(f"A{n}"))
    outbox.relay_all()  # writes the runs; the job it queues races the workers below
    errors: list[BaseException] = []

    def worker() -> None:
        with rules_app.app_context():
            try:
                rules.run_pending()
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    relay_and_run_rules(rules_app)
    assert errors == []
    assert Task.query.count() == 5
    runs = RuleRun.query.all()
    assert len(runs) == 5 and all(len(r.outcome) == 1 for r in runs)


UPDATE_RULE = """mutation($input: UpdateRuleInput!) { updateRule(input: $input) {
  rule { name enabled actions { action } } errors { field code message } } }"""
DELETE_RULE = """mutation($input: DeleteRuleInput!) { deleteRule(input: $input) {
  deletedId errors { field code } } }"""


def test_changing_a_rule_needs_the_scopes_to_create_it(rules_app: Flask, rgql: GraphQL
                                                       ) -> None:
    from plugins.care.models import Rule

    rule_id = _rule(rgql, enabled=False)["rule"]["id"]
    writer = GraphQL(rules_app, admin_token(rules_app, ("rules:write", "rules:read")))
    for change in ({"enabled": True}, {"name": "Mine now"}, {"enabled": False}):
        errors = writer(UPDATE_RULE, {"input": {"id": rule_id, **change}})["updateRule"][
            "errors"]
        assert [(e["field"], e["code"]) for e in errors] == [("input.id", "FORBIDDEN")]
        assert "customers:read" in errors[0]["message"] and "tasks:write" in errors[0][
            "message"]
    assert writer(DELETE_RULE, {"input": {"id": rule_id}})["deleteRule"]["errors"] == [
        {"field": "input.id", "code": "FORBIDDEN"}]
    rule = db.session.get(Rule, decode_global_id(rule_id, "Rule")[1])
    assert (rule.name, rule.enabled, rule.deleted_at) == ("Welcome call", False, None)

    # A key that could have created it may change it; the rule still acts as its creator.
    able = GraphQL(rules_app, admin_token(rules_app, (
        "rules:write", "rules:read", "customers:read", "tasks:write")))
    assert able(UPDATE_RULE, {"input": {"id": rule_id, "enabled": True}})["updateRule"] == {
        "rule": {"name": "Welcome call", "enabled": True,
                 "actions": [{"action": "care.create_task"}]}, "errors": []}
    db.session.expire_all()
    assert rule.created_by["service"] == "tests" and rule.scopes == ["admin"]

    # New actions must be within the creator's scopes too: it is the creator who acts.
    narrow_id = _rule(able, name="Narrow")["rule"]["id"]
    errors = rgql(UPDATE_RULE, {"input": {"id": narrow_id, "actions": [
        {"action": "test.note", "parameters": {"text": "hi"}}]}})["updateRule"]["errors"]
    assert [(e["field"], e["code"]) for e in errors] == [("input.actions.0.action",
                                                          "FORBIDDEN")]
    assert "created it" in errors[0]["message"]


def test_rule_runs_show_only_triggers_the_key_may_read(rules_app: Flask, rgql: GraphQL
                                                      ) -> None:
    rule_id = _rule(rgql)["rule"]["id"]
    owner = agent()
    for name in ("A", "B", "C"):
        customer(name, owner)
    relay_and_run_rules(rules_app)
    blind = GraphQL(rules_app, admin_token(rules_app, ("rules:read",)))
    reader = GraphQL(rules_app, admin_token(rules_app, ("rules:read", "customers:read")))
    assert blind(RUNS, {"rule": rule_id})["ruleRuns"] == {"totalCount": 0, "edges": []}
    assert blind(RUNS, {})["ruleRuns"]["totalCount"] == 0
    assert reader(RUNS, {"rule": rule_id})["ruleRuns"]["totalCount"] == 3
    page = """query($n: Int) { ruleRuns(first: $n) { edges { node { status rule { name } } } } }"""
    with count_statements(rules_app) as few:
        reader(page, {"n": 1})
    with count_statements(rules_app) as many:
        assert len(reader(page, {"n": 10})["ruleRuns"]["edges"]) == 3
    assert few and len(many) == len(few)


def test_rule_changes_emit_events(rules_app: Flask, rgql: GraphQL) -> None:
    rule_id = _rule(rgql)["rule"]["id"]
    rgql(UPDATE_RULE, {"input": {"id": rule_id, "enabled": True}})  # no change: no event
    rgql(UPDATE_RULE, {"input": {"id": rule_id, "enabled": False, "name": "Renamed"}})
    rgql(DELETE_RULE, {"input": {"id": rule_id}})
    events = [(e.type, e.data) for e in OutboxEvent.query.order_by(OutboxEvent.id)
              if e.type.startswith("rule.")]
    assert events == [("rule.created", {"ruleId": rule_id}),
                      ("rule.updated", {"ruleId": rule_id,
                                        "changedFields": ["enabled", "name"]}),
                      ("rule.deleted", {"ruleId": rule_id})]


def test_rules_show_only_triggers_the_key_may_read(rules_app: Flask, rgql: GraphQL) -> None:
    """As ruleRuns: a key lists (and finds by node id) only the rules of triggers whose
    domain it may read, and reads an action's parameters (and a run's results) only when
    it may read the action's domain."""
    on_customer = _rule(rgql)["rule"]["id"]
    on_task = _rule(rgql, name="Greet", eventType="task.created")["rule"]["id"]
    page = """{ rules(first: 10) { totalCount edges { node { id
      actions { action parameters } } } } }"""
    node = """query($id: ID!) { node(id: $id) { id ... on Rule { name } } }"""
    customers_only = GraphQL(rules_app, admin_token(rules_app, ("rules:read",
                                                                "customers:read")))
    tasks_only = GraphQL(rules_app, admin_token(rules_app, ("rules:read", "tasks:read")))
    both = GraphQL(rules_app, admin_token(rules_app, ("rules:read", "customers:read",
                                                      "tasks:read")))
    listed = customers_only(page)["rules"]
    assert listed["totalCount"] == 1
    assert [e["node"] for e in listed["edges"]] == [{"id": on_customer, "actions": [
        {"action": "care.create_task", "parameters": None}]}]  # no tasks:read
    listed = tasks_only(page)["rules"]
    assert [e["node"]["id"] for e in listed["edges"]] == [on_task]
    assert listed["edges"][0]["node"]["actions"][0]["parameters"] == {
        "kind": "call", "title": "Welcome call"}
    assert [e["node"]["id"] for e in both(page)["rules"]["edges"]] == [on_customer, on_task]
    assert rgql(page)["rules"]["totalCount"] == 2  # admin

    assert customers_only(node, {"id": on_task})["node"] is None  # hidden, as if absent
    assert tasks_only(node, {"id": on_customer})["node"] is None
    assert tasks_only(node, {"id": on_task})["node"] == {"id": on_task, "name": "Greet"}

    customer("A", agent())
    relay_and_run_rules(rules_app)
    runs = """{ ruleRuns { edges { node { eventType outcome } } } }"""
    outcomes = [e["node"]["outcome"] for e in customers_only(runs)["ruleRuns"]["edges"]
                if e["node"]["eventType"] == "customer.created"]
    assert outcomes and all(line["result"] is None for o in outcomes for line in o)
    shown = [e["node"]["outcome"] for e in both(runs)["ruleRuns"]["edges"]
             if e["node"]["eventType"] == "customer.created"]
    assert shown and all(line["result"] is not None for o in shown for line in o)


def test_a_run_hides_its_rule_once_the_rule_is_aimed_at_an_unreadable_trigger(
        rules_app: Flask, rgql: GraphQL) -> None:
    """A run of a trigger the key may read keeps showing; its rule, re-aimed since at an
    event of a domain the key may not read, is null there as rules and node(id) hide it."""
    rule_id = _rule(rgql)["rule"]["id"]
    customer("A", agent())
    relay_and_run_rules(rules_app)
    reader = GraphQL(rules_app, admin_token(rules_app, ("rules:read", "customers:read")))
    runs = """{ ruleRuns { edges { node { eventType rule { name eventType } } } } }"""
    assert [e["node"]["rule"] for e in reader(runs)["ruleRuns"]["edges"]] == [
        {"name": "Welcome call", "eventType": "customer.created"}]
    changed = rgql(UPDATE_RULE, {"input": {"id": rule_id, "name": "Secret",
                                           "eventType": "task.created"}})["updateRule"]
    assert changed["errors"] == []
    assert reader("{ rules { totalCount } }")["rules"]["totalCount"] == 0
    assert [e["node"] for e in reader(runs)["ruleRuns"]["edges"]] == [
        {"eventType": "customer.created", "rule": None}]
