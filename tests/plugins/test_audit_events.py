"""The built-in plugins write their audit entries and outbox events through
core.changes.record, in the transaction of the change, with the actor of the context."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from core import context
from core.context import Actor
from core.db import db
from core.ids import global_id
from core.models import AuditEntry, OutboxEvent
from core.services.customers import create_customer
from tests.conftest import AppFactory

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
CLERK = Actor(service="till", api_key_prefix="till0001", via="graphql")


@pytest.fixture
def plugins_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["loyalty", "complaints", "churn", "surveys"])
    with app.app_context(), context.use(actor=CLERK, operation="probe"):
        yield app


def _events(event_type: str) -> list[OutboxEvent]:
    return list(db.session.scalars(select(OutboxEvent).where(OutboxEvent.type == event_type)
                                   .order_by(OutboxEvent.id)))


def _by_clerk(event: OutboxEvent) -> bool:
    return event.actor == CLERK.to_json()


def test_loyalty_moves_of_points_are_events(plugins_app: Flask) -> None:
    from plugins.loyalty import service

    customer = create_customer({"name": "Ann"}).id
    service.adjust_points({"customer_id": customer, "points": 100, "reason": "welcome",
                           "idempotency_key": "k1"})
    entry = service.redeem_points({"customer_id": customer, "points": 30,
                                   "idempotency_key": "k2"})
    service.redeem_points({"customer_id": customer, "points": 30, "idempotency_key": "k2"})
    earned, = _events("loyalty.points.earned")
    redeemed, = _events("loyalty.points.redeemed")  # the replay wrote nothing more
    assert _by_clerk(earned) and earned.data["points"] == 100
    assert redeemed.data == {"customerId": global_id("Customer", customer),
                             "ledgerEntryId": global_id("LoyaltyLedgerEntry", entry.id),
                             "points": -30, "kind": "redeem", "rewardId": None}


def test_complaints_filing_transitions_and_breaches_are_events(plugins_app: Flask) -> None:
    from plugins.complaints import service

    customer = create_customer({"name": "Bob"}).id
    complaint = service.file_complaint({
        "customer_id": customer, "type": "price", "channel": "email", "severity": "low",
        "subject": "Charged twice", "filed_at": (NOW - dt.timedelta(days=30)).isoformat()},
        now=NOW)
    gid = global_id("Complaint", complaint.id)
    service.transition_complaint({"id": complaint.id, "to": "rejected",
                                  "reason": "duplicate"}, now=NOW)
    filed, = _events("complaint.filed")
    moved, = _events("complaint.transitioned")
    assert filed.aggregate_id == gid and _by_clerk(filed)
    assert (moved.data["fromStatus"], moved.data["toStatus"]) == ("received", "rejected")
    entry = db.session.scalars(select(AuditEntry).where(
        AuditEntry.object_ids.is_not(None), AuditEntry.changes.is_not(None))
        .order_by(AuditEntry.id.desc())).first()
    assert entry.changes == {"status": ["received", "rejected"]}

    other = service.file_complaint({
        "customer_id": customer, "type": "price", "channel": "email", "severity": "low",
        "subject": "Late", "filed_at": (NOW - dt.timedelta(days=30)).isoformat()}, now=NOW)
    run = service.escalate_overdue(NOW)
    assert other.id in run.escalated
    breached = _events("complaint.sla.breached")
    assert [e.aggregate_id for e in breached] == [global_id("Complaint", other.id)]
    assert len(_events("alert.raised")) == len(run.alerts)


def test_churn_marks_are_events_and_an_import_batch_is_one(plugins_app: Flask) -> None:
    from plugins.churn import service

    ann, bob, cid = (create_customer({"name": n}).id for n in ("Ann", "Bob", "Cid"))
    service.mark_churned({"customer_id": ann, "type": "natural", "reason": "pricing"})
    marked, = _events("churn.customer.marked")
    assert marked.aggregate_id == global_id("Customer", ann) and _by_clerk(marked)
    result = service.mark_customers_churned(
        [{"customer_id": c, "type": "natural", "reason": "pricing"} for c in (bob, cid)], partial=True, check_jumps=False, imported=True)
    assert result.recorded == 2
    assert len(_events("churn.customer.marked")) == 1
    batch, = _events("churn.customers.imported")
    assert batch.data["recorded"] == 2


def test_survey_responses_are_events(plugins_app: Flask) -> None:
    from plugins.surveys import service

    customer = create_customer({"name": "Dee"}).id
    survey = service.create_survey({"title": "After purchase", "questions": [
        {"key": "nps", "text": "Recommend us?", "type": "nps", "required": True}]})
    service.open_survey(survey.id)
    response = service.submit_response({"survey_id": survey.id, "customer_id": customer,
                                        "answers": [{"key": "nps", "value": 9}]}, now=NOW)
    submitted, = _events("survey.response.submitted")
    assert submitted.data["responseId"] == global_id("SurveyResponse", response.id)
    assert submitted.data["customerId"] == global_id("Customer", customer)
