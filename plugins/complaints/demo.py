"""Demo rows for ``rapport demo``: four months of complaints with a delivery crisis at the
end, so a newcomer finds complaints at every stage, SLA breaches, escalations and alerts.

About one complaint a day per hundred customers, spread over types, channels and
severities with realistic weights; older complaints have gone through the workflow
(mostly closed, some rejected, some reopened), recent ones are still being handled. On the
demo's last two days a logistics spike (a delivery crisis) adds a dozen complaints a day.
The escalation job and the spike detection then run as of the demo's "now": the spike
raises a ``complaint_spike`` alert. Everything goes through ``workflow.apply``, so the
rows are those the API would have written; core's bulk demo rows fire no hooks, and
neither do these.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from core.db import db
from core.models import Agent, Customer, Interaction

from plugins.complaints import detection, service, sla, workflow
from plugins.complaints.config import complaint_settings
from plugins.complaints.models import Complaint, EntryKind, Severity, TimelineEntry
from plugins.complaints.stats import local_midnight

HISTORY_DAYS = 120
SPIKE_DAYS = 2
SPIKE_PER_DAY = 12
T = workflow.Transition

TYPES = [("product_quality", 0.3), ("logistics", 0.2), ("after_sales", 0.2), ("price", 0.12),
         ("staff_attitude", 0.12), ("other", 0.06)]
CHANNELS = [("phone", 0.35), ("email", 0.25), ("web", 0.2), ("social_media", 0.12),
            ("in_person", 0.08)]
SEVERITIES = [(Severity.LOW, 0.3), (Severity.MEDIUM, 0.45), (Severity.HIGH, 0.2),
              (Severity.CRITICAL, 0.05)]
SUBJECTS = {
    "product_quality": ["Device stopped working", "Item arrived damaged", "Poor finish"],
    "logistics": ["Parcel late", "Parcel lost", "Wrong item delivered"],
    "after_sales": ["Repair takes too long", "Return refused", "Exchange not processed"],
    "price": ["Charged twice", "Unexpected fee", "Promotion not applied"],
    "staff_attitude": ["Rude call-centre agent", "No one called back", "Misleading advice"],
    "other": ["Website keeps logging me out", "Newsletter after unsubscribing"],
}
CAUSE_OF = {"product_quality": "quality_defect", "logistics": "internal_management",
            "after_sales": "internal_management", "price": "expectations_too_high",
            "staff_attitude": "poor_communication", "other": "other"}


def _pick(rng: random.Random, pairs: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


def seed_demo(rng: random.Random, customers: Sequence[Customer], as_of: dt.datetime) -> None:
    if not customers:
        return
    agents = db.session.scalars(select(Agent.id).order_by(Agent.id)).all()
    rate = max(0.5, len(customers) / 100)
    tz = complaint_settings().timezone
    today = as_of.astimezone(tz).date()
    for back in range(HISTORY_DAYS, -1, -1):
        midnight = local_midnight(today - dt.timedelta(days=back), tz)
        length = min(dt.timedelta(days=1), as_of - midnight)
        count = detection.poisson_variate(rng, rate)
        spike = back < SPIKE_DAYS
        if spike:
            count += SPIKE_PER_DAY
        for n in range(count):
            filed_at = midnight + length * rng.random()
            type_ = "logistics" if spike and n < SPIKE_PER_DAY else _pick(rng, TYPES)
            _complaint(rng, rng.choice(customers), type_, filed_at, agents, as_of)
    service.escalate_due(as_of)
    detection.raise_spike_alerts(as_of)


def _complaint(rng: random.Random, customer: Customer, type_: str, filed_at: dt.datetime,
               agents: Sequence[int], as_of: dt.datetime) -> None:
    severity = _pick(rng, SEVERITIES)
    channel = _pick(rng, CHANNELS)
    first_due, resolution_due = sla.due_times(severity, filed_at, complaint_settings().calendar)
    assignee = rng.choice(agents) if agents and rng.random() < 0.85 else None
    interaction = Interaction(customer_id=customer.id, kind="complaint", channel=channel,
                              occurred_at=filed_at, payload={})
    db.session.add(interaction)
    db.session.flush()
    complaint = Complaint(
        customer_id=customer.id, type=type_, channel=channel, severity=severity,
        status=workflow.S.RECEIVED, subject=rng.choice(SUBJECTS[type_]),
        description="Demo complaint.", tags=[], assignee_id=assignee, reopen_count=0,
        interaction_id=interaction.id, filed_at=filed_at, first_response_due=first_due,
        resolution_due=resolution_due, updated_at=filed_at)
    db.session.add(complaint)
    db.session.flush()
    interaction.payload = {"complaint_id": complaint.id, "type": type_,
                           "severity": severity.value}
    db.session.add(TimelineEntry(complaint_id=complaint.id, kind=EntryKind.TRANSITION,
                                 occurred_at=filed_at, to_status=workflow.S.RECEIVED,
                                 transition="received", step_data={"severity": severity.value}))
    moment = filed_at
    for transition, data, mean_hours in _path(rng, type_):
        moment += dt.timedelta(hours=rng.expovariate(1 / mean_hours))
        if moment > as_of:
            break
        db.session.add(workflow.apply(complaint, transition, data, moment, assignee, None))


def _path(rng: random.Random, type_: str
          ) -> list[tuple[workflow.Transition, dict[str, Any], float]]:
    """The steps this complaint will take, each with the mean hours it waits before it."""
    if rng.random() < 0.07:
        return [(T.REJECTED, {"reason": "Outside the warranty terms"}, 6)]
    happy = rng.random() < 0.8
    steps: list[tuple[workflow.Transition, dict[str, Any], float]] = [
        (T.CONFIRMED, {"cause": CAUSE_OF[type_]}, 5),
        (T.ANALYZING, {"root_cause": "Established with the team concerned"}, 12),
        (T.SOLUTION_PROPOSED, {"solution": "Replacement, refund or apology as fits"}, 18),
        (T.IMPLEMENTING, {}, 10),
        (T.FEEDBACK, {"satisfaction": rng.choice([3, 4, 4, 5, 5]) if happy
                      else rng.choice([1, 2, 2, 3]), "customer_resolved": happy}, 30),
    ]
    if not happy and rng.random() < 0.6:
        steps += [
            (T.REOPENED, {"reason": "The customer is not satisfied"}, 24),
            (T.SOLUTION_PROPOSED, {"solution": "Goodwill gesture and a manager's call"}, 12),
            (T.IMPLEMENTING, {}, 8),
            (T.FEEDBACK, {"satisfaction": rng.choice([3, 4]), "customer_resolved": True}, 24),
        ]
    return [*steps, (T.CLOSED, {}, 48)]
