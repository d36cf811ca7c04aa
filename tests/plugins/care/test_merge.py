"""Merging customers who each have an open at-risk follow-up (a review finding): the survivor keeps one, the other closes as merged and its task is
cancelled, so the owners' counts count the customer once."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from core.db import db, utcnow
from core.models import OutboxEvent
from core.services import customers as core_customers
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.plugins.care.conftest import agent, customer, gid


def test_merge_keeps_one_open_follow_up(make_app: AppFactory) -> None:
    from plugins.care import service
    from plugins.care.models import FollowUp, FollowUpStatus, Task, TaskSource, TaskStatus

    app = make_app(enabled=["care"])
    with app.app_context():
        owner = agent()
        keep, dup, other = customer("Keep", owner), customer("Dup", owner), customer("Al", owner)
        tasks = {}
        # The duplicate's follow-up is the older one: the survivor's own still wins.
        for client, age in ((dup, 3), (keep, 1), (other, 2)):
            task = service.create_task({"customer_id": client.id, "kind": "follow_up",
                                        "title": "Call", "due_on": "2030-01-01"},
                                       source=TaskSource.AT_RISK)
            tasks[client.id] = task.id
            db.session.add(FollowUp(customer_id=client.id, owner_id=owner.id, risk=0.7,
                                    task_id=task.id, status=FollowUpStatus.OPEN,
                                    opened_at=utcnow() - dt.timedelta(days=age)))
        db.session.commit()
        core_customers.merge_customers(keep.id, [dup.id])
        db.session.expire_all()

        follow_ups = {f.task_id: f.status for f in FollowUp.query.filter_by(
            customer_id=keep.id)}
        assert follow_ups == {tasks[keep.id]: FollowUpStatus.OPEN,
                              tasks[dup.id]: FollowUpStatus.MERGED}
        kept, closed = db.session.get(Task, tasks[keep.id]), db.session.get(Task, tasks[dup.id])
        assert kept.status is TaskStatus.OPEN
        assert closed.status is TaskStatus.CANCELLED and closed.customer_id == keep.id
        assert closed.outcome and "merged" in closed.outcome
        assert db.session.scalar(select(OutboxEvent.type).where(
            OutboxEvent.aggregate_id == gid("Task", closed),
            OutboxEvent.type == "task.cancelled")) == "task.cancelled"

        summary = GraphQL(app, admin_token(app))(
            "{ careFollowUps { owner { id } opened open returned lost merged } }")
        assert summary["careFollowUps"] == [{"owner": {"id": gid("Agent", owner)},
                                             "opened": 3, "open": 2, "returned": 0,
                                             "lost": 0, "merged": 1}]


def test_merge_without_survivor_follow_up_keeps_the_oldest(make_app: AppFactory) -> None:
    from plugins.care.models import FollowUp, FollowUpStatus

    app = make_app(enabled=["care"])
    with app.app_context():
        owner = agent()
        keep, old, new = customer("Keep", owner), customer("Old", owner), customer("New", owner)
        for client, age in ((new, 1), (old, 5)):
            db.session.add(FollowUp(customer_id=client.id, owner_id=owner.id, risk=0.7,
                                    status=FollowUpStatus.OPEN,
                                    opened_at=utcnow() - dt.timedelta(days=age)))
        db.session.commit()
        oldest = FollowUp.query.filter_by(customer_id=old.id).one().id
        core_customers.merge_customers(keep.id, [new.id, old.id])
        db.session.expire_all()
        assert dict(db.session.execute(select(FollowUp.id, FollowUp.status).where(
            FollowUp.customer_id == keep.id, FollowUp.status == FollowUpStatus.OPEN))
            .tuples().all()) == {oldest: FollowUpStatus.OPEN}
        assert FollowUp.query.filter_by(status=FollowUpStatus.MERGED).count() == 1
