"""Retention: what the integration tier leaves behind is removed once it has served.

The outbox keeps every event until the relay hands it on; a relayed event is only history
then (subscribers that need it again ask for a redelivery within the retention). Jobs keep
their parameters, result and files so a client can read them after the fact. Neither may
grow without bound, so the ``core.purge`` job (daily by the ``housekeeping`` schedule, or
``rapport purge``) deletes, in batches:

- relayed events (``delivered_at`` set) older than ``RAPPORT_OUTBOX_RETENTION_DAYS``
  (default 7); events still waiting are never deleted, whatever their age;
- finished jobs (succeeded, failed or cancelled) older than ``RAPPORT_JOB_RETENTION_DAYS``
  (default 30), with their child jobs and their output files (bytes in the database or
  in ``RAPPORT_FILES_DIR``), and uploads older than that which no remaining job or
  schedule names (an input stays while a job or schedule refers to it).

The audit log is append-only and never purged. The purge itself is an audit entry with
its counts (operation ``core.purge``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from flask.cli import with_appcontext
from marshmallow import Schema, fields, validate
from sqlalchemy import delete, select

from core.app import rapport
from core.config import ConfigError
from core.db import db, utcnow

log = logging.getLogger("rapport.housekeeping")

PURGE_JOB_KIND = "core.purge"
DEFAULT_OUTBOX_DAYS = 7
DEFAULT_JOB_DAYS = 30
#: Rows deleted per transaction: short transactions, no long lock on a busy table.
BATCH_SIZE = 2_000
TERMINAL_STATUSES = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass
class PurgeResult:
    outbox_events: int = 0
    jobs: int = 0
    files: int = 0

    def to_json(self) -> dict[str, int]:
        return {"outboxEvents": self.outbox_events, "jobs": self.jobs, "files": self.files}


def retention_days(name: str, default: int) -> int:
    """A retention setting in whole days (at least 1)."""
    raw = rapport().settings.extra.get(name)
    if raw in (None, ""):
        return default
    try:
        days = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={raw!r} must be a whole number of days") from None
    if days < 1:
        raise ConfigError(f"{name}={raw!r} must be at least 1 (day)")
    return days


def _batched_ids(statement: Any) -> list[int]:
    return [int(i) for i in db.session.scalars(statement.limit(BATCH_SIZE))]


def _remove_stored(paths: list[str]) -> None:
    """Delete files kept in RAPPORT_FILES_DIR once their rows are gone (after commit)."""
    from core import files

    folder = files.files_dir()
    for relative in paths:
        if folder is None:
            break
        target = (folder / relative).resolve()
        if folder.resolve() not in target.parents:
            log.warning("not removing %s: outside RAPPORT_FILES_DIR", relative)
            continue
        try:
            Path(target).unlink(missing_ok=True)
        except OSError as exc:  # a file left behind is logged, never fatal
            log.warning("could not remove %s: %s", target, exc)


def _referenced_uploads() -> set[int]:
    """Ids of the stored files that a job (of any state, not yet purged) or a schedule
    names as its ``file`` parameter."""
    from core.ids import decode_global_id
    from core.job_tables import Job, Schedule

    found: set[int] = set()
    for table in (Job, Schedule):
        for parameters in db.session.scalars(select(table.parameters)):
            reference = (parameters or {}).get("file")
            if not isinstance(reference, str):
                continue
            try:
                found.add(decode_global_id(reference)[1])
            except ValueError:
                if reference.isdigit():
                    found.add(int(reference))
    return found


def purge(now: dt.datetime | None = None, *, outbox_days: int | None = None,
          job_days: int | None = None, dry_run: bool = False) -> PurgeResult:
    """Delete what retention allows (module docstring); commits batch by batch.

    ``dry_run`` counts what would go and deletes nothing.
    """
    from sqlalchemy import func

    from core import changes
    from core.job_tables import Job, StoredFile
    from core.models import OutboxEvent

    now = now or utcnow()
    outbox_days = outbox_days or retention_days("RAPPORT_OUTBOX_RETENTION_DAYS",
                                                DEFAULT_OUTBOX_DAYS)
    job_days = job_days or retention_days("RAPPORT_JOB_RETENTION_DAYS", DEFAULT_JOB_DAYS)
    event_cutoff = now - dt.timedelta(days=outbox_days)
    job_cutoff = now - dt.timedelta(days=job_days)
    events_due = (OutboxEvent.delivered_at.is_not(None)
                  & (OutboxEvent.delivered_at < event_cutoff))
    # A child job goes with its parent (ON DELETE CASCADE), never on its own.
    jobs_due = (Job.parent_id.is_(None) & Job.status.in_(TERMINAL_STATUSES)
                & (Job.finished_at < job_cutoff))
    unused_files_due = StoredFile.job_id.is_(None) & (StoredFile.created_at < job_cutoff)
    result = PurgeResult()
    if dry_run:
        result.outbox_events = int(db.session.scalar(
            select(func.count()).select_from(OutboxEvent).where(events_due)) or 0)
        result.jobs = int(db.session.scalar(
            select(func.count()).select_from(Job).where(jobs_due)) or 0)
        job_ids = select(Job.id).where(jobs_due | Job.parent_id.in_(
            select(Job.id).where(jobs_due)))
        kept = _referenced_uploads()
        result.files = int(db.session.scalar(
            select(func.count()).select_from(StoredFile).where(
                StoredFile.job_id.in_(job_ids))) or 0) + sum(
            1 for file_id in db.session.scalars(select(StoredFile.id).where(
                unused_files_due)) if file_id not in kept)
        db.session.rollback()
        return result

    while ids := _batched_ids(select(OutboxEvent.id).where(events_due)
                              .order_by(OutboxEvent.id)):
        db.session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(ids)))
        db.session.commit()
        result.outbox_events += len(ids)

    while ids := _batched_ids(select(Job.id).where(jobs_due).order_by(Job.id)):
        family = select(Job.id).where(Job.id.in_(ids) | Job.parent_id.in_(ids))
        doomed = db.session.execute(select(StoredFile.id, StoredFile.path).where(
            StoredFile.job_id.in_(family))).all()
        if doomed:
            db.session.execute(delete(StoredFile).where(
                StoredFile.id.in_([row.id for row in doomed])))
        db.session.execute(delete(Job).where(Job.id.in_(ids)))
        db.session.commit()
        _remove_stored([row.path for row in doomed if row.path])
        result.jobs += len(ids)
        result.files += len(doomed)

    # An upload is a job's input by reference (the job's ``file`` parameter), not by
    # ``job_id``: one a job or a schedule still names stays, whatever its age.
    kept = _referenced_uploads()
    after = 0
    while rows := db.session.execute(select(StoredFile.id, StoredFile.path).where(
            unused_files_due, StoredFile.id > after).order_by(StoredFile.id)
            .limit(BATCH_SIZE)).all():
        after = rows[-1].id
        doomed = [row for row in rows if row.id not in kept]
        if doomed:
            db.session.execute(delete(StoredFile).where(
                StoredFile.id.in_([row.id for row in doomed])))
            db.session.commit()
            _remove_stored([row.path for row in doomed if row.path])
            result.files += len(doomed)

    changes.record(PURGE_JOB_KIND, [], {
        "outboxRetentionDays": [None, outbox_days], "jobRetentionDays": [None, job_days],
        **{key: [None, value] for key, value in result.to_json().items()}})
    db.session.commit()
    log.info("purged %s relayed events, %s jobs, %s files", result.outbox_events,
             result.jobs, result.files)
    return result


# --- The job kind and the command -----------------------------------------------------------


class PurgeParameters(Schema):
    outbox_days = fields.Integer(
        data_key="outboxDays", load_default=None, validate=validate.Range(1, 36_500),
        metadata={"description": "keep relayed events this many days "
                                 "[default: RAPPORT_OUTBOX_RETENTION_DAYS, else 7]"})
    job_days = fields.Integer(
        data_key="jobDays", load_default=None, validate=validate.Range(1, 36_500),
        metadata={"description": "keep finished jobs and their files this many days "
                                 "[default: RAPPORT_JOB_RETENTION_DAYS, else 30]"})


def _purge_job(parameters: dict[str, Any], progress: Any) -> dict[str, Any]:
    return purge(outbox_days=parameters.get("outbox_days"),
                 job_days=parameters.get("job_days")).to_json()


def job_kinds() -> list[Any]:
    from core.jobs import JobKind

    return [JobKind(kind=PURGE_JOB_KIND, parameters=PurgeParameters, domain="jobs",
                    function=_purge_job,
                    description="Delete relayed events and finished jobs (with their "
                                "files) older than their retention; the audit log stays.")]


@click.command("purge")
@click.option("--outbox-days", type=click.IntRange(1, 36_500), default=None,
              help="Keep relayed events this many days [default: "
                   "RAPPORT_OUTBOX_RETENTION_DAYS, else 7].")
@click.option("--job-days", type=click.IntRange(1, 36_500), default=None,
              help="Keep finished jobs and their files this many days [default: "
                   "RAPPORT_JOB_RETENTION_DAYS, else 30].")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@with_appcontext
def purge_command(outbox_days: int | None, job_days: int | None, dry_run: bool) -> None:
    """Delete relayed events and finished jobs past their retention (the audit log
    stays)."""
    try:
        result = purge(outbox_days=outbox_days, job_days=job_days, dry_run=dry_run)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {result.outbox_events} relayed event(s), {result.jobs} finished "
               f"job(s), {result.files} file(s).")
