"""Care tables: tasks for staff, rules with their runs, and at-risk follow-ups."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    Boolean, Date, Enum, Float, ForeignKey, Index, String, Text, UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import BigIntPK, JSONDocument, UTCDateTime, db, plugin_table, utcnow

PLUGIN = "care"


def _table_args(*items: Any) -> tuple[Any, ...]:
    return (*items, plugin_table(PLUGIN))


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class TaskKind(enum.StrEnum):
    CALL = "call"
    VISIT = "visit"
    GREETING = "greeting"
    FOLLOW_UP = "follow_up"
    OTHER = "other"


class TaskStatus(enum.StrEnum):
    OPEN = "open"
    DONE = "done"
    CANCELLED = "cancelled"


class TaskSource(enum.StrEnum):
    MANUAL = "manual"      # createTask, the CLI
    RULE = "rule"          # a rule's care.create_task action (``rule_id`` names it)
    AT_RISK = "at_risk"    # the monthly at-risk run (care.at_risk)


class Task(db.Model):
    """Something a staff member should do, for a customer or not."""

    __tablename__ = "care_tasks"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    kind: Mapped[TaskKind] = mapped_column(_enum(TaskKind))
    title: Mapped[str] = mapped_column(String(200))
    due_on: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[TaskStatus] = mapped_column(_enum(TaskStatus), default=TaskStatus.OPEN)
    #: What came of it (set when done or cancelled).
    outcome: Mapped[str | None] = mapped_column(Text)
    source: Mapped[TaskSource] = mapped_column(_enum(TaskSource), default=TaskSource.MANUAL)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("care_rules.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = _table_args(
        # tasks(filter: {assignee, status}) in due order: an advisor's open list.
        Index("ix_care_tasks_assignee_id_status_due_on_id", "assignee_id", "status",
              "due_on", "id"),
        Index("ix_care_tasks_due_on_id", "due_on", "id"),
        Index("ix_care_tasks_customer_id_due_on_id", "customer_id", "due_on", "id"),
    )


class Rule(db.Model):
    """When an event of ``event_type`` whose data meets ``conditions`` is relayed, run
    ``actions`` (in order, each in its own transaction) as the key that created it."""

    __tablename__ = "care_rules"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(120), index=True)
    #: ``[{"field": "kind", "op": "eq", "value": "purchase"}, ...]``: all must hold.
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    #: ``[{"action": "care.create_task", "parameters": {...}}, ...]``
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: The creating key's actor and scopes: the rule acts as that key.
    created_by: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    scopes: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = _table_args()


class RunStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RuleRun(db.Model):
    """One rule for one event: written when the event is relayed (once: the pair is
    unique, so a redelivered event does not run a rule twice), run by ``care.run_rules``."""

    __tablename__ = "care_rule_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("care_rules.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(120))
    #: The event that started the chain of rules this run belongs to (``event_id`` itself
    #: when no rule caused the event): the runs of one root are bounded (MAX_RUNS_PER_ROOT).
    root_event_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), default=RunStatus.PENDING)
    #: Per action: ``{"action", "outcome": "succeeded"|"failed", "result"|"error"}``.
    outcome: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDocument)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = _table_args(
        UniqueConstraint("rule_id", "event_id"),
        Index("ix_care_rule_runs_status_id", "status", "id"),
        Index("ix_care_rule_runs_event_id", "event_id"),
        Index("ix_care_rule_runs_root_event_id", "root_event_id"),
    )


class FollowUpStatus(enum.StrEnum):
    OPEN = "open"
    RETURNED = "returned"  # the customer purchased again
    LOST = "lost"          # the customer churned
    MERGED = "merged"      # its customer was merged into one with another open follow-up


class FollowUp(db.Model):
    """An at-risk customer on their owner's warning list, tracked until they return or
    are lost; its task is the owner's follow-up."""

    __tablename__ = "care_follow_ups"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("care_tasks.id", ondelete="SET NULL"))
    risk: Mapped[float] = mapped_column(Float)
    status: Mapped[FollowUpStatus] = mapped_column(_enum(FollowUpStatus),
                                                   default=FollowUpStatus.OPEN)
    opened_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = _table_args(
        Index("ix_care_follow_ups_customer_id_status", "customer_id", "status"),
        Index("ix_care_follow_ups_owner_id_status", "owner_id", "status"),
        Index("ix_care_follow_ups_status_opened_at", "status", "opened_at"),
    )


class IncidentStage(enum.StrEnum):
    """Crisis handling in stages; each move goes one stage forward."""

    WARNING = "warning"      # the signal is known: assess it
    RESPONSE = "response"    # acting on it: contain, inform the customers concerned
    RECOVERY = "recovery"    # restoring service and trust
    REVIEW = "review"        # the post-crisis review: what the plan should change
    CLOSED = "closed"        # reviewed (the review's lessons are recorded)


class Incident(db.Model):
    """A crisis handled in stages, opened by hand or from a core alert (at most one
    incident per alert)."""

    __tablename__ = "care_incidents"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200))
    #: The crisis type (the alert's kind when opened from one): which plan applies.
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(20))
    stage: Mapped[IncidentStage] = mapped_column(_enum(IncidentStage),
                                                 default=IncidentStage.WARNING)
    alert_id: Mapped[int | None] = mapped_column(
        ForeignKey("alerts.id", ondelete="SET NULL"), unique=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    #: ``[{"stage", "at", "note", "actor"}]``: each stage entered, with its note.
    timeline: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    #: The post-crisis review's conclusions (required to close).
    review: Mapped[str | None] = mapped_column(Text)
    opened_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    stage_changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = _table_args(
        Index("ix_care_incidents_opened_at_id", "opened_at", "id"),
        Index("ix_care_incidents_stage_opened_at_id", "stage", "opened_at", "id"),
    )


class Occasion(enum.StrEnum):
    BIRTHDAY = "birthday"
    ANNIVERSARY = "anniversary"  # whole years as a customer (customer_since, or created)


class AnnouncedOccasion(db.Model):
    """An occasion the ``care.occasions`` job announced (``customer.occasion.upcoming``):
    the key makes a second run for the same day announce nothing new. Rows of past days
    are deleted by the next run; erasure and merges delete a customer's rows."""

    __tablename__ = "care_announced_occasions"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    occasion: Mapped[Occasion] = mapped_column(_enum(Occasion), primary_key=True)
    #: The day of the occasion (in RAPPORT_TIMEZONE), not the birth date.
    on_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    announced_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = _table_args(
        Index("ix_care_announced_occasions_on_date", "on_date"),
    )
