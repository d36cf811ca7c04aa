"""The escalation job: overdue complaints go up a severity, with a timeline entry and an
alert, once per missed target."""

from __future__ import annotations

import datetime as dt

from flask import Flask
from sqlalchemy import select

from core.cli import cli
from core.db import db
from core.ids import global_id
from core.models import Alert
from plugins.complaints import service
from plugins.complaints.models import Complaint, EntryKind, Severity, TimelineEntry
from tests.conftest import AppFactory, GraphQL
from tests.plugins.complaints.conftest import agent, customer, file, move

START = dt.datetime(2026, 11, 2, 8, tzinfo=dt.timezone.utc)


def _at(hours: float) -> dt.datetime:
    return START + dt.timedelta(hours=hours)


def test_overdue_complaints_escalate_once_per_target(complaints_app: Flask) -> None:
    ada = customer()
    medium = file(ada, at=START, severity="medium")          # 8 h / 120 h
    answered = file(ada, at=START, severity="medium")
    move(answered.id, "confirmed", _at(1), cause="other")
    fresh = file(ada, at=_at(9), severity="low")              # 24 h / 240 h
    assert service.escalate_overdue(_at(7)).escalated == []
    run = service.escalate_overdue(_at(9.5))
    assert run.escalated == [medium.id]
    assert service.escalate_overdue(_at(10)).escalated == []   # nothing new
    db.session.expire_all()
    row = db.session.get(Complaint, medium.id)
    assert row is not None and row.severity == Severity.HIGH
    # due times do not move with the severity: they were fixed at filing
    assert row.first_response_due == _at(8) and row.resolution_due == _at(120)
    entry = db.session.scalar(select(TimelineEntry).where(
        TimelineEntry.kind == EntryKind.ESCALATION))
    assert entry is not None and entry.complaint_id == medium.id
    assert entry.step_data["targets"] == ["first_response"]
    assert entry.step_data["severityFrom"] == "medium"
    assert entry.step_data["hoursOverdue"] == 1.5
    alert = db.session.scalar(select(Alert))
    assert alert is not None
    assert (alert.kind, alert.severity, alert.source, alert.customer_id) == (
        "complaint_escalation", "high", "complaints", ada)
    assert alert.evidence["complaintId"] == global_id("Complaint", medium.id)
    assert set(alert.evidence) == {"complaintId", "targets", "due", "hoursOverdue",
                                   "severityFrom", "severityTo", "assigneeFrom", "assigneeTo",
                                   "type"}
    # later the resolution target is missed too: answered and fresh (first response) join
    run = service.escalate_overdue(_at(121))
    assert sorted(run.escalated) == sorted([medium.id, answered.id, fresh.id])
    db.session.expire_all()
    assert db.session.get(Complaint, medium.id).severity == Severity.CRITICAL
    assert db.session.get(Complaint, fresh.id).severity == Severity.MEDIUM
    assert len(db.session.scalars(select(Alert)).all()) == 4


def test_critical_complaints_go_to_the_escalation_agent(make_app: AppFactory) -> None:
    app = make_app(enabled=["complaints"],
                   RAPPORT_COMPLAINTS_ESCALATION_AGENT=global_id("Agent", 1))  # or "1"
    with app.app_context():
        lead = agent("Lead")
        assert lead == 1
        complaint = file(customer(), at=START, severity="critical", assignee_id=agent("Bob"))
        run = service.escalate_overdue(_at(2))
        assert run.escalated == [complaint.id]
        db.session.expire_all()
        row = db.session.get(Complaint, complaint.id)
        assert row is not None and (row.severity, row.assignee_id) == (Severity.CRITICAL, lead)


def test_escalate_command_and_alerts_query(complaints_app: Flask, gql: GraphQL) -> None:
    complaint = file(customer(), at=START, severity="low")
    runner = complaints_app.test_cli_runner()
    result = runner.invoke(cli, ["complaints", "escalate", "--as-of", "2026-11-04T00:00:00+0000"])
    assert result.exit_code == 0, result.output
    assert "escalated 1 complaints, raised 1 alerts" in result.output
    data = gql("""{ alerts(first: 5, kind: "complaint_escalation") { edges { node {
        kind severity status evidence } } } }""")
    node = data["alerts"]["edges"][0]["node"]
    assert (node["kind"], node["severity"], node["status"]) == (
        "complaint_escalation", "medium", "OPEN")
    assert node["evidence"]["complaintId"] == global_id("Complaint", complaint.id)
    sla = runner.invoke(cli, ["complaints", "sla", "--severity", "low",
                              "--first-response-hours", "2", "--resolution-hours", "8",
                              "--wall-clock"])
    assert sla.exit_code == 0, sla.output
    assert "low       first response    2 h, resolution     8 h (wall clock)" in sla.output
    bad = runner.invoke(cli, ["complaints", "sla", "--severity", "low",
                              "--first-response-hours", "9", "--resolution-hours", "8"])
    assert bad.exit_code == 1 and "resolutionHours" in bad.output
