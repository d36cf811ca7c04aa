"""The complaint process as a state machine (DOMAIN.md section 5).

RECEIVED -> CONFIRMED (type and cause) -> ANALYZING (root cause) -> SOLUTION_PROPOSED
(solution) -> IMPLEMENTING -> FEEDBACK (satisfaction 1-5, resolved in the customer's eyes)
-> CLOSED. Any open status may go to REJECTED (reason). REOPENED is a transition, not a
status: from FEEDBACK or CLOSED back to ANALYZING, counting a reopen.

``apply`` checks the move and its step data and changes the complaint; the caller stores
the timeline entry it returns. The table below is the single source of the rules: the
API lists a complaint's available transitions and their required fields from it.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from core.errors import ErrorCode, FieldError, UserError, camel

from plugins.complaints.errors import ComplaintErrorCode
from plugins.complaints.models import (
    OPEN_STATUSES, Complaint, ComplaintStatus, EntryKind, TimelineEntry,
)


class Transition(enum.StrEnum):
    CONFIRMED = "confirmed"
    ANALYZING = "analyzing"
    SOLUTION_PROPOSED = "solution_proposed"
    IMPLEMENTING = "implementing"
    FEEDBACK = "feedback"
    CLOSED = "closed"
    REJECTED = "rejected"
    REOPENED = "reopened"


@dataclass(frozen=True)
class Step:
    target: ComplaintStatus
    sources: tuple[ComplaintStatus, ...]
    required: tuple[str, ...] = ()


S = ComplaintStatus
STEPS: dict[Transition, Step] = {
    Transition.CONFIRMED: Step(S.CONFIRMED, (S.RECEIVED,), ("cause",)),
    Transition.ANALYZING: Step(S.ANALYZING, (S.CONFIRMED,), ("root_cause",)),
    Transition.SOLUTION_PROPOSED: Step(S.SOLUTION_PROPOSED, (S.ANALYZING,), ("solution",)),
    Transition.IMPLEMENTING: Step(S.IMPLEMENTING, (S.SOLUTION_PROPOSED,)),
    Transition.FEEDBACK: Step(S.FEEDBACK, (S.IMPLEMENTING,),
                              ("satisfaction", "customer_resolved")),
    Transition.CLOSED: Step(S.CLOSED, (S.FEEDBACK,)),
    Transition.REJECTED: Step(S.REJECTED, OPEN_STATUSES, ("reason",)),
    Transition.REOPENED: Step(S.ANALYZING, (S.FEEDBACK, S.CLOSED), ("reason",)),
}

#: Step data each transition may carry beyond its required fields.
OPTIONAL = {Transition.CONFIRMED: ("type",), Transition.REOPENED: ("root_cause",)}
STEP_FIELDS = ("type", "cause", "root_cause", "solution", "satisfaction", "customer_resolved",
               "reason")


def available(status: ComplaintStatus) -> list[Transition]:
    return [t for t, step in STEPS.items() if status in step.sources]


def apply(complaint: Complaint, transition: Transition, data: dict[str, Any],
          now: dt.datetime, actor_id: int | None, note: str | None) -> TimelineEntry:
    """Move ``complaint``; ``data`` holds validated step data (snake_case keys)."""
    step = STEPS[transition]
    if complaint.status not in step.sources:
        allowed = ", ".join(t.name for t in available(complaint.status)) or "none"
        hint = (" Reopen it first (REOPENED)." if complaint.status == S.CLOSED
                and transition != Transition.REOPENED else "")
        raise UserError.single(
            f"A {complaint.status.name} complaint cannot move to {transition.name}; "
            f"allowed: {allowed}.{hint}", ComplaintErrorCode.ILLEGAL_TRANSITION, "to")
    missing = [FieldError(f"{transition.name} needs {camel(name)}.",
                          ComplaintErrorCode.STEP_DATA_REQUIRED, camel(name))
               for name in step.required if data.get(name) is None]
    allowed_fields = {*step.required, *OPTIONAL.get(transition, ())}
    extra = [FieldError(f"{transition.name} takes no {camel(name)}.", ErrorCode.INVALID,
                          camel(name))
             for name in STEP_FIELDS if data.get(name) is not None and name not in allowed_fields]
    if missing or extra:
        raise UserError([*missing, *extra])
    step_data = {k: data[k] for k in STEP_FIELDS if data.get(k) is not None}
    source = complaint.status
    _record_step(complaint, transition, step_data, now)
    complaint.status = step.target
    complaint.updated_at = now
    if complaint.first_response_at is None and source == S.RECEIVED:
        complaint.first_response_at = now
    return TimelineEntry(complaint_id=complaint.id, kind=EntryKind.TRANSITION, occurred_at=now,
                         actor_id=actor_id, from_status=source, to_status=step.target,
                         transition=transition.value, note=note, step_data=step_data)


def _record_step(complaint: Complaint, transition: Transition, data: dict[str, Any],
                 now: dt.datetime) -> None:
    if transition == Transition.CONFIRMED:
        complaint.cause = data["cause"]
        complaint.type = data.get("type", complaint.type)
    elif transition == Transition.ANALYZING:
        complaint.root_cause = data["root_cause"]
    elif transition == Transition.SOLUTION_PROPOSED:
        complaint.solution = data["solution"]
    elif transition == Transition.FEEDBACK:
        complaint.satisfaction = data["satisfaction"]
        complaint.customer_resolved = data["customer_resolved"]
        complaint.resolved_at = now
    elif transition == Transition.CLOSED:
        complaint.closed_at = now
    elif transition == Transition.REJECTED:
        complaint.rejection_reason = data["reason"]
        complaint.resolved_at = complaint.closed_at = now
    elif transition == Transition.REOPENED:
        complaint.reopen_count += 1
        complaint.root_cause = data.get("root_cause", complaint.root_cause)
        complaint.resolved_at = complaint.closed_at = None
        complaint.satisfaction = complaint.customer_resolved = None
