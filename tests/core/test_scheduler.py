"""The schedules table and ``rapport scheduler``: cron, seeding, one run per due time
whatever the number of schedulers, editing through GraphQL."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from core import jobs, scheduler
from core.cli import cli
from core.db import db
from core.job_tables import Job, Schedule
from core.services import transaction
from tests.conftest import AppFactory, GraphQL, admin_token

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("*/15 * * * *", "2026-03-01T10:07:30", "2026-03-01T10:15:00"),
    ("*/15 * * * *", "2026-03-01T10:45:00", "2026-03-01T11:00:00"),
    ("10 0 * * *", "2026-03-01T00:10:00", "2026-03-02T00:10:00"),
    ("0 9-17/4 * * 1-5", "2026-03-06T17:00:00", "2026-03-09T09:00:00"),  # Friday -> Monday
    ("0 0 29 2 *", "2026-03-01T00:00:00", "2028-02-29T00:00:00"),
    ("0 0 1 * 0", "2026-03-02T00:00:00", "2026-03-08T00:00:00"),  # day 1 OR Sunday
    ("0 12 * * 7", "2026-03-01T12:00:00", "2026-03-08T12:00:00"),  # 7 is Sunday too
])
def test_cron_next_run(expression: str, after: str, expected: str) -> None:
    assert scheduler.parse_cron(expression).next_after(at(after)) == at(expected)


@pytest.mark.parametrize("expression", ["* * * *", "61 * * * *", "*/0 * * * *",
                                        "0 0 31 2 *", "a * * * *", "5-1 * * * *"])
def test_bad_cron_expressions_are_refused(expression: str) -> None:
    with pytest.raises(ValueError):
        scheduler.parse_cron(expression)


@pytest.fixture
def jobs_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["loyalty", "complaints"], RAPPORT_JOB_THREADS=2)
    with app.app_context():
        yield app
    jobs.wait_for_threads(app)


def test_seeding_adds_the_defaults_of_enabled_kinds_once(make_app: AppFactory) -> None:
    app = make_app(enabled=["loyalty", "complaints"], RAPPORT_SCHEDULES=(
        '{"complaints-detection": {"enabled": false}, '
        '"nightly-tiers": {"kind": "loyalty.tiers", "cron": "0 2 * * *"}}'))
    with app.app_context():
        added = scheduler.seed_schedules()
        assert "churn-check" not in added  # churn is not enabled
        assert {"loyalty-expiry", "complaints-escalation", "complaints-detection",
                "nightly-tiers"} <= set(added)
        rows = {s.name: s for s in db.session.scalars(select(Schedule))}
        assert rows["complaints-detection"].enabled is False
        assert rows["complaints-escalation"].interval_seconds == 900
        assert rows["loyalty-expiry"].next_run_at > dt.datetime.now(UTC)
        with transaction():
            rows["loyalty-expiry"].cron = "0 5 * * *"  # an edit made since stays
        assert scheduler.seed_schedules() == []
        assert db.session.get(Schedule, rows["loyalty-expiry"].id).cron == "0 5 * * *"


def _due_schedule(kind: str = "loyalty.tiers", name: str = "due") -> tuple[int, dt.datetime]:
    schedule = scheduler.create_schedule({"name": name, "kind": kind,
                                          "interval_seconds": 3600})
    planned = dt.datetime.now(UTC) - dt.timedelta(minutes=1)
    with transaction():
        db.session.execute(update(Schedule).where(Schedule.id == schedule.id).values(
            next_run_at=planned))
    return schedule.id, planned


def test_a_due_schedule_starts_one_job_not_two_with_two_schedulers(
        jobs_app: Flask) -> None:
    schedule_id, planned = _due_schedule()
    barrier = threading.Barrier(2)
    started: list[list[int]] = []

    def one_scheduler() -> None:
        with jobs_app.app_context():
            barrier.wait()
            started.append(scheduler.run_due())
            db.session.remove()

    threads = [threading.Thread(target=one_scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(len(ids) for ids in started) == [0, 1]
    jobs.wait_for_threads(jobs_app)
    db.session.remove()
    (job,) = db.session.scalars(select(Job).where(Job.schedule_id == schedule_id))
    assert job.kind == "loyalty.tiers" and job.status.value == "SUCCEEDED"
    assert job.actor["service"] == "scheduler" and job.actor["via"] == "job"
    schedule = db.session.get(Schedule, schedule_id)
    assert schedule.last_job_id == job.id and schedule.last_run_at is not None
    assert schedule.next_run_at > dt.datetime.now(UTC) + dt.timedelta(minutes=58)
    assert scheduler.run_due() == []  # not due again until the next interval


def test_the_scheduler_command_runs_due_jobs_on_threads_without_a_broker(
        jobs_app: Flask) -> None:
    schedule_id, _ = _due_schedule("complaints.escalate", "escalate-now")
    result = jobs_app.test_cli_runner().invoke(cli, ["scheduler", "--once"])
    assert result.exit_code == 0, result.output
    db.session.remove()
    (job,) = db.session.scalars(select(Job).where(Job.schedule_id == schedule_id))
    assert job.status.value == "SUCCEEDED" and job.result["escalated"] == []
    assert db.session.scalar(select(func.count()).select_from(Schedule).where(
        Schedule.name == "loyalty-expiry")) == 1  # seeded at start


SCHEDULE_FIELDS = "id name kind parameters cron intervalSeconds enabled nextRunAt lastJob { id }"


def test_schedules_are_edited_through_graphql(jobs_app: Flask) -> None:
    admin = GraphQL(jobs_app, admin_token(jobs_app))
    create = f"""mutation($input: CreateScheduleInput!) {{
      createSchedule(input: $input) {{ schedule {{ {SCHEDULE_FIELDS} }}
                                      errors {{ field code message }} }} }}"""
    made = admin(create, {"input": {"name": "expire-often", "kind": "loyalty.expire",
                                    "cron": "*/30 * * * *"}})["createSchedule"]
    assert made["errors"] == []
    schedule = made["schedule"]
    assert schedule["cron"] == "*/30 * * * *" and schedule["enabled"] is True
    assert schedule["parameters"] == {"asOf": None} and schedule["lastJob"] is None

    for bad, expected in [
        ({"cron": "every day"}, ("input.cron", "INVALID")),
        ({"intervalSeconds": 5}, ("input.intervalSeconds", "INVALID")),
        ({"parameters": {"asOf": "soon"}}, ("input.parameters.asOf", "INVALID")),
        ({"name": "expire-often", "cron": "0 * * * *"}, ("input.name", "UNIQUE")),
        ({"kind": "nope.nope", "cron": "0 * * * *"}, ("input.kind", "UNKNOWN_KIND")),
        ({"cron": "0 * * * *", "intervalSeconds": 120}, ("input.cron", "INVALID")),
    ]:
        payload = admin(create, {"input": {"name": "other", "kind": "loyalty.expire",
                                           **bad}})["createSchedule"]
        assert [(e["field"], e["code"]) for e in payload["errors"]] == [expected], bad

    update_doc = f"""mutation($input: UpdateScheduleInput!) {{
      updateSchedule(input: $input) {{ schedule {{ {SCHEDULE_FIELDS} }}
                                      errors {{ field code }} }} }}"""
    unset = admin(update_doc, {"input": {"id": schedule["id"], "enabled": None}})
    assert unset["updateSchedule"]["errors"] == [{"field": "input.enabled", "code": "REQUIRED"}]
    changed = admin(update_doc, {"input": {"id": schedule["id"], "intervalSeconds": 600,
                                           "enabled": False}})["updateSchedule"]
    assert changed["errors"] == []
    assert changed["schedule"]["cron"] is None and changed["schedule"]["intervalSeconds"] == 600
    assert changed["schedule"]["enabled"] is False

    listed = admin("{ schedules { totalCount edges { node { name } } } }")["schedules"]
    assert [e["node"]["name"] for e in listed["edges"]] == ["expire-often"]
    complaints_only = GraphQL(jobs_app, admin_token(jobs_app, ("jobs:write", "jobs:read",
                                                               "complaints:write")))
    refused = complaints_only.raw(create, {"input": {"name": "x", "kind": "loyalty.tiers",
                                                     "cron": "0 * * * *"}})
    assert refused.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert complaints_only("{ schedules { totalCount } }")["schedules"]["totalCount"] == 0

    delete = """mutation($id: ID!) { deleteSchedule(input: {id: $id}) {
      deletedId errors { field code } } }"""
    assert admin(delete, {"id": schedule["id"]})["deleteSchedule"] == {
        "deletedId": schedule["id"], "errors": []}
    assert admin(delete, {"id": schedule["id"]})["deleteSchedule"]["errors"] == [
        {"field": "input.id", "code": "NOT_FOUND"}]
