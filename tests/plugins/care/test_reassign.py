"""Care follows a customer to its new owner (core's rapport_customers_reassigned): the
open tasks assigned to the previous owner and the open follow-ups move, other assignees'
tasks and closed ones stay; task.updated per moved task, audited with the move; the same
for a single updateCustomer(ownerId) and for a 200-customer move in bounded statements."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask
from sqlalchemy import select

from core.db import db, utcnow
from core.ids import global_id
from core.models import AuditEntry, OutboxEvent
from core.services import customers
from plugins.care.models import FollowUp, FollowUpStatus, Task, TaskKind, TaskSource, TaskStatus
from tests.conftest import GraphQL, count_statements
from tests.plugins.care.conftest import agent, customer, gid

REASSIGN = """mutation($input: ReassignCustomersInput!) { reassignCustomers(input: $input) {
  moved errors { field code } } }"""
FOLLOW_UPS = "{ careFollowUps { owner { id } opened open } }"
DUE = dt.date(2026, 12, 20)


def _task(customer_id: int | None, assignee: Any, status: TaskStatus = TaskStatus.OPEN,
          kind: TaskKind = TaskKind.CALL) -> Task:
    task = Task(customer_id=customer_id, assignee_id=assignee.id, kind=kind, title="Call",
                due_on=DUE, status=status, source=TaskSource.MANUAL)
    db.session.add(task)
    db.session.flush()
    return task


def _follow_up(customer_id: int, owner: Any, status: FollowUpStatus = FollowUpStatus.OPEN
               ) -> FollowUp:
    task = _task(customer_id, owner, TaskStatus.OPEN if status == FollowUpStatus.OPEN
                 else TaskStatus.DONE, kind=TaskKind.FOLLOW_UP)
    row = FollowUp(customer_id=customer_id, owner_id=owner.id, task_id=task.id, risk=0.8,
                   status=status, opened_at=utcnow())
    db.session.add(row)
    db.session.flush()
    return row


def _assignees(tasks: list[Task]) -> list[int | None]:
    db.session.expire_all()
    return [db.session.get(Task, t.id).assignee_id for t in tasks]  # type: ignore[union-attr]


def test_open_tasks_and_follow_ups_follow_the_customer(care_app: Flask, gql: GraphQL) -> None:
    old, new, other = agent("Old"), agent("New"), agent("Other")
    cleo, dora = customer("Cleo", old), customer("Dora", old)
    mine = _task(cleo.id, old)
    colleagues = _task(cleo.id, other)
    done = _task(cleo.id, old, TaskStatus.DONE)
    follow_up = _follow_up(dora.id, old)
    lost = _follow_up(cleo.id, old, FollowUpStatus.LOST)
    unrelated = _task(None, old)
    db.session.commit()
    data = gql(REASSIGN, {"input": {"fromOwnerId": gid("Agent", old),
                                    "toOwnerId": gid("Agent", new)}})["reassignCustomers"]
    assert data == {"moved": 2, "errors": []}
    assert _assignees([mine, colleagues, done, unrelated]) == [new.id, other.id, old.id, old.id]
    assert db.session.get(FollowUp, follow_up.id).owner_id == new.id  # type: ignore[union-attr]
    assert db.session.get(FollowUp, lost.id).owner_id == old.id  # type: ignore[union-attr]
    follow_up_task = db.session.get(Task, follow_up.task_id)
    assert follow_up_task is not None and _assignees([follow_up_task]) == [new.id]
    counts = {r["owner"]["id"]: (r["opened"], r["open"])
              for r in gql(FOLLOW_UPS)["careFollowUps"]}
    assert counts == {gid("Agent", new): (1, 1), gid("Agent", old): (1, 0)}
    events = db.session.scalars(select(OutboxEvent).where(
        OutboxEvent.type == "task.updated").order_by(OutboxEvent.id)).all()
    moved = {global_id("Task", mine.id), global_id("Task", follow_up_task.id)}
    assert {e.aggregate_id for e in events} == moved
    for event in events:
        assert event.data["assigneeId"] == gid("Agent", new)
        assert event.data["changedFields"] == ["assigneeId"]
    entries = db.session.scalars(select(AuditEntry).where(
        AuditEntry.operation == "reassignCustomers").order_by(AuditEntry.id)).all()
    care_entry = next(e for e in entries if e.changes and "tasksMoved" in e.changes)
    assert care_entry.changes == {"tasksMoved": [None, 2], "followUpsMoved": [None, 1]}
    assert moved <= set(care_entry.object_ids)


def test_a_single_owner_change_moves_the_work_too(care_app: Flask) -> None:
    old, new, other = agent("Old"), agent("New"), agent("Other")
    cleo = customer("Cleo", old)
    mine, colleagues = _task(cleo.id, old), _task(cleo.id, other)
    follow_up = _follow_up(cleo.id, old)
    db.session.commit()
    customers.update_customer(cleo.id, {"owner_id": new.id})
    assert _assignees([mine, colleagues]) == [new.id, other.id]
    assert db.session.get(FollowUp, follow_up.id).owner_id == new.id  # type: ignore[union-attr]
    customers.update_customer(cleo.id, {"owner_id": None})  # no owner: the work stays
    assert _assignees([mine]) == [new.id]


def test_a_refused_move_leaves_the_work_alone(care_app: Flask, gql: GraphQL) -> None:
    old, gone = agent("Old"), agent("Gone")
    from core.services import staff

    staff.update_agent(gone.id, {"active": False})
    cleo = customer("Cleo", old)
    mine = _task(cleo.id, old)
    db.session.commit()
    data = gql(REASSIGN, {"input": {"fromOwnerId": gid("Agent", old),
                                    "toOwnerId": gid("Agent", gone)}})["reassignCustomers"]
    assert data["errors"] == [{"field": "input.toOwnerId", "code": "NOT_ALLOWED"}]
    assert _assignees([mine]) == [old.id]


def test_moving_200_customers_with_their_tasks_is_bounded(care_app: Flask,
                                                          gql: GraphQL) -> None:
    old, new = agent("Old"), agent("New")
    small = customers.import_customers([{"external_id": f"s{i}", "owner_id": old.id}
                                        for i in range(10)])
    ids = sorted(small.recorded_ids.values())
    large_owner = agent("Large")
    large = customers.import_customers([{"external_id": f"l{i}", "owner_id": large_owner.id}
                                        for i in range(200)])
    large_ids = sorted(large.recorded_ids.values())
    owned = [(c, old.id) for c in ids] + [(c, large_owner.id) for c in large_ids]
    tasks = [Task(customer_id=c, assignee_id=a, kind=kind, title="Call", due_on=DUE,
                  status=TaskStatus.OPEN, source=TaskSource.MANUAL)
             for c, a in owned for kind in (TaskKind.CALL, TaskKind.FOLLOW_UP)]
    db.session.add_all(tasks)
    db.session.flush()
    db.session.add_all(FollowUp(customer_id=t.customer_id, owner_id=t.assignee_id,
                                task_id=t.id, risk=0.8, status=FollowUpStatus.OPEN)
                       for t in tasks if t.kind == TaskKind.FOLLOW_UP)
    db.session.commit()
    gql("{ tasks(first: 1) { totalCount } }")
    counts = []
    for owner in (old, large_owner):
        with count_statements(care_app) as statements:
            data = gql(REASSIGN, {"input": {"fromOwnerId": gid("Agent", owner),
                                            "toOwnerId": gid("Agent", new)}})
        assert data["reassignCustomers"]["errors"] == []
        counts.append(len(statements))
    assert counts[0] == counts[1], counts
    assert counts[1] <= 25, counts
    db.session.expire_all()
    assert set(db.session.scalars(select(Task.assignee_id))) == {new.id}
    assert set(db.session.scalars(select(FollowUp.owner_id))) == {new.id}
