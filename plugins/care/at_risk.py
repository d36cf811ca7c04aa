"""The at-risk loop: the churn-control routine of a customer-service team.

Each month the ``care.at_risk`` job (the ``care-at-risk`` schedule) asks the plugins that
hold churn scores (``rapport_care_at_risk_customers``; the churn plugin when enabled) for
the customers whose risk is at least ``minRisk``, and puts each on their owner's warning
list: one follow-up (a ``follow_up`` task for the owner) per customer, never a second
while one is open or within ``CYCLE_DAYS`` of the last. A follow-up is tracked until the
customer returns (a purchase after it was opened: ``returned``) or is lost (the customer
churned: ``lost``); closing it completes its task with that outcome. Relayed events
close follow-ups as they happen (``interaction.recorded`` of kind purchase, the purchases of an
``interactions.imported`` batch, ``customer.updated`` to churned); each run of the job
first closes whatever else ended (a status changed in bulk).

Customers without an active owner (their owner left) get no task: the job counts them
(``withoutOwner``) so a team leader gives them a new owner.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import and_, exists, func, insert, or_, select, union_all

from core.app import rapport
from core.changes import Event, record
from core.db import db, utcnow
from core.ids import decode_global_id, global_id
from core.jobs import JobKind, Progress
from core.models import Agent, Customer, CustomerStatus, Interaction
from core.services import transaction

from plugins.care.models import (
    FollowUp, FollowUpStatus, Task, TaskKind, TaskSource, TaskStatus,
)
from plugins.care.service import task_payload

JOB_KIND = "care.at_risk"
DEFAULT_MIN_RISK = 0.5
DEFAULT_DUE_IN_DAYS = 7
#: A customer gets no second follow-up within this many days of the last one.
CYCLE_DAYS = 25
#: Follow-ups opened per transaction (one audit entry each).
CHUNK = 500


class AtRiskParameters(Schema):
    min_risk = fields.Float(data_key="minRisk", load_default=DEFAULT_MIN_RISK,
                            validate=validate.Range(0.0, 1.0))
    due_in_days = fields.Integer(data_key="dueInDays", strict=True,
                                 load_default=DEFAULT_DUE_IN_DAYS,
                                 validate=validate.Range(0, 90))


def _risks(min_risk: float) -> Any:
    """Every provider's at-risk customers, one row each with the highest risk, or None."""
    answers = [q for q in rapport().hook.rapport_care_at_risk_customers(min_risk=min_risk)
               if q is not None]
    if not answers:
        return None
    combined = union_all(*answers).subquery() if len(answers) > 1 else answers[0].subquery()
    return (select(combined.c.customer_id, func.max(combined.c.risk).label("risk"))
            .group_by(combined.c.customer_id).subquery())


def close_follow_ups(customer_ids: Iterable[int] | None = None,
                     now: dt.datetime | None = None) -> dict[str, int]:
    """Close the open follow-ups whose customer returned or was lost (of ``customer_ids``
    only, or all), in the caller's transaction; their tasks are completed."""
    now = now or utcnow()
    bought_since = exists().where(
        Interaction.customer_id == FollowUp.customer_id, Interaction.kind == "purchase",
        Interaction.occurred_at > FollowUp.opened_at)
    churned = exists().where(Customer.id == FollowUp.customer_id,
                             Customer.status == CustomerStatus.CHURNED)
    query = select(FollowUp.id, FollowUp.task_id, bought_since.label("returned"),
                   churned.label("lost")).where(FollowUp.status == FollowUpStatus.OPEN)
    if customer_ids is not None:
        ids = list(customer_ids)
        if not ids:
            return {"returned": 0, "lost": 0}
        query = query.where(FollowUp.customer_id.in_(ids))
    found = [row for row in db.session.execute(query) if row.returned or row.lost]
    counts = {"returned": 0, "lost": 0}
    if not found:
        return counts
    outcome_of = {row.id: FollowUpStatus.RETURNED if row.returned else FollowUpStatus.LOST
                  for row in found}
    follow_ups = db.session.scalars(select(FollowUp).where(
        FollowUp.id.in_(list(outcome_of))).with_for_update()).all()
    task_ids = [f.task_id for f in follow_ups if f.task_id is not None]
    tasks = {t.id: t for t in db.session.scalars(select(Task).where(
        Task.id.in_(task_ids), Task.status == TaskStatus.OPEN).with_for_update())}
    events = []
    for follow_up in follow_ups:
        status = outcome_of[follow_up.id]
        follow_up.status, follow_up.closed_at = status, now
        counts[status.value] += 1
        task = tasks.get(follow_up.task_id or 0)
        if task is not None:
            task.status, task.outcome, task.closed_at, task.updated_at = (
                TaskStatus.DONE, status.value, now, now)
            events.append(Event("task.completed", global_id("Task", task.id),
                                task_payload(task)))
    if tasks:
        record(None, [global_id("Task", t) for t in tasks], None, events)
    return counts


def open_follow_ups(min_risk: float, due_in_days: int, now: dt.datetime | None = None
                    ) -> dict[str, Any]:
    """A follow-up and its task for each at-risk active customer without an open one."""
    now = now or utcnow()
    risks = _risks(min_risk)
    if risks is None:
        return {"opened": 0, "withoutOwner": 0, "scores": False}
    # One follow-up per customer per cycle: none while one is open, and none again for a
    # customer whose follow-up of this cycle already closed (the scores are the cycle's).
    already = exists().where(FollowUp.customer_id == risks.c.customer_id, or_(
        FollowUp.status == FollowUpStatus.OPEN,
        FollowUp.opened_at >= now - dt.timedelta(days=CYCLE_DAYS)))
    rows = db.session.execute(
        select(risks.c.customer_id, risks.c.risk, Customer.owner_id, Agent.active)
        .join(Customer, Customer.id == risks.c.customer_id)
        .outerjoin(Agent, Agent.id == Customer.owner_id)
        .where(Customer.status == CustomerStatus.ACTIVE, ~already)
        .order_by(risks.c.customer_id)).all()
    owned = [r for r in rows if r.owner_id is not None and r.active]
    # Days of the business calendar (RAPPORT_TIMEZONE), as advisors see them.
    due_on = now.astimezone(rapport().settings.tz).date() + dt.timedelta(days=due_in_days)
    opened = 0
    for start in range(0, len(owned), CHUNK):
        opened += _open_chunk(owned[start:start + CHUNK], due_on, now)
    return {"opened": opened, "withoutOwner": len(rows) - len(owned), "scores": True}


def _open_chunk(rows: list[Any], due_on: dt.date, now: dt.datetime) -> int:
    with transaction():
        # Two runs at once (a startJob during the scheduled run) both chose these
        # customers before either committed: lock them (in id order, no deadlock) and
        # drop those the other run has since given a follow-up.
        ids = [r.customer_id for r in rows]
        db.session.execute(select(Customer.id).where(Customer.id.in_(ids))
                           .order_by(Customer.id).with_for_update())
        taken = set(db.session.scalars(select(FollowUp.customer_id).where(
            FollowUp.customer_id.in_(ids), or_(
                FollowUp.status == FollowUpStatus.OPEN,
                FollowUp.opened_at >= now - dt.timedelta(days=CYCLE_DAYS)))))
        rows = [r for r in rows if r.customer_id not in taken]
        if not rows:
            return 0
        tasks = [Task(customer_id=r.customer_id, assignee_id=r.owner_id, kind=TaskKind.FOLLOW_UP,
                      title=f"Follow up: at risk of churning ({r.risk:.0%})", due_on=due_on,
                      status=TaskStatus.OPEN, source=TaskSource.AT_RISK, created_at=now,
                      updated_at=now) for r in rows]
        db.session.add_all(tasks)
        db.session.flush()
        db.session.execute(insert(FollowUp), [
            {"customer_id": r.customer_id, "owner_id": r.owner_id, "task_id": t.id,
             "risk": float(r.risk), "status": FollowUpStatus.OPEN, "opened_at": now}
            for r, t in zip(rows, tasks, strict=True)])
        record(None, [global_id("Task", t.id) for t in tasks], None,
               [Event("task.created", global_id("Task", t.id), task_payload(t)) for t in tasks])
    return len(tasks)


def run(parameters: Mapping[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """The ``care.at_risk`` job: close what ended, then open the new follow-ups."""
    now = utcnow()
    with transaction():
        closed = close_follow_ups(now=now)
    if progress is not None:
        progress(0.3, f"{closed['returned']} returned, {closed['lost']} lost")
    opened = open_follow_ups(parameters["min_risk"], parameters["due_in_days"], now)
    return {**closed, **opened}


def on_events(events: list[dict[str, Any]]) -> None:
    """Close follow-ups as purchases and churn are relayed (in the relay's transaction):
    one purchase (``interaction.recorded``), a batch of interactions (its id range), a
    customer turned churned (``customer.updated``)."""
    customers: set[int] = set()
    batches = []
    for event in events:
        data = event.get("data") or {}
        try:
            if ((event["type"] == "interaction.recorded" and data.get("kind") == "purchase")
                    or (event["type"] == "customer.updated"
                        and data.get("status") == "churned")):
                customers.add(decode_global_id(str(data.get("customerId")), "Customer")[1])
            elif event["type"] == "interactions.imported" and data.get("recorded"):
                batches.append((decode_global_id(str(data["firstId"]), "Interaction")[1],
                                decode_global_id(str(data["lastId"]), "Interaction")[1]))
        except (KeyError, ValueError):
            continue
    open_ones = FollowUp.status == FollowUpStatus.OPEN
    if batches:
        # Customers with an open follow-up who bought in one of the batches.
        bought = or_(*(Interaction.id.between(first, last) for first, last in batches))
        customers.update(db.session.scalars(
            select(FollowUp.customer_id).where(open_ones, exists().where(
                Interaction.customer_id == FollowUp.customer_id,
                Interaction.kind == "purchase", bought))))
    if customers and db.session.scalar(select(FollowUp.id).where(and_(
            open_ones, FollowUp.customer_id.in_(customers))).limit(1)) is not None:
        close_follow_ups(customers)


JOB_KINDS = [JobKind(kind=JOB_KIND, parameters=AtRiskParameters, domain="tasks", function=run,
                     description="The monthly at-risk run: a follow-up task for the owner of "
                                 "each customer whose churn risk is at least minRisk; closes "
                                 "follow-ups of customers who returned or were lost.")]
