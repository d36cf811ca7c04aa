"""Merge, erasure, export, the churn features hook and the demo data."""

from __future__ import annotations

import datetime as dt
import random

from flask import Flask
from sqlalchemy import func, select

from core.db import db
from core.ids import global_id
from core.models import Alert, Customer, Interaction
from core.services.customers import erase_customer, export_customer, merge_customers
from plugins import complaints as plugin
from plugins.complaints import service, stats
from plugins.complaints.models import Complaint, ComplaintStatus, TimelineEntry
from tests.plugins.complaints.conftest import agent, customer, days_ago, file, move, run_through


def test_merge_rekeys_complaints(complaints_app: Flask) -> None:
    ada, twin, other = customer("Ada"), customer("Ada L."), customer("Bob")
    file(ada)
    kept = file(twin, subject="Twin's complaint")
    file(other)
    merge_customers(ada, [twin])
    owners = dict(db.session.execute(select(Complaint.subject, Complaint.customer_id)).all())
    assert owners["Twin's complaint"] == ada
    assert db.session.scalar(select(func.count()).select_from(Complaint).where(
        Complaint.customer_id == ada)) == 2
    assert len(service.timelines([kept.id])[kept.id]) == 1


def test_erasure_removes_text_and_keeps_counts(complaints_app: Flask) -> None:
    ada = customer()
    complaint = file(ada, reference="ORDER-77", tags=["vip"])
    run_through(complaint.id, days_ago(0), [0] * 3, upto="solution_proposed")
    service.add_note({"id": complaint.id, "note": "Lives at 3 Elm Street"})
    before = stats.complaint_stats({"from": days_ago(2).date().isoformat(),
                                    "to": days_ago(-1).date().isoformat()})
    result = erase_customer(ada)
    assert result.reports["complaints"] == {"complaints_anonymised": 1}
    db.session.expire_all()
    row = db.session.get(Complaint, complaint.id)
    assert row is not None
    assert (row.subject, row.description, row.reference, row.root_cause, row.solution,
            row.tags) == ("(erased)", None, None, None, None, [])
    assert (row.type, row.status, row.severity.value) == (
        "logistics", ComplaintStatus.SOLUTION_PROPOSED, "medium")
    entries = db.session.scalars(select(TimelineEntry).where(
        TimelineEntry.complaint_id == complaint.id)).all()
    assert len(entries) == 5
    assert all(e.note is None for e in entries)
    assert all(not {"root_cause", "solution"} & set(e.step_data) for e in entries)
    after = stats.complaint_stats({"from": days_ago(2).date().isoformat(),
                                   "to": days_ago(-1).date().isoformat()})
    assert after.total == before.total
    assert erase_customer(customer("Bob")).reports.get("complaints") is None


def test_export_section(complaints_app: Flask) -> None:
    ada = customer()
    complaint = file(ada, at=days_ago(3))
    move(complaint.id, "confirmed", days_ago(2), cause="quality_defect", note="Checked")
    section = export_customer(ada)["plugins"]["complaints"]
    [exported] = section["complaints"]
    assert (exported["subject"], exported["status"], exported["cause"]) == (
        "Parcel late", "confirmed", "quality_defect")
    assert [(e["kind"], e["toStatus"], e["note"]) for e in exported["timeline"]] == [
        ("transition", "received", None), ("transition", "confirmed", "Checked")]
    assert exported["id"] == global_id("Complaint", complaint.id)
    assert exported["timeline"][1]["stepData"] == {"cause": "quality_defect"}
    assert "complaints" not in export_customer(customer("Bob")).get("plugins", {})


def test_churn_features_are_computed_as_of_a_date(complaints_app: Flask) -> None:
    as_of = days_ago(10)
    ada, bob, cy = customer("Ada"), customer("Bob"), customer("Cy")
    old = file(ada, at=as_of - dt.timedelta(days=200))          # 365-day window only
    run_through(old.id, old.filed_at, [1, 2, 3, 4, 5, 6])       # satisfaction 4, in time
    recent = file(ada, at=as_of - dt.timedelta(days=20), severity="high")
    move(recent.id, "confirmed", as_of - dt.timedelta(days=19), cause="other")  # late: 4 h
    open_one = file(ada, at=as_of - dt.timedelta(days=5), severity="low")
    run_through(open_one.id, open_one.filed_at, [1, 2, 3, 4, 24 * 7], upto="feedback")
    file(ada, at=days_ago(1))                                   # after as_of: ignored
    closing = file(cy, at=as_of - dt.timedelta(days=3))
    run_through(closing.id, closing.filed_at, [1, 2, 3, 4, 5, 6])
    move(closing.id, "reopened", days_ago(2), reason="Again")   # after as_of: ignored
    customers = select(Customer.id.label("customer_id")).subquery()
    query = plugin.rapport_churn_features(customers=customers, as_of=as_of)
    rows = {r.customer_id: r._asdict() for r in db.session.execute(query)}
    assert rows[ada] == {"customer_id": ada, "complaints_last_90d": 2,
                         "complaints_last_365d": 3, "complaints_open": 2,
                         "complaints_last_satisfaction": 4, "complaints_breached_slas": 1}
    assert rows[bob] == {"customer_id": bob, "complaints_last_90d": 0,
                         "complaints_last_365d": 0, "complaints_open": 0,
                         "complaints_last_satisfaction": None, "complaints_breached_slas": 0}
    assert (rows[cy]["complaints_open"], rows[cy]["complaints_last_satisfaction"]) == (0, 4)


def test_demo_data_has_every_stage_and_a_spike_alert(complaints_app: Flask) -> None:
    agent("Grace")
    as_of = dt.datetime(2026, 6, 30, 15, tzinfo=dt.timezone.utc)
    for n in range(150):
        customer(f"C{n}")
    customers = db.session.scalars(select(Customer).order_by(Customer.id)).all()
    plugin.rapport_demo_data(rng=random.Random(4), customers=customers, as_of=as_of)
    db.session.commit()
    statuses = dict(db.session.execute(select(Complaint.status, func.count())
                                       .group_by(Complaint.status)).all())
    assert statuses[ComplaintStatus.CLOSED] > 100
    assert {ComplaintStatus.REJECTED, ComplaintStatus.RECEIVED} <= set(statuses)
    assert db.session.scalar(select(func.max(Complaint.filed_at))) <= as_of
    assert db.session.scalar(select(func.max(Complaint.reopen_count))) >= 1
    assert db.session.scalar(select(func.count()).select_from(Interaction).where(
        Interaction.kind == "complaint")) == sum(statuses.values())
    alerts = db.session.scalars(select(Alert).where(Alert.kind == "complaint_spike")).all()
    assert "type:logistics" in {a.evidence["series"] for a in alerts}
    first_entries = db.session.execute(select(TimelineEntry.transition).where(
        TimelineEntry.id.in_(select(func.min(TimelineEntry.id))
                             .group_by(TimelineEntry.complaint_id)))).scalars().all()
    assert set(first_entries) == {"received"}
    plugin.rapport_demo_data(rng=random.Random(5), customers=customers[:100], as_of=as_of)
    assert db.session.scalar(select(func.count()).select_from(Alert).where(
        Alert.kind == "complaint_spike")) == len(alerts)   # the next chunk: no duplicate
