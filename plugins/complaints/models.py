"""Complaints tables: the complaint, its timeline, and the SLA targets per severity.

A complaint row holds its current state; the timeline holds every step that led there
(filing, transitions with their step data, assignments, escalations, notes) and is never
rewritten, except that erasure clears its free text. Due times are computed once, at
filing, from the SLA policy then in force; whether they are breached is computed when
read (``sla.py``), never stored.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    Boolean, CheckConstraint, Enum, ForeignKey, Index, Integer, String, Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import BigIntPK, JSONDocument, UTCDateTime, db, plugin_table, utcnow

PLUGIN = "complaints"


def _table_args(*items: Any) -> tuple[Any, ...]:
    return (*items, plugin_table(PLUGIN))


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class ComplaintStatus(enum.StrEnum):
    RECEIVED = "received"
    CONFIRMED = "confirmed"                  # type and cause confirmed
    ANALYZING = "analyzing"                  # root cause recorded
    SOLUTION_PROPOSED = "solution_proposed"  # solution planned
    IMPLEMENTING = "implementing"
    FEEDBACK = "feedback"                    # result fed back; satisfaction recorded
    CLOSED = "closed"
    REJECTED = "rejected"


#: Statuses whose complaint still waits for a result (the resolution clock runs).
OPEN_STATUSES = (ComplaintStatus.RECEIVED, ComplaintStatus.CONFIRMED, ComplaintStatus.ANALYZING,
                 ComplaintStatus.SOLUTION_PROPOSED, ComplaintStatus.IMPLEMENTING)


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


SEVERITY_ORDER = (Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)


class EntryKind(enum.StrEnum):
    TRANSITION = "transition"   # filing (no from_status) and every status change
    ASSIGNMENT = "assignment"
    ESCALATION = "escalation"
    NOTE = "note"


class Complaint(db.Model):
    __tablename__ = "complaints_complaint"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    type: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(40))
    severity: Mapped[Severity] = mapped_column(_enum(Severity))
    status: Mapped[ComplaintStatus] = mapped_column(_enum(ComplaintStatus),
                                                    default=ComplaintStatus.RECEIVED)
    subject: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"),
                                                    index=True)
    interaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL"))
    #: Step data, the latest value of each.
    cause: Mapped[str | None] = mapped_column(String(40))
    root_cause: Mapped[str | None] = mapped_column(Text)
    solution: Mapped[str | None] = mapped_column(Text)
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    satisfaction: Mapped[int | None] = mapped_column(Integer)
    customer_resolved: Mapped[bool | None] = mapped_column(Boolean)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    filed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    first_response_due: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    resolution_due: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    #: The first transition out of RECEIVED.
    first_response_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Entering FEEDBACK or REJECTED (the customer has an answer); cleared by a reopen.
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Entering CLOSED or REJECTED; cleared by a reopen.
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: When the escalation job escalated a missed first response / resolution (once each).
    first_response_escalated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    resolution_escalated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = _table_args(
        # Keyset pages (newest first), per customer and overall; stats and detection by date.
        Index("ix_complaints_complaint_filed", "filed_at", "id"),
        Index("ix_complaints_complaint_customer_filed", "customer_id", "filed_at", "id"),
        Index("ix_complaints_complaint_status", "status"),
        CheckConstraint("satisfaction IS NULL OR satisfaction BETWEEN 1 AND 5",
                        name="satisfaction_range"),
        CheckConstraint("reopen_count >= 0", name="reopen_count_not_negative"),
    )


class TimelineEntry(db.Model):
    __tablename__ = "complaints_timeline"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    complaint_id: Mapped[int] = mapped_column(ForeignKey("complaints_complaint.id"))
    kind: Mapped[EntryKind] = mapped_column(_enum(EntryKind))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    from_status: Mapped[ComplaintStatus | None] = mapped_column(_enum(ComplaintStatus))
    to_status: Mapped[ComplaintStatus | None] = mapped_column(_enum(ComplaintStatus))
    #: The transition asked for: a status, or ``reopened``.
    transition: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    step_data: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)

    __table_args__ = _table_args(
        Index("ix_complaints_timeline_complaint", "complaint_id", "occurred_at", "id"))


class SlaPolicy(db.Model):
    """Targets for one severity; a severity without a row uses ``sla.DEFAULT_TARGETS``."""

    __tablename__ = "complaints_sla_policy"

    severity: Mapped[Severity] = mapped_column(_enum(Severity), primary_key=True)
    first_response_hours: Mapped[int] = mapped_column(Integer)
    resolution_hours: Mapped[int] = mapped_column(Integer)
    #: Count the hours of the business calendar only (when one is configured).
    business_hours: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = _table_args(
        CheckConstraint("first_response_hours > 0 AND resolution_hours >= first_response_hours",
                        name="targets_ordered"))
