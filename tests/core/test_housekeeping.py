"""Retention (core/housekeeping.py): relayed events and finished jobs go after their time;
waiting events, running jobs, recent rows and the audit log stay."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from core import files

from core.changes import new_event_id
from core.cli import cli
from core.db import db
from core.housekeeping import purge
from core.job_tables import Job, JobStatus, StoredFile
from core.models import AuditEntry, OutboxEvent
from core.scheduler import DEFAULT_SCHEDULES
from tests.conftest import AppFactory

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)


def _event(age_days: float, delivered: bool) -> OutboxEvent:
    at = NOW - dt.timedelta(days=age_days)
    return OutboxEvent(event_id=new_event_id(), type="customer.created",
                       aggregate_id="Q3VzdG9tZXI6MQ==", data={}, actor={}, occurred_at=at,
                       delivered_at=at if delivered else None)


def _job(age_days: float, status: JobStatus, parent: Job | None = None) -> Job:
    at = NOW - dt.timedelta(days=age_days)
    job = Job(kind="core.import_customers", status=status, parameters={}, actor={},
              created_at=at, finished_at=at if status in (
                  JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED) else None)
    if parent is not None:
        job.parent_id = parent.id
    return job


def _file(name: str, job: Job | None, age_days: float = 0) -> StoredFile:
    row = files.store_path(_FILE_SOURCE, name, job_id=job.id if job is not None else None)
    row.created_at = NOW - dt.timedelta(days=age_days)
    return row


_FILE_SOURCE: Path


@pytest.fixture
def app_with_rows(make_app: AppFactory, tmp_path: Path) -> Any:
    global _FILE_SOURCE
    _FILE_SOURCE = tmp_path / "input.csv"
    _FILE_SOURCE.write_text("external_id,name\nC-1,Ada\n")
    shared = tmp_path / "shared"
    app = make_app(RAPPORT_FILES_DIR=str(shared))
    with app.app_context():
        db.session.add_all([_event(30, True), _event(8, True), _event(6, True),
                            _event(400, False)])
        old_done = _job(45, JobStatus.SUCCEEDED)
        old_failed = _job(31, JobStatus.FAILED)
        recent = _job(10, JobStatus.SUCCEEDED)
        running = _job(90, JobStatus.RUNNING)
        db.session.add_all([old_done, old_failed, recent, running])
        db.session.flush()
        child = _job(45, JobStatus.SUCCEEDED, parent=old_done)
        db.session.add(child)
        db.session.commit()
        _file("old.csv", old_done)
        _file("child.rejects.csv", child)
        _file("recent.csv", recent)
        _file("unused-old.csv", None, age_days=40)
        _file("unused-new.csv", None, age_days=1)
        db.session.commit()
        yield app, shared


def _names() -> list[str]:
    return sorted(db.session.scalars(select(StoredFile.name)))


def test_purge_keeps_what_retention_and_state_require(app_with_rows: Any) -> None:
    app, shared = app_with_rows
    with app.app_context():
        on_disk = {row.name: shared / row.path for row in db.session.scalars(
            select(StoredFile))}
        assert all(path.is_file() for path in on_disk.values())
        preview = purge(NOW, dry_run=True)
        assert (preview.outbox_events, preview.jobs, preview.files) == (2, 2, 3)
        assert db.session.scalar(select(func.count()).select_from(OutboxEvent)) == 4

        done = purge(NOW)
        assert (done.outbox_events, done.jobs, done.files) == (2, 2, 3)
        ages = sorted((NOW - e.occurred_at).days for e in db.session.scalars(
            select(OutboxEvent)))
        assert ages == [6, 400]  # the recent one and the one still waiting
        left = db.session.scalars(select(Job.status).order_by(Job.id)).all()
        assert left == [JobStatus.SUCCEEDED, JobStatus.RUNNING]  # recent, running
        assert _names() == ["recent.csv", "unused-new.csv"]
        for name, path in on_disk.items():
            assert path.is_file() == (name in {"recent.csv", "unused-new.csv"}), name

        entry = db.session.scalars(select(AuditEntry).where(
            AuditEntry.operation == "core.purge")).one()
        assert entry.changes["jobs"] == [None, 2]
        assert entry.changes["outboxEvents"] == [None, 2]
        # Nothing more to do: a second run deletes nothing.
        again = purge(NOW)
        assert (again.outbox_events, again.jobs, again.files) == (0, 0, 0)


def test_retention_is_configurable_and_checked(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_OUTBOX_RETENTION_DAYS="40", RAPPORT_JOB_RETENTION_DAYS="zero")
    with app.app_context():
        db.session.add_all([_event(30, True), _event(50, True)])
        db.session.commit()
        runner = app.test_cli_runner()
        result = runner.invoke(cli, ["purge"])
        assert result.exit_code == 1 and "RAPPORT_JOB_RETENTION_DAYS" in result.output
        assert "Traceback" not in result.output
        result = runner.invoke(cli, ["purge", "--job-days", "30", "--dry-run"])
        assert result.exit_code == 0, result.output
        assert "would delete 1 relayed event(s)" in result.output
        result = runner.invoke(cli, ["purge", "--job-days", "30"])
        assert "deleted 1 relayed event(s)" in result.output
        assert db.session.scalar(select(func.count()).select_from(OutboxEvent)) == 1
        assert runner.invoke(cli, ["purge", "--outbox-days", "0"]).exit_code == 2


def test_the_purge_is_a_job_kind_on_a_daily_schedule(make_app: AppFactory) -> None:
    from core import jobs

    app = make_app()
    with app.app_context():
        kind = jobs.job_kinds()["core.purge"]
        assert kind.domain == "jobs"
        assert kind.parameters().load({"outboxDays": 3}) == {"outbox_days": 3,
                                                             "job_days": None}
    assert DEFAULT_SCHEDULES["housekeeping"]["kind"] == "core.purge"


def test_now_defaults_to_the_clock(make_app: AppFactory) -> None:
    app = make_app()
    with app.app_context():
        db.session.add(_event(1, True))
        db.session.commit()
        # Relative to the real clock the event (dated a day before NOW) is old enough.
        assert purge(outbox_days=1).outbox_events == 1


def test_an_upload_a_live_job_or_a_schedule_names_stays(make_app: AppFactory,
                                                         tmp_path: Path) -> None:
    global _FILE_SOURCE
    _FILE_SOURCE = tmp_path / "input.csv"
    _FILE_SOURCE.write_text("external_id,name\nC-1,Ada\n")
    from core.job_tables import Schedule

    app = make_app(RAPPORT_FILES_DIR=str(tmp_path / "shared"))
    with app.app_context():
        inputs = {name: _file(name, None, age_days=40)
                  for name in ("running.csv", "scheduled.csv", "old-job.csv", "nobody.csv")}
        db.session.commit()
        running = _job(90, JobStatus.RUNNING)
        running.parameters = {"file": files.file_id(inputs["running.csv"])}
        old = _job(45, JobStatus.SUCCEEDED)
        old.parameters = {"file": files.file_id(inputs["old-job.csv"])}
        db.session.add_all([running, old, Schedule(
            name="nightly-import", kind="core.import_customers", interval_seconds=86_400,
            parameters={"file": files.file_id(inputs["scheduled.csv"])}, next_run_at=NOW)])
        db.session.commit()
        assert purge(NOW, dry_run=True).files == 1  # nobody.csv (old-job.csv's job stays)
        done = purge(NOW)
        # The old job goes first; then its input is no one's and goes too.
        assert (done.jobs, done.files) == (1, 2)
        assert _names() == ["running.csv", "scheduled.csv"]
