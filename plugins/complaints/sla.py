"""SLA targets per severity, due times (optionally in business hours) and breach state.

Due times are computed once, when a complaint is filed, from the policy then in force and
stored; a later policy change applies to complaints filed after it. Breach is computed
when read: a target is breached when it was met late, or is still unmet and its due time
has passed. Nothing stale is stored.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.sql import ColumnElement

from core.db import db

from plugins.complaints.config import BusinessCalendar
from plugins.complaints.models import Complaint, Severity, SlaPolicy


@dataclass(frozen=True)
class Targets:
    first_response_hours: int
    resolution_hours: int
    business_hours: bool


#: Used for a severity without a ``complaints_sla_policy`` row. Critical complaints run
#: on the wall clock; the others on the business calendar when one is configured.
DEFAULT_TARGETS = {
    Severity.CRITICAL: Targets(1, 24, False),
    Severity.HIGH: Targets(4, 72, True),
    Severity.MEDIUM: Targets(8, 120, True),
    Severity.LOW: Targets(24, 240, True),
}


def targets(severity: Severity) -> Targets:
    row = db.session.get(SlaPolicy, severity)
    if row is None:
        return DEFAULT_TARGETS[severity]
    return Targets(row.first_response_hours, row.resolution_hours, row.business_hours)


def policy() -> dict[Severity, Targets]:
    stored = {row.severity: Targets(row.first_response_hours, row.resolution_hours,
                                    row.business_hours)
              for row in db.session.scalars(select(SlaPolicy))}
    return {s: stored.get(s, DEFAULT_TARGETS[s]) for s in Severity}


def add_hours(start: dt.datetime, hours: float, calendar: BusinessCalendar | None
              ) -> dt.datetime:
    """``start`` plus ``hours`` of working time (wall-clock time without a calendar)."""
    if calendar is None:
        return start + dt.timedelta(hours=hours)
    left = dt.timedelta(hours=hours)
    day = start.astimezone(calendar.tz).date()
    while True:
        if day.weekday() in calendar.weekdays:
            opens = dt.datetime.combine(day, calendar.opens, tzinfo=calendar.tz)
            closes = dt.datetime.combine(day, calendar.closes, tzinfo=calendar.tz)
            begin = max(opens, start.astimezone(calendar.tz))
            if begin < closes:
                available = closes - begin
                if left <= available:
                    return (begin + left).astimezone(dt.timezone.utc)
                left -= available
        day += dt.timedelta(days=1)


def due_times(severity: Severity, filed_at: dt.datetime, calendar: BusinessCalendar | None
              ) -> tuple[dt.datetime, dt.datetime]:
    target = targets(severity)
    clock = calendar if target.business_hours else None
    return (add_hours(filed_at, target.first_response_hours, clock),
            add_hours(filed_at, target.resolution_hours, clock))


@dataclass(frozen=True)
class SlaState:
    first_response_due: dt.datetime
    resolution_due: dt.datetime
    first_response_breached: bool
    resolution_breached: bool

    @property
    def breached(self) -> bool:
        return self.first_response_breached or self.resolution_breached


def state(complaint: Complaint, now: dt.datetime) -> SlaState:
    responded = complaint.first_response_at or now
    resolved = complaint.resolved_at or now
    return SlaState(complaint.first_response_due, complaint.resolution_due,
                    responded > complaint.first_response_due,
                    resolved > complaint.resolution_due)


def overdue_condition(now: dt.datetime) -> ColumnElement[bool]:
    """Still unmet and past due: what the escalation job and ``overdue: true`` select."""
    return or_(and_(Complaint.first_response_at.is_(None), Complaint.first_response_due < now),
               and_(Complaint.resolved_at.is_(None), Complaint.resolution_due < now))


def breached_condition(now: dt.datetime) -> ColumnElement[bool]:
    """Met late, or still unmet and past due (``SlaState.breached`` in SQL)."""
    return or_(Complaint.first_response_at > Complaint.first_response_due,
               Complaint.resolved_at > Complaint.resolution_due,
               overdue_condition(now))
