"""Complaint operations: file, move through the workflow, assign, annotate, escalate;
merge, erase, export; the SLA policy. Plain functions, one transaction each: the GraphQL
mutations and the CLI commands call them.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, and_, select, update

from core import changes as audit
from core.app import rapport
from core.db import db, utcnow
from core.errors import FieldError, UserError, camel
from core.ids import global_id, shown_id
from core.models import Agent, Customer, CustomerStatus, Interaction
from core.services import load, not_found, transaction
from core.services.staff import raise_alert

from plugins.complaints import sla, workflow
from plugins.complaints.config import complaint_settings
from plugins.complaints.errors import ComplaintErrorCode
from plugins.complaints.models import (
    SEVERITY_ORDER, Complaint, EntryKind, SlaPolicy, TimelineEntry,
)
from plugins.complaints.schemas import (
    AssignSchema, ComplaintFilterSchema, FileComplaintSchema, NoteSchema, SlaPolicySchema,
    TransitionSchema,
)

ESCALATION_ALERT = "complaint_escalation"
ERASED_TEXT = "(erased)"


def _agent(agent_id: int | None, field_name: str) -> None:
    if agent_id is not None and db.session.get(Agent, agent_id) is None:
        raise not_found("agent", agent_id, field_name, type_name="Agent")


def _complaint(complaint_id: int, *, lock: bool = True) -> Complaint:
    stmt = select(Complaint).where(Complaint.id == complaint_id)
    found = db.session.scalar(stmt.with_for_update() if lock else stmt)
    if found is None:
        raise not_found("complaint", complaint_id, type_name="Complaint")
    return found


def file_complaint(raw: Mapping[str, Any], *, actor_id: int | None = None,
                   now: dt.datetime | None = None) -> Complaint:
    """Record a new complaint (RECEIVED) with its SLA due times; by default also as an
    interaction of kind ``complaint`` of the customer."""
    now = now or utcnow()
    data = load(FileComplaintSchema(now=now), raw)
    settings = complaint_settings()
    errors = []
    if data["type"] not in settings.types:
        errors.append(FieldError(
            f"Unknown complaint type {data['type']!r}; known: {', '.join(settings.types)}.",
            ComplaintErrorCode.UNKNOWN_TYPE, "type"))
    if data["channel"] not in settings.channels:
        errors.append(FieldError(
            f"Unknown channel {data['channel']!r}; known: {', '.join(settings.channels)}.",
            ComplaintErrorCode.UNKNOWN_CHANNEL, "channel"))
    if errors:
        raise UserError(errors)
    with transaction():
        customer = db.session.get(Customer, data["customer_id"])
        if customer is None:
            raise not_found("customer", data["customer_id"], "customerId", type_name="Customer")
        if customer.status == CustomerStatus.ERASED:
            raise UserError.single("The customer is erased; no complaint can be filed for it.",
                                   ComplaintErrorCode.CUSTOMER_ERASED, "customerId")
        _agent(data.get("assignee_id"), "assigneeId")
        filed_at = data.get("filed_at") or now
        first_due, resolution_due = sla.due_times(data["severity"], filed_at, settings.calendar)
        complaint = Complaint(
            customer_id=customer.id, type=data["type"], channel=data["channel"],
            severity=data["severity"], status=workflow.S.RECEIVED, subject=data["subject"],
            description=data.get("description"), reference=data.get("reference"),
            tags=data["tags"], assignee_id=data.get("assignee_id"), reopen_count=0,
            filed_at=filed_at, first_response_due=first_due, resolution_due=resolution_due,
            updated_at=now)
        db.session.add(complaint)
        db.session.flush()
        db.session.add(TimelineEntry(
            complaint_id=complaint.id, kind=EntryKind.TRANSITION, occurred_at=filed_at,
            actor_id=actor_id, to_status=workflow.S.RECEIVED, transition="received",
            step_data={"severity": complaint.severity.value}))
        if data["record_interaction"]:
            interaction = Interaction(
                customer_id=customer.id, kind="complaint", channel=complaint.channel,
                occurred_at=filed_at, agent_id=actor_id,
                payload={"complaint_id": complaint.id, "type": complaint.type,
                         "severity": complaint.severity.value})
            db.session.add(interaction)
            db.session.flush()
            complaint.interaction_id = interaction.id
            rapport().hook.rapport_interaction_recorded(interaction=interaction)
        gid, customer_gid = _ids(complaint)
        audit.record(None, [gid, customer_gid], None, [audit.Event("complaint.filed", gid, {
            "complaintId": gid, "customerId": customer_gid, "type": complaint.type,
            "channel": complaint.channel, "severity": complaint.severity.value,
            "filedAt": complaint.filed_at})])
    return complaint


def _ids(complaint: Complaint) -> tuple[str, str]:
    return global_id("Complaint", complaint.id), global_id("Customer", complaint.customer_id)


def transition_complaint(raw: Mapping[str, Any], *, actor_id: int | None = None,
                         now: dt.datetime | None = None) -> Complaint:
    """Move a complaint one step of the workflow (``workflow.STEPS``), with its step data."""
    data = load(TransitionSchema(), raw)
    now = now or utcnow()
    if data.get("type") is not None and data["type"] not in complaint_settings().types:
        raise UserError.single(f"Unknown complaint type {data['type']!r}.",
                               ComplaintErrorCode.UNKNOWN_TYPE, "type")
    with transaction():
        complaint = _complaint(data["id"])
        before = complaint.status
        entry = workflow.apply(complaint, data["to"], data, now, actor_id, data.get("note"))
        db.session.add(entry)
        gid, customer_gid = _ids(complaint)
        audit.record(None, [gid, customer_gid], {"status": [before, complaint.status]}, [
            audit.Event("complaint.transitioned", gid, {
                "complaintId": gid, "customerId": customer_gid, "transition": entry.transition,
                "fromStatus": before, "toStatus": complaint.status})])
    return complaint


def assign_complaint(raw: Mapping[str, Any], *, actor_id: int | None = None,
                     now: dt.datetime | None = None) -> Complaint:
    """Give the complaint to an agent (``assignee_id`` None: unassign)."""
    data = load(AssignSchema(), raw)
    now = now or utcnow()
    with transaction():
        complaint = _complaint(data["id"])
        _agent(data["assignee_id"], "assigneeId")
        db.session.add(TimelineEntry(
            complaint_id=complaint.id, kind=EntryKind.ASSIGNMENT, occurred_at=now,
            actor_id=actor_id, note=data.get("note"),
            step_data={"from_assignee_id": complaint.assignee_id,
                       "to_assignee_id": data["assignee_id"]}))
        before = complaint.assignee_id
        complaint.assignee_id = data["assignee_id"]
        complaint.updated_at = now
        audit.record(None, list(_ids(complaint)), audit.camel_changes(
            {"assignee_id": (before, complaint.assignee_id)}, {"assignee_id": "Agent"}))
    return complaint


def add_note(raw: Mapping[str, Any], *, actor_id: int | None = None,
             now: dt.datetime | None = None) -> TimelineEntry:
    data = load(NoteSchema(), raw)
    with transaction():
        complaint = _complaint(data["id"], lock=False)
        entry = TimelineEntry(complaint_id=complaint.id, kind=EntryKind.NOTE,
                              occurred_at=now or utcnow(), actor_id=actor_id, note=data["note"],
                              step_data={})
        db.session.add(entry)
    return entry


def set_sla_policy(raw: Mapping[str, Any]) -> SlaPolicy:
    """Set the targets of a severity; they apply to complaints filed from now on."""
    data = load(SlaPolicySchema(), raw)
    with transaction():
        row = db.session.get(SlaPolicy, data["severity"])
        if row is None:
            row = SlaPolicy(severity=data["severity"])
            db.session.add(row)
        row.first_response_hours = data["first_response_hours"]
        row.resolution_hours = data["resolution_hours"]
        row.business_hours = data["business_hours"]
        row.updated_at = utcnow()
        audit.record(None, [], {f"slaPolicy.{row.severity.value}": [None, {
            "firstResponseHours": row.first_response_hours,
            "resolutionHours": row.resolution_hours, "businessHours": row.business_hours}]})
    return row


# --- Escalation ----------------------------------------------------------------------------


@dataclass
class EscalationRun:
    escalated: list[int] = field(default_factory=list)
    alerts: list[int] = field(default_factory=list)


def escalate_overdue(now: dt.datetime | None = None) -> EscalationRun:
    """Escalate every complaint with a target still unmet past its due time, once per
    target (first response, resolution): severity one step up; a complaint already
    critical goes to the escalation agent when one is configured. Each escalation is a
    timeline entry and a core alert ``complaint_escalation``."""
    with transaction():
        return escalate_due(now or utcnow())


def escalate_due(now: dt.datetime) -> EscalationRun:
    """``escalate_overdue`` in the caller's transaction (the demo data uses it)."""
    settings = complaint_settings()
    run = EscalationRun()
    breaches: list[audit.Event] = []
    first_missed = and_(Complaint.first_response_at.is_(None),
                        Complaint.first_response_due < now,
                        Complaint.first_response_escalated_at.is_(None))
    resolution_missed = and_(Complaint.resolved_at.is_(None), Complaint.resolution_due < now,
                             Complaint.resolution_escalated_at.is_(None))
    due = db.session.scalars(select(Complaint).where(first_missed | resolution_missed)
                             .order_by(Complaint.id).with_for_update()).all()
    customers = {c.id: c for c in db.session.scalars(select(Customer).where(
        Customer.id.in_({c.customer_id for c in due})))} if due else {}
    for complaint in due:
        missed = []
        if complaint.first_response_at is None and complaint.first_response_due < now \
                and complaint.first_response_escalated_at is None:
            missed.append(("first_response", complaint.first_response_due))
            complaint.first_response_escalated_at = now
        if complaint.resolved_at is None and complaint.resolution_due < now \
                and complaint.resolution_escalated_at is None:
            missed.append(("resolution", complaint.resolution_due))
            complaint.resolution_escalated_at = now
        target, due_at = missed[-1]
        before, assignee_before = complaint.severity, complaint.assignee_id
        rank = SEVERITY_ORDER.index(before)
        if rank + 1 < len(SEVERITY_ORDER):
            complaint.severity = SEVERITY_ORDER[rank + 1]
        elif settings.escalation_agent_id is not None:
            complaint.assignee_id = settings.escalation_agent_id
        complaint.updated_at = now
        # camelCase and global ids: alerts and the timeline show it to clients as is.
        evidence = {
            "complaintId": global_id("Complaint", complaint.id),
            "targets": [m[0] for m in missed], "due": due_at.isoformat(),
            "hoursOverdue": round((now - due_at).total_seconds() / 3600, 2),
            "severityFrom": before.value, "severityTo": complaint.severity.value,
            "assigneeFrom": None if assignee_before is None
            else global_id("Agent", assignee_before),
            "assigneeTo": None if complaint.assignee_id is None
            else global_id("Agent", complaint.assignee_id),
            "type": complaint.type,
        }
        db.session.add(TimelineEntry(
            complaint_id=complaint.id, kind=EntryKind.ESCALATION, occurred_at=now,
            note=f"{target.replace('_', ' ')} overdue since {due_at.isoformat()}",
            step_data=evidence))
        alert = raise_alert(ESCALATION_ALERT, complaint.severity.value, "complaints",
                            evidence, customers.get(complaint.customer_id))
        run.escalated.append(complaint.id)
        run.alerts.append(alert.id)
        gid, customer_gid = _ids(complaint)
        breaches.append(audit.Event("complaint.sla.breached", gid, {
            "complaintId": gid, "customerId": customer_gid,
            "targets": [m[0] for m in missed], "dueAt": due_at,
            "severity": complaint.severity.value}))
    audit.record(None, [global_id("Complaint", c) for c in run.escalated],
                 {"escalated": [None, len(run.escalated)]}, breaches)
    return run


# --- Reads ---------------------------------------------------------------------------------


def complaints_query(raw: Mapping[str, Any], now: dt.datetime) -> Select[tuple[Complaint]]:
    """Complaints matching a filter (``ComplaintFilterSchema``), unordered."""
    data = load(ComplaintFilterSchema(), raw)
    conditions: list[Any] = []
    if data.get("status"):
        conditions.append(Complaint.status.in_(data["status"]))
    if data.get("type"):
        conditions.append(Complaint.type.in_(data["type"]))
    if data.get("severity"):
        conditions.append(Complaint.severity.in_(data["severity"]))
    if data.get("overdue") is not None:
        overdue = sla.overdue_condition(now)
        conditions.append(overdue if data["overdue"] else ~overdue)
    if data.get("customer_id") is not None:
        conditions.append(Complaint.customer_id == data["customer_id"])
    if data.get("assignee_id") is not None:
        conditions.append(Complaint.assignee_id == data["assignee_id"])
    if data.get("filed_from") is not None:
        conditions.append(Complaint.filed_at >= data["filed_from"])
    if data.get("filed_to") is not None:
        conditions.append(Complaint.filed_at <= data["filed_to"])
    return select(Complaint).where(*conditions)


def timelines(complaint_ids: Sequence[int]) -> dict[int, list[TimelineEntry]]:
    found: dict[int, list[TimelineEntry]] = defaultdict(list)
    for entry in db.session.scalars(select(TimelineEntry).where(
            TimelineEntry.complaint_id.in_(complaint_ids))
            .order_by(TimelineEntry.complaint_id, TimelineEntry.occurred_at, TimelineEntry.id)):
        found[entry.complaint_id].append(entry)
    return found


# --- Customer lifecycle hooks ------------------------------------------------------------


def merge_complaints(survivor_id: int, merged_ids: Sequence[int]) -> None:
    """Re-key the merged customers' complaints to the survivor (history kept)."""
    db.session.execute(update(Complaint).where(Complaint.customer_id.in_(merged_ids))
                       .values(customer_id=survivor_id))


def erase_personal_data(customer_id: int) -> dict[str, Any] | None:
    """Remove the free text of the customer's complaints and their timelines; type,
    severity, dates, scores and counts stay, so statistics do not change."""
    ids = db.session.scalars(select(Complaint.id).where(
        Complaint.customer_id == customer_id)).all()
    if not ids:
        return None
    db.session.execute(update(Complaint).where(Complaint.id.in_(ids)).values(
        subject=ERASED_TEXT, description=None, reference=None, root_cause=None, solution=None,
        rejection_reason=None, tags=[]))
    for entry in db.session.scalars(select(TimelineEntry).where(
            TimelineEntry.complaint_id.in_(ids))):
        entry.note = None
        entry.step_data = {k: v for k, v in (entry.step_data or {}).items()
                           if k not in ("root_cause", "solution", "reason")}
    return {"complaints_anonymised": len(ids)}


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


#: Step-data keys stored as database ids (assignments, escalations before camelCase),
#: shown as the global ids a client can look up.
_STEP_DATA_IDS = {"from_assignee_id": "Agent", "to_assignee_id": "Agent",
                  "assignee_from": "Agent", "assignee_to": "Agent", "complaint_id": "Complaint"}


def step_data_json(step_data: Mapping[str, Any] | None) -> dict[str, Any]:
    """A timeline entry's step data as clients see it: camelCase keys, global ids."""
    return {camel(k): shown_id(_STEP_DATA_IDS[k], v)
            if k in _STEP_DATA_IDS and v is not None else v
            for k, v in (step_data or {}).items()}


def export_section(customer_id: int) -> dict[str, Any] | None:
    complaints = db.session.scalars(select(Complaint).where(
        Complaint.customer_id == customer_id).order_by(Complaint.filed_at, Complaint.id)).all()
    if not complaints:
        return None
    history = timelines([c.id for c in complaints])
    return {"complaints": [{
        "id": global_id("Complaint", c.id), "type": c.type, "channel": c.channel,
        "severity": c.severity.value,
        "status": c.status.value, "subject": c.subject, "description": c.description,
        "reference": c.reference, "tags": c.tags, "cause": c.cause, "rootCause": c.root_cause,
        "solution": c.solution, "rejectionReason": c.rejection_reason,
        "satisfaction": c.satisfaction, "customerResolved": c.customer_resolved,
        "reopenCount": c.reopen_count, "filedAt": _iso(c.filed_at),
        "firstResponseAt": _iso(c.first_response_at), "resolvedAt": _iso(c.resolved_at),
        "closedAt": _iso(c.closed_at),
        "timeline": [{"kind": e.kind.value, "occurredAt": _iso(e.occurred_at),
                      "fromStatus": e.from_status.value if e.from_status else None,
                      "toStatus": e.to_status.value if e.to_status else None,
                      "note": e.note, "stepData": step_data_json(e.step_data)}
                     for e in history.get(c.id, [])],
    } for c in complaints]}

