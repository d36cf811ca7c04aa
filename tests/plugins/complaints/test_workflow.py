"""Filing and the workflow state machine: every step, its data, its errors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from core import hookimpl
from core.db import db
from core.errors import UserError
from core.models import Customer, Interaction
from core.services.customers import erase_customer
from plugins.complaints import service, workflow
from plugins.complaints.models import Complaint, ComplaintStatus, EntryKind, TimelineEntry
from tests.conftest import AppFactory
from tests.plugins.complaints.conftest import (
    HAPPY_PATH, NOW, agent, customer, days_ago, file, move, run_through,
)


def _codes(exc: pytest.ExceptionInfo[UserError]) -> list[tuple[str | None, str]]:
    return [(e.field, e.code) for e in exc.value.errors]


def _rows() -> tuple[int, int, int]:
    return (db.session.scalar(select(func.count()).select_from(Complaint)) or 0,
            db.session.scalar(select(func.count()).select_from(TimelineEntry)) or 0,
            db.session.scalar(select(func.count()).select_from(Interaction)) or 0)


def test_happy_path_from_filing_to_closure(complaints_app: Flask) -> None:
    grace = agent()
    start = days_ago(3)
    complaint = file(customer(), at=start, assignee_id=grace, tags=["VIP", "express"])
    assert complaint.status == ComplaintStatus.RECEIVED
    assert complaint.tags == ["vip", "express"]
    assert complaint.first_response_due == start + dt.timedelta(hours=8)
    assert complaint.resolution_due == start + dt.timedelta(hours=120)
    run_through(complaint.id, start, [1, 2, 3, 4, 30, 31])
    db.session.expire_all()
    done = db.session.get(Complaint, complaint.id)
    assert done is not None and done.status == ComplaintStatus.CLOSED
    assert done.first_response_at == start + dt.timedelta(hours=1)
    assert done.resolved_at == start + dt.timedelta(hours=30)
    assert done.closed_at == start + dt.timedelta(hours=31)
    assert (done.cause, done.root_cause, done.satisfaction, done.customer_resolved) == (
        "internal_management", "Warehouse backlog", 4, True)
    entries = service.timelines([complaint.id])[complaint.id]
    assert [(e.kind, e.from_status, e.to_status) for e in entries] == [
        (EntryKind.TRANSITION, None, ComplaintStatus.RECEIVED),
        *[(EntryKind.TRANSITION, a, b) for a, b in zip(
            [ComplaintStatus.RECEIVED, ComplaintStatus.CONFIRMED, ComplaintStatus.ANALYZING,
             ComplaintStatus.SOLUTION_PROPOSED, ComplaintStatus.IMPLEMENTING,
             ComplaintStatus.FEEDBACK],
            [ComplaintStatus.CONFIRMED, ComplaintStatus.ANALYZING,
             ComplaintStatus.SOLUTION_PROPOSED, ComplaintStatus.IMPLEMENTING,
             ComplaintStatus.FEEDBACK, ComplaintStatus.CLOSED])]]
    assert entries[5].step_data == {"satisfaction": 4, "customer_resolved": True}


def test_filing_records_a_complaint_interaction(complaints_app: Flask) -> None:
    ada = customer()
    complaint = file(ada)
    interaction = db.session.get(Interaction, complaint.interaction_id)
    assert interaction is not None
    assert (interaction.kind, interaction.customer_id, interaction.channel) == (
        "complaint", ada, "phone")
    assert interaction.payload == {"complaint_id": complaint.id, "type": "logistics",
                                   "severity": "medium"}
    quiet = file(ada, record_interaction=False)
    assert quiet.interaction_id is None


def test_every_transition_needs_its_step_data(complaints_app: Flask) -> None:
    complaint = file(customer())
    for (to, data) in HAPPY_PATH:
        required = workflow.STEPS[workflow.Transition(to)].required
        if required:
            with pytest.raises(UserError) as exc:
                move(complaint.id, to)
            assert {code for _, code in _codes(exc)} == {"STEP_DATA_REQUIRED"}
        move(complaint.id, to, **data)


def test_illegal_transitions(complaints_app: Flask) -> None:
    complaint = file(customer())
    with pytest.raises(UserError) as exc:
        move(complaint.id, "analyzing", root_cause="skipped a step")
    assert _codes(exc) == [("to", "ILLEGAL_TRANSITION")]
    run_through(complaint.id, NOW, [0] * 6)
    before = _rows()
    for to, data in [("analyzing", {"root_cause": "again"}), ("rejected", {"reason": "late"}),
                     ("confirmed", {"cause": "other"})]:
        with pytest.raises(UserError) as exc:
            move(complaint.id, to, **data)
        assert _codes(exc) == [("to", "ILLEGAL_TRANSITION")]
        assert "Reopen it first" in str(exc.value)
    assert _rows() == before


def test_step_data_that_does_not_belong_is_refused(complaints_app: Flask) -> None:
    complaint = file(customer())
    with pytest.raises(UserError) as exc:
        move(complaint.id, "confirmed", cause="other", solution="early")
    assert _codes(exc) == [("solution", "INVALID")]


def test_satisfaction_out_of_range_writes_nothing(complaints_app: Flask) -> None:
    complaint = file(customer())
    run_through(complaint.id, NOW, [0] * 4, upto="implementing")
    before = _rows()
    for score in (0, 6):
        with pytest.raises(UserError) as exc:
            move(complaint.id, "feedback", satisfaction=score, customer_resolved=True)
        assert _codes(exc) == [("satisfaction", "INVALID")]
    assert _rows() == before
    db.session.expire_all()
    assert db.session.get(Complaint, complaint.id).status == ComplaintStatus.IMPLEMENTING


def test_reopen_from_feedback_and_closed(complaints_app: Flask) -> None:
    complaint = file(customer(), at=days_ago(5))
    run_through(complaint.id, days_ago(5), [1, 2, 3, 4, 5], upto="feedback")
    move(complaint.id, "reopened", reason="Parcel arrived broken")
    db.session.expire_all()
    row = db.session.get(Complaint, complaint.id)
    assert row is not None
    assert (row.status, row.reopen_count, row.resolved_at, row.satisfaction) == (
        ComplaintStatus.ANALYZING, 1, None, None)
    for to, data in HAPPY_PATH[2:]:
        move(complaint.id, to, **data)
    move(complaint.id, "reopened", reason="Still broken", root_cause="Packaging")
    db.session.expire_all()
    row = db.session.get(Complaint, complaint.id)
    assert (row.status, row.reopen_count, row.root_cause) == (
        ComplaintStatus.ANALYZING, 2, "Packaging")
    reopens = [e for e in service.timelines([complaint.id])[complaint.id]
               if e.transition == "reopened"]
    assert [(e.from_status, e.to_status) for e in reopens] == [
        (ComplaintStatus.FEEDBACK, ComplaintStatus.ANALYZING),
        (ComplaintStatus.CLOSED, ComplaintStatus.ANALYZING)]


def test_reject_from_an_open_status_only(complaints_app: Flask) -> None:
    complaint = file(customer())
    move(complaint.id, "confirmed", cause="expectations_too_high")
    move(complaint.id, "rejected", reason="Outside the warranty", note="Called the customer")
    db.session.expire_all()
    row = db.session.get(Complaint, complaint.id)
    assert row is not None and row.status == ComplaintStatus.REJECTED
    assert row.rejection_reason == "Outside the warranty" and row.closed_at is not None
    with pytest.raises(UserError) as exc:
        move(complaint.id, "reopened", reason="no")
    assert _codes(exc) == [("to", "ILLEGAL_TRANSITION")]


def test_first_response_is_the_first_move_out_of_received(complaints_app: Flask) -> None:
    complaint = file(customer(), at=days_ago(1))
    move(complaint.id, "rejected", at=days_ago(0.5), reason="Duplicate")
    db.session.expire_all()
    assert db.session.get(Complaint, complaint.id).first_response_at == days_ago(0.5)


def test_bad_filings_write_nothing(complaints_app: Flask) -> None:
    ada = customer()
    before = _rows()
    cases: list[tuple[dict[str, Any], list[tuple[str | None, str]]]] = [
        ({"type": "weather"}, [("type", "UNKNOWN_TYPE")]),
        ({"channel": "pigeon"}, [("channel", "UNKNOWN_CHANNEL")]),
        ({"type": "weather", "channel": "pigeon"},
         [("type", "UNKNOWN_TYPE"), ("channel", "UNKNOWN_CHANNEL")]),
        ({"severity": "apocalyptic"}, [("severity", "INVALID")]),
        ({"subject": ""}, [("subject", "INVALID")]),
        ({"customer_id": 999_999}, [("customerId", "NOT_FOUND")]),
        ({"assignee_id": 424_242}, [("assigneeId", "NOT_FOUND")]),
        ({"filed_at": (NOW + dt.timedelta(days=2)).isoformat()}, [("filedAt", "INVALID")]),
    ]
    for extra, expected in cases:
        raw = {"customer_id": ada, "type": "logistics", "channel": "phone",
               "subject": "Late", **extra}
        with pytest.raises(UserError) as exc:
            service.file_complaint(raw)
        assert _codes(exc) == expected, extra
    assert _rows() == before


def test_no_complaint_for_an_erased_customer(complaints_app: Flask) -> None:
    ada = customer()
    erase_customer(ada)
    before = _rows()
    with pytest.raises(UserError) as exc:
        file(ada)
    assert _codes(exc) == [("customerId", "CUSTOMER_ERASED")]
    assert _rows() == before
    assert db.session.get(Customer, ada) is not None


def test_assignment_and_notes_are_timeline_entries(complaints_app: Flask) -> None:
    grace, alan = agent("Grace"), agent("Alan")
    complaint = file(customer(), assignee_id=grace)
    service.assign_complaint({"id": complaint.id, "assignee_id": alan, "note": "Grace is off"},
                             actor_id=grace)
    service.add_note({"id": complaint.id, "note": "Customer called again"}, actor_id=alan)
    with pytest.raises(UserError) as exc:
        service.assign_complaint({"id": complaint.id, "assignee_id": 777})
    assert [e.code for e in exc.value.errors] == ["NOT_FOUND"]
    entries = service.timelines([complaint.id])[complaint.id]
    assert [(e.kind, e.actor_id) for e in entries[1:]] == [
        (EntryKind.ASSIGNMENT, grace), (EntryKind.NOTE, alan)]
    assert entries[1].step_data == {"from_assignee_id": grace, "to_assignee_id": alan}
    db.session.expire_all()
    assert db.session.get(Complaint, complaint.id).assignee_id == alan


class PartnerVocabulary:
    @hookimpl(optionalhook=True)
    def rapport_complaint_types(self) -> list[tuple[str, str]]:
        return [("data_privacy", "Misuse of personal data")]

    @hookimpl(optionalhook=True)
    def rapport_complaint_channels(self) -> list[tuple[str, str]]:
        return [("chat_widget", "The web shop's chat")]


def test_partners_extend_types_and_channels(make_app: AppFactory) -> None:
    app = make_app(enabled=["complaints"], plugins=(PartnerVocabulary(),))
    with app.app_context():
        complaint = file(customer(), type="data_privacy", channel="chat_widget")
        assert (complaint.type, complaint.channel) == ("data_privacy", "chat_widget")
        assert service.file_complaint({"customer_id": complaint.customer_id,
                                       "type": "logistics", "channel": "email",
                                       "subject": "Still works"}).type == "logistics"
