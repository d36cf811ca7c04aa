"""Task operations: create, update, complete, cancel; the list query; merge and erasure.

Plain functions, one transaction each (audited and evented through
``core.changes.record``): the GraphQL mutations, rule actions and the at-risk job call
them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, case, delete, literal, select, update

from core.changes import Event, record
from core.db import db, utcnow
from core.errors import UserError, camel
from core.ids import global_id
from core.models import Agent, Customer, CustomerStatus
from core.services import load, not_found, transaction

from plugins.care import schemas
from plugins.care.models import (
    AnnouncedOccasion, FollowUp, FollowUpStatus, Task, TaskKind, TaskSource, TaskStatus,
)


class TaskErrorCode:
    ASSIGNEE_REQUIRED = "ASSIGNEE_REQUIRED"
    AGENT_INACTIVE = "AGENT_INACTIVE"
    CUSTOMER_ERASED = "CUSTOMER_ERASED"
    ALREADY_CLOSED = "ALREADY_CLOSED"


TASK_ERROR_CODES = [v for k, v in vars(TaskErrorCode).items() if k.isupper()]
ERASED_TEXT = "(erased)"


def _gid(kind: str, ident: int | None) -> str | None:
    return None if ident is None else global_id(kind, ident)


def _agent(agent_id: int, field: str) -> Agent:
    agent = db.session.get(Agent, agent_id)
    if agent is None:
        raise not_found("agent", agent_id, field, type_name="Agent")
    if not agent.active:
        raise UserError.single("The agent is no longer active; choose another assignee.",
                               TaskErrorCode.AGENT_INACTIVE, field)
    return agent


def _task(task_id: int) -> Task:
    found = db.session.scalar(select(Task).where(Task.id == task_id).with_for_update())
    if found is None:
        raise not_found("task", task_id, type_name="Task")
    return found


def task_payload(task: Task) -> dict[str, Any]:
    """The ids and facts of a task events carry (never its title or outcome: free text)."""
    return {"taskId": global_id("Task", task.id), "customerId": _gid("Customer", task.customer_id),
            "assigneeId": _gid("Agent", task.assignee_id), "kind": task.kind.value,
            "dueOn": task.due_on.isoformat(), "status": task.status.value,
            "source": task.source.value, "ruleId": _gid("Rule", task.rule_id)}


def _objects(task: Task) -> list[str]:
    return [global_id("Task", task.id)] + (
        [global_id("Customer", task.customer_id)] if task.customer_id else [])


def create_task(raw: Mapping[str, Any], *, source: TaskSource = TaskSource.MANUAL,
                rule_id: int | None = None) -> Task:
    """A new open task; the assignee defaults to the customer's owner."""
    data = load(schemas.CreateTaskSchema(), raw)
    with transaction():
        customer = None
        if data.get("customer_id") is not None:
            customer = db.session.get(Customer, data["customer_id"])
            if customer is None:
                raise not_found("customer", data["customer_id"], "customerId",
                                type_name="Customer")
            if customer.status == CustomerStatus.ERASED:
                raise UserError.single("The customer is erased; no task can be made for it.",
                                       TaskErrorCode.CUSTOMER_ERASED, "customerId")
        assignee_id = data.get("assignee_id")
        if assignee_id is None and customer is not None:
            assignee_id = customer.owner_id
        if assignee_id is None:
            raise UserError.single(
                "Name an assignee: the task has no customer with an owner to default to.",
                TaskErrorCode.ASSIGNEE_REQUIRED, "assigneeId")
        _agent(assignee_id, "assigneeId")
        now = utcnow()
        task = Task(customer_id=customer.id if customer else None, assignee_id=assignee_id,
                    kind=TaskKind(data["kind"]), title=data["title"], due_on=data["due_on"],
                    status=TaskStatus.OPEN, source=source, rule_id=rule_id, created_at=now,
                    updated_at=now)
        db.session.add(task)
        db.session.flush()
        record(None, _objects(task), None, [Event("task.created", global_id("Task", task.id),
                                                  task_payload(task))])
    return task


_UPDATABLE = ("assignee_id", "kind", "title", "due_on")


def update_task(raw: Mapping[str, Any]) -> Task:
    """Reassign, re-date, rename or re-kind an open task."""
    data = load(schemas.UpdateTaskSchema(), raw)
    with transaction():
        task = _task(data["id"])
        _still_open(task)
        if "assignee_id" in data:
            _agent(data["assignee_id"], "assigneeId")
        changed: dict[str, list[Any]] = {}
        for name in _UPDATABLE:
            if name not in data:
                continue
            value = TaskKind(data[name]) if name == "kind" else data[name]
            before = getattr(task, name)
            if before != value:
                setattr(task, name, value)
                changed[name] = [before, value]
        if changed:
            task.updated_at = utcnow()
            record(None, _objects(task), None, [Event(
                "task.updated", global_id("Task", task.id),
                {**task_payload(task), "changedFields": sorted(camel(n) for n in changed)})])
    return task


def _still_open(task: Task) -> None:
    if task.status is not TaskStatus.OPEN:
        raise UserError.single(f"The task is already {task.status.value}.",
                               TaskErrorCode.ALREADY_CLOSED, "id")


def close_task(raw: Mapping[str, Any], status: TaskStatus, *,
               now: dt.datetime | None = None) -> Task:
    """Complete (``DONE``) or cancel an open task, with an optional outcome note."""
    data = load(schemas.CloseTaskSchema(), raw)
    with transaction():
        task = _task(data["id"])
        _still_open(task)
        _close(task, status, data.get("outcome"), now or utcnow())
    return task


def _close(task: Task, status: TaskStatus, outcome: str | None, now: dt.datetime) -> None:
    task.status, task.outcome, task.closed_at, task.updated_at = status, outcome, now, now
    verb = "completed" if status is TaskStatus.DONE else "cancelled"
    record(None, _objects(task), None, [Event(f"task.{verb}", global_id("Task", task.id),
                                              task_payload(task))])


def tasks_query(raw: Mapping[str, Any]) -> Select[Any]:
    """Tasks matching a filter (``TaskFilterSchema``), unordered."""
    data = load(schemas.TaskFilterSchema(), raw)
    query = select(Task)
    if "assignee_id" in data:
        query = query.where(Task.assignee_id == data["assignee_id"])
    if "customer_id" in data:
        query = query.where(Task.customer_id == data["customer_id"])
    if data.get("status"):
        query = query.where(Task.status.in_([TaskStatus(s) for s in data["status"]]))
    if "due_before" in data:
        query = query.where(Task.due_on < data["due_before"])
    return query


# --- Other plugins' and core's events on customers ----------------------------------------------


def merge_customers(survivor_id: int, merged_ids: list[int]) -> None:
    """Re-key the merged customers' tasks and follow-ups to the survivor, which keeps ONE
    open follow-up: its own, or else the oldest. The others close as ``merged`` and
    their open tasks are cancelled with a note (audited, ``task.cancelled``), so the
    owners' counts (``careFollowUps``) count the customer once."""
    open_ones = db.session.scalars(select(FollowUp).where(
        FollowUp.customer_id.in_([survivor_id, *merged_ids]),
        FollowUp.status == FollowUpStatus.OPEN).order_by(FollowUp.id).with_for_update()).all()
    kept = min(open_ones, key=lambda f: (f.customer_id != survivor_id, f.opened_at, f.id),
               default=None)
    for model in (Task, FollowUp):
        db.session.execute(update(model).where(model.customer_id.in_(merged_ids))
                           .values(customer_id=survivor_id))
    # The merged customers' announced occasions go (their rows go with them anyway).
    db.session.execute(delete(AnnouncedOccasion).where(
        AnnouncedOccasion.customer_id.in_(merged_ids)))
    if len(open_ones) < 2:
        return
    extra = [f for f in open_ones if f is not kept]
    now = utcnow()
    note = "Cancelled: customers merged; the customer's other follow-up goes on."
    task_ids = [f.task_id for f in extra if f.task_id is not None]
    tasks = db.session.scalars(select(Task).where(
        Task.id.in_(task_ids), Task.status == TaskStatus.OPEN).order_by(Task.id)
        .with_for_update()).all() if task_ids else []
    for follow_up in extra:
        follow_up.status, follow_up.closed_at = FollowUpStatus.MERGED, now
    for task in tasks:
        task.status, task.outcome, task.closed_at, task.updated_at = (
            TaskStatus.CANCELLED, note, now, now)
    db.session.flush()
    record(None, [global_id("Customer", survivor_id),
                  *(global_id("Task", t.id) for t in tasks)], None,
           [Event("task.cancelled", global_id("Task", t.id), task_payload(t)) for t in tasks])


def reassign_customers(assignments: Mapping[int, int],
                       previous: Mapping[int, int | None]) -> dict[str, int]:
    """The customers got new owners (core's ``rapport_customers_reassigned``): their open
    tasks assigned to the previous owner (or to nobody) go to the new owner, other
    assignees' tasks stay; their open follow-ups go to the new owner, so ``careFollowUps``
    counts them there. In the move's transaction: a ``task.updated`` event per task and
    one audit entry for the batch. A few statements whatever the number of customers."""
    if not assignments:
        return {"tasksMoved": 0, "followUpsMoved": 0}
    customer_ids = sorted(assignments)
    tasks = [t for t in db.session.scalars(select(Task).where(
        Task.customer_id.in_(customer_ids), Task.status == TaskStatus.OPEN)
        .order_by(Task.id).with_for_update())
        if t.customer_id is not None and t.assignee_id == previous.get(t.customer_id)
        and t.assignee_id != assignments[t.customer_id]]
    now = utcnow()
    for task in tasks:
        task.assignee_id = assignments[task.customer_id]  # type: ignore[index]
        task.updated_at = now
    follow_ups = db.session.execute(select(FollowUp.id, FollowUp.customer_id).where(
        FollowUp.customer_id.in_(customer_ids), FollowUp.status == FollowUpStatus.OPEN,
        FollowUp.owner_id.is_distinct_from(_new_owner(assignments, FollowUp.customer_id)))
    ).all()
    if follow_ups:
        db.session.execute(
            update(FollowUp).where(FollowUp.id.in_([f.id for f in follow_ups]))
            .values(owner_id=_new_owner(assignments, FollowUp.customer_id))
            .execution_options(synchronize_session=False))
        for row in list(db.session.identity_map.values()):
            if isinstance(row, FollowUp) and row.customer_id in assignments:
                db.session.expire(row, ["owner_id"])
    db.session.flush()
    if tasks or follow_ups:
        moved_customers = sorted({t.customer_id for t in tasks if t.customer_id is not None}
                                 | {f.customer_id for f in follow_ups})
        record(None, [*(global_id("Task", t.id) for t in tasks),
                      *(global_id("Customer", c) for c in moved_customers)],
               {"tasksMoved": [None, len(tasks)], "followUpsMoved": [None, len(follow_ups)]},
               [Event("task.updated", global_id("Task", t.id),
                      {**task_payload(t), "changedFields": ["assigneeId"]}) for t in tasks])
    return {"tasksMoved": len(tasks), "followUpsMoved": len(follow_ups)}


def _new_owner(assignments: Mapping[int, int], customer_id: Any) -> Any:
    """The new owner of each row's customer, as SQL (a literal when there is one)."""
    owners = set(assignments.values())
    if len(owners) == 1:
        return literal(next(iter(owners)))
    return case(dict(assignments), value=customer_id)


def erase_customer(customer_id: int) -> dict[str, int]:
    """Blank the free text of the customer's tasks (titles and outcomes may name the
    person) and cancel the open ones; the rows stay for the advisors' counts."""
    now = utcnow()
    open_ids = list(db.session.scalars(select(Task.id).where(
        Task.customer_id == customer_id, Task.status == TaskStatus.OPEN)))
    redacted = db.session.execute(update(Task).where(Task.customer_id == customer_id).values(
        title=ERASED_TEXT, outcome=None, updated_at=now)).rowcount  # type: ignore[attr-defined]
    if open_ids:
        db.session.execute(update(Task).where(Task.id.in_(open_ids)).values(
            status=TaskStatus.CANCELLED, closed_at=now))
    # An erased customer neither returns nor churns: an open follow-up would stay open
    # (and counted in careFollowUps) for ever. It ends as lost.
    closed = db.session.execute(update(FollowUp).where(
        FollowUp.customer_id == customer_id, FollowUp.status == FollowUpStatus.OPEN).values(
        status=FollowUpStatus.LOST, closed_at=now)).rowcount  # type: ignore[attr-defined]
    # Announced occasions reveal a birthday's day: they go.
    db.session.execute(delete(AnnouncedOccasion).where(
        AnnouncedOccasion.customer_id == customer_id))
    return {"tasksRedacted": int(redacted or 0), "tasksCancelled": len(open_ids),
            "followUpsClosed": int(closed or 0)}


def export_customer(customer_id: int) -> dict[str, Any] | None:
    """The customer's tasks for a data export (camelCase keys, global ids)."""
    tasks = db.session.scalars(select(Task).where(Task.customer_id == customer_id)
                               .order_by(Task.due_on, Task.id)).all()
    if not tasks:
        return None
    return {"tasks": [{**task_payload(t), "title": t.title, "outcome": t.outcome,
                       "createdAt": t.created_at.isoformat(),
                       "closedAt": None if t.closed_at is None else t.closed_at.isoformat()}
                      for t in tasks]}
