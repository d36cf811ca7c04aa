"""Incidents: opened from a core alert (by hand or by a rule on alert.raised), moved one
stage at a time, closed only with the review; events, audit and typed errors."""

from __future__ import annotations

from flask import Flask

from core.db import db
from core.ids import global_id
from core.models import OutboxEvent
from core.services import transaction
from core.services.staff import raise_alert
from tests.conftest import GraphQL, admin_token
from tests.plugins.care.conftest import agent, gid, relay_and_run_rules

OPEN = """mutation($input: OpenIncidentInput!) { openIncident(input: $input) {
  incident { id title kind severity stage alert { id } owner { id } timeline { stage note } }
  errors { field code message } } }"""
ADVANCE = """mutation($input: AdvanceIncidentInput!) { advanceIncident(input: $input) {
  incident { id stage review closedAt timeline { stage note } } errors { field code } } }"""


def _alert(kind: str = "complaint_spike", severity: str = "high") -> int:
    with transaction():
        alert = raise_alert(kind, severity, "complaints", {"count": 12})
    return alert.id


def test_an_incident_from_an_alert_runs_through_its_stages(care_app: Flask,
                                                           gql: GraphQL) -> None:
    alert_id = _alert()
    lead = agent()
    opened = gql(OPEN, {"input": {"alertId": global_id("Alert", alert_id),
                                  "ownerId": gid("Agent", lead), "note": "12 in an hour"}}
                 )["openIncident"]
    assert opened["errors"] == []
    incident = opened["incident"]
    assert (incident["kind"], incident["severity"], incident["stage"]) == (
        "complaint_spike", "high", "WARNING")
    assert incident["title"] == "Complaint spike alert"
    assert incident["owner"]["id"] == gid("Agent", lead)
    again = gql(OPEN, {"input": {"alertId": incident["alert"]["id"]}})["openIncident"]
    assert again["errors"][0]["code"] == "ALERT_HAS_INCIDENT"
    for stage in ("RESPONSE", "RECOVERY", "REVIEW"):
        moved = gql(ADVANCE, {"input": {"id": incident["id"], "note": stage}})["advanceIncident"]
        assert moved["incident"]["stage"] == stage
    refused = gql(ADVANCE, {"input": {"id": incident["id"]}})["advanceIncident"]
    assert refused["errors"] == [{"field": "input.review", "code": "REVIEW_REQUIRED"}]
    closed = gql(ADVANCE, {"input": {"id": incident["id"], "review": "Add a QA gate."}}
                 )["advanceIncident"]["incident"]
    assert (closed["stage"], closed["review"]) == ("CLOSED", "Add a QA gate.")
    assert [e["stage"] for e in closed["timeline"]] == [
        "WARNING", "RESPONSE", "RECOVERY", "REVIEW", "CLOSED"]
    assert gql(ADVANCE, {"input": {"id": incident["id"]}})["advanceIncident"]["errors"] == [
        {"field": "input.id", "code": "ALREADY_CLOSED"}]
    types = [e.type for e in OutboxEvent.query.order_by(OutboxEvent.id)
             if e.type.startswith("incident.")]
    assert types == ["incident.opened"] + ["incident.advanced"] * 4
    listed = gql("{ incidents(stage: CLOSED) { totalCount } }")["incidents"]
    assert listed["totalCount"] == 1


def test_opening_by_hand_needs_the_facts(care_app: Flask, gql: GraphQL) -> None:
    errors = gql(OPEN, {"input": {"title": "Recall"}})["openIncident"]["errors"]
    assert {(e["field"], e["code"]) for e in errors} == {("input.kind", "REQUIRED"),
                                                         ("input.severity", "REQUIRED")}
    made = gql(OPEN, {"input": {"title": "Recall", "kind": "product_recall",
                                "severity": "critical"}})["openIncident"]
    assert made["errors"] == [] and made["incident"]["alert"] is None
    reader = admin_token(care_app, ("alerts:read",))
    assert gql.raw("{ incidents { totalCount } }", token=reader).status_code == 403


def test_a_rule_opens_incidents_for_serious_alerts(care_app: Flask, gql: GraphQL) -> None:
    rule = gql("""mutation($input: CreateRuleInput!) { createRule(input: $input) {
      rule { id } errors { field code } } }""", {"input": {
        "name": "Crisis", "eventType": "alert.raised",
        "conditions": [{"field": "severity", "op": "IN", "value": ["high", "critical"]}],
        "actions": [{"action": "care.open_incident"}]}})["createRule"]
    assert rule["errors"] == []
    _alert(severity="low")
    serious = _alert("churn_rate_jump", "critical")
    relay_and_run_rules(care_app)
    relay_and_run_rules(care_app)
    from plugins.care.models import Incident, IncidentStage

    incident = db.session.query(Incident).one()
    assert (incident.alert_id, incident.kind, incident.stage) == (
        serious, "churn_rate_jump", IncidentStage.WARNING)
    assert incident.timeline[0]["actor"]["via"] == "rule"


def test_a_forged_cursor_is_bad_input(care_app: Flask, gql: GraphQL) -> None:
    import base64

    for values in (b'["x",1]', b"[1,1]", b'[{"t":"2026-01-01T00:00:00"},1]'):
        cursor = base64.urlsafe_b64encode(values).decode().rstrip("=")
        response = gql.raw("query($after: String) { incidents(after: $after) { totalCount } }",
                           {"after": cursor}).get_json()
        assert response["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", response
