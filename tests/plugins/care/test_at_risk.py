"""The at-risk loop: the care.at_risk job opens one follow-up (a follow_up task for the
owner) per at-risk customer from the churn plugin's stored scores, never a second while
one is open, counts customers without an active owner, and closes follow-ups as
returned (a purchase) or lost (churned), from relayed events and in the next run."""

from __future__ import annotations

import datetime as dt

from flask import Flask
from sqlalchemy import select

from core import outbox
from core.db import db, utcnow
from core.jobs import run_here
from core.models import CustomerStatus
from core.scheduler import configured_schedules
from core.services import interactions
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.plugins.care.conftest import agent, customer, gid


class _Quiet:
    def __call__(self, fraction: float, message: str = "") -> None:
        pass


def _score(version_id: int, customer_id: int, risk: float) -> None:
    from plugins.churn.models import ChurnScore

    db.session.add(ChurnScore(customer_id=customer_id, model_version_id=version_id, risk=risk,
                              priority=risk))


def test_monthly_follow_ups_from_churn_scores(make_app: AppFactory) -> None:
    from plugins.care import at_risk
    from plugins.care.models import FollowUp, FollowUpStatus, Task, TaskStatus
    from plugins.churn.models import ChurnModelVersion

    app: Flask = make_app(enabled=["care", "churn"])
    with app.app_context():
        ada, bo = agent(), agent("Bo")
        risky, safe, returning, orphan = (customer("Risky", ada), customer("Safe", ada),
                                          customer("Returning", bo), customer("Orphan"))
        version = ChurnModelVersion(as_of=utcnow(), kind="bgnbd+gg")
        db.session.add(version)
        db.session.flush()
        for client, risk in ((risky, 0.8), (safe, 0.1), (returning, 0.6), (orphan, 0.9)):
            _score(version.id, client.id, risk)
        db.session.commit()
        assert "care-at-risk" in configured_schedules()

        result = at_risk.run({"min_risk": 0.5, "due_in_days": 7})
        assert result == {"returned": 0, "lost": 0, "opened": 2, "withoutOwner": 1,
                          "scores": True}
        tasks = {t.customer_id: t for t in Task.query}
        assert set(tasks) == {risky.id, returning.id}
        assert tasks[risky.id].assignee_id == ada.id
        assert tasks[risky.id].due_on == utcnow().date() + dt.timedelta(days=7)  # UTC here
        # No second follow-up while one is open.
        assert at_risk.run({"min_risk": 0.5, "due_in_days": 7})["opened"] == 0

        # A purchase (relayed) returns the customer; churn loses the other.
        interactions.record_interaction({
            "customer_id": returning.id, "kind": "purchase", "amount": "10", "currency": "USD",
            "occurred_at": (utcnow() + dt.timedelta(seconds=1)).isoformat()})
        outbox.relay_all()
        risky.status = CustomerStatus.CHURNED
        db.session.commit()
        assert FollowUp.query.filter_by(customer_id=returning.id).one().status is \
            FollowUpStatus.RETURNED  # closed by the relayed purchase, before any run
        # The closed ones do not come back within the month (the scores are the month's).
        assert at_risk.run({"min_risk": 0.5, "due_in_days": 7})["lost"] == 1
        assert Task.query.count() == 2
        statuses = dict(db.session.execute(select(FollowUp.customer_id, FollowUp.status)).all())
        assert statuses == {returning.id: FollowUpStatus.RETURNED, risky.id: FollowUpStatus.LOST}
        outcomes = {t.customer_id: (t.status, t.outcome) for t in Task.query}
        assert outcomes == {returning.id: (TaskStatus.DONE, "returned"),
                            risky.id: (TaskStatus.DONE, "lost")}

        gql = GraphQL(app, admin_token(app))
        summary = gql("{ careFollowUps { owner { id } opened open returned lost merged } }")
        assert sorted(summary["careFollowUps"], key=lambda r: r["owner"]["id"]) == sorted([
            {"owner": {"id": gid("Agent", ada)}, "opened": 1, "open": 0, "returned": 0,
             "lost": 1, "merged": 0},
            {"owner": {"id": gid("Agent", bo)}, "opened": 1, "open": 0, "returned": 1,
             "lost": 0, "merged": 0}], key=lambda r: r["owner"]["id"])


def test_without_scores_the_job_opens_nothing(make_app: AppFactory) -> None:
    from core.cli import cli

    app = make_app(enabled=["care"])
    with app.app_context():
        customer("Risky", agent())
        result = run_here("care.at_risk", {"minRisk": 0.2}, _Quiet())
        assert result == {"returned": 0, "lost": 0, "opened": 0, "withoutOwner": 0,
                          "scores": False}
    runner = app.test_cli_runner()
    shown = runner.invoke(cli, ["care", "at-risk", "--min-risk", "0.2"])
    assert shown.exit_code == 0, shown.output
    assert "no churn scores" in shown.output and "0 follow-ups opened" in shown.output
    assert runner.invoke(cli, ["care", "at-risk", "--min-risk", "2"]).exit_code == 2
    ran = runner.invoke(cli, ["care", "rules"])
    assert ran.exit_code == 0 and "0 rule runs succeeded" in ran.output


def test_an_imported_batch_of_purchases_returns_customers(make_app: AppFactory) -> None:
    from plugins.care import at_risk
    from plugins.care.models import FollowUp, FollowUpStatus

    app = make_app(enabled=["care"])
    with app.app_context():
        owner = agent()
        back, away = customer("Back", owner), customer("Away", owner)
        for client in (back, away):
            db.session.add(FollowUp(customer_id=client.id, owner_id=owner.id, risk=0.7,
                                    status=FollowUpStatus.OPEN,
                                    opened_at=utcnow() - dt.timedelta(days=3)))
        db.session.commit()
        outbox.relay_all()
        interactions.record_interactions([
            {"customer_id": back.id, "kind": "purchase", "amount": "5", "currency": "USD",
             "occurred_at": utcnow().isoformat()},
            {"customer_id": away.id, "kind": "call", "occurred_at": utcnow().isoformat()}])
        outbox.relay_all()
        statuses = dict(db.session.execute(select(FollowUp.customer_id, FollowUp.status))
                        .tuples().all())
        assert statuses == {back.id: FollowUpStatus.RETURNED, away.id: FollowUpStatus.OPEN}
        assert at_risk.close_follow_ups() == {"returned": 0, "lost": 0}


def test_erasure_ends_the_open_follow_up(make_app: AppFactory) -> None:
    from core.services import customers as core_customers
    from plugins.care.models import FollowUp, FollowUpStatus

    app = make_app(enabled=["care"])
    with app.app_context():
        owner = agent()
        gone, kept = customer("Gone", owner), customer("Kept", owner)
        for client in (gone, kept):
            db.session.add(FollowUp(customer_id=client.id, owner_id=owner.id, risk=0.7,
                                    status=FollowUpStatus.OPEN, opened_at=utcnow()))
        db.session.commit()
        core_customers.erase_customer(gone.id)
        statuses = dict(db.session.execute(select(FollowUp.customer_id, FollowUp.status))
                        .tuples().all())
        assert statuses == {gone.id: FollowUpStatus.LOST, kept.id: FollowUpStatus.OPEN}
        assert FollowUp.query.filter_by(customer_id=gone.id).one().closed_at is not None


def test_two_runs_at_once_open_one_follow_up_each(make_app: AppFactory) -> None:
    """A second run that chose the same customers before the first committed (its
    candidates read, then the first run's chunk committed) opens nothing for them."""
    from types import SimpleNamespace

    from plugins.care import at_risk
    from plugins.care.models import FollowUp, Task

    app = make_app(enabled=["care"])
    with app.app_context():
        owner = agent()
        clients = [customer(f"C{n}", owner) for n in range(3)]
        rows = [SimpleNamespace(customer_id=c.id, owner_id=owner.id, risk=0.8) for c in clients]
        due, now = dt.date(2027, 1, 8), utcnow()
        assert at_risk._open_chunk(rows, due, now) == 3
        assert at_risk._open_chunk(rows, due, now) == 0
        assert FollowUp.query.count() == 3 and Task.query.count() == 3
