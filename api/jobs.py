"""Jobs and schedules in GraphQL: startJob, job, jobs, cancelJob, jobKinds, schedules and
their mutations. The work is core's (core/jobs.py, core/scheduler.py); this is the face.

Types are of the ``jobs`` domain (``jobs:read``). Starting or cancelling a job also needs
the write scope of the job kind's own domain (``churn:write`` for ``churn.fit``), and a
key sees only jobs of kinds whose domain it can read.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import graphene
from graphene import relay
from graphene.types.generic import GenericScalar
from sqlalchemy import select

from api.authorization import domain, read_scope, structural
from api.mutations import RapportMutation, global_id, plain
from api.pagination import Page, bad_input, keyset_page
from api.types import connection, ctx, decode_global_id, error_type, forbidden, node_type, scoped
from core import files, jobs, scheduler
from core.db import db
from core.ids import shown_id
from core.errors import ErrorCode, UserError
from core.job_tables import Job as JobRow, JobStatus, Schedule as ScheduleRow, StoredFile

JobError = error_type("Job", jobs.JOB_ERROR_CODES)
JobStatusEnum = graphene.Enum.from_enum(JobStatus)


def _may_read_kind(info: Any, kind_name: str) -> bool:
    kind = jobs.job_kinds().get(kind_name)
    principal = ctx(info).principal
    return kind is not None and principal.allows(read_scope(kind.domain))


def _require_kind_write(info: Any, kind_name: str) -> None:
    kind = jobs.job_kinds().get(kind_name)
    if kind is not None and not ctx(info).principal.allows(kind.write_scope):
        raise forbidden(kind.write_scope)


@structural
class JobFailure(graphene.ObjectType):
    """Why a job failed: a stable code and a message a person can act on."""

    code = graphene.String(required=True)
    message = graphene.String(required=True)


@structural
class JobFile(graphene.ObjectType):
    """A file a job produced, with a short-lived signed download link."""

    id = graphene.ID(required=True)
    name = graphene.String(required=True)
    content_type = graphene.String(required=True)
    size = graphene.Float(required=True, description="Bytes.")
    url = graphene.String(required=True, description="A path on this server; valid until "
                                                     "expiresAt, no API key needed.")
    expires_at = graphene.DateTime(required=True)


def _job_files(row: JobRow) -> list[dict[str, Any]]:
    refs = (row.result or {}).get("files") or []
    numbers = []
    for ref in refs:
        try:
            numbers.append(files.find(ref).id)
        except Exception:  # noqa: BLE001 - a file removed since: nothing to link
            continue
    if not numbers:
        return []
    stored = db.session.scalars(select(StoredFile).where(StoredFile.id.in_(numbers))
                                .order_by(StoredFile.id)).all()
    return [files.link(f) for f in stored]


@domain("jobs")
@node_type(JobRow)
class Job(graphene.ObjectType):
    """A run of a job kind: status, progress, result (files as signed links), who started it."""

    class Meta:
        interfaces = (relay.Node,)

    kind = graphene.String(required=True, description="plugin.verb, see jobKinds.")
    status = graphene.Field(JobStatusEnum, required=True)
    progress = graphene.Float(required=True, description="0..1")
    message = graphene.String()
    parameters = GenericScalar(required=True)
    result = GenericScalar(description="The kind's result; its files as signed links.")
    files = graphene.List(graphene.NonNull(JobFile), required=True)
    error = graphene.Field(JobFailure)
    actor = GenericScalar(required=True, description="{agentId, service, apiKeyPrefix, "
                                                     "onBehalfOfAgentId, via}")
    attempts = graphene.Int(required=True)
    created_at = graphene.DateTime(required=True)
    started_at = graphene.DateTime()
    finished_at = graphene.DateTime()

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        row = db.session.get(JobRow, int(id))
        return row if row is not None and _may_read_kind(info, row.kind) else None

    @staticmethod
    def resolve_status(root: JobRow, info: Any) -> str:
        return root.status.value

    @staticmethod
    def resolve_files(root: JobRow, info: Any) -> list[JobFile]:
        return [JobFile(id=f["id"], name=f["name"], content_type=f["contentType"],
                        size=f["size"], url=f["url"],
                        expires_at=dt.datetime.fromisoformat(f["expiresAt"]))
                for f in _job_files(root)]

    @staticmethod
    def resolve_result(root: JobRow, info: Any) -> Any:
        if root.result is None:
            return None
        if root.result.get("files"):
            return {**root.result, "files": _job_files(root)}
        return root.result

    @staticmethod
    def resolve_error(root: JobRow, info: Any) -> JobFailure | None:
        if root.error_code is None:
            return None
        return JobFailure(code=root.error_code, message=root.error_message or "")


@domain("jobs")
class JobKind(graphene.ObjectType):
    kind = graphene.String(required=True)
    domain = graphene.String(required=True, description="Starting it needs <domain>:write.")
    description = graphene.String(required=True)


@domain("jobs")
@node_type(ScheduleRow)
class Schedule(graphene.ObjectType):
    """A periodic job read by ``rapport scheduler`` (cron in UTC, or an interval)."""

    class Meta:
        interfaces = (relay.Node,)

    name = graphene.String(required=True)
    kind = graphene.String(required=True)
    parameters = GenericScalar(required=True)
    cron = graphene.String()
    interval_seconds = graphene.Int()
    enabled = graphene.Boolean(required=True)
    last_run_at = graphene.DateTime()
    next_run_at = graphene.DateTime()
    last_job = graphene.Field(Job)

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        row = db.session.get(ScheduleRow, int(id))
        return row if row is not None and _may_read_kind(info, row.kind) else None

    @staticmethod
    def resolve_last_job(root: ScheduleRow, info: Any) -> Any:
        if root.last_job_id is None:
            return None
        return Job.get_node(info, str(root.last_job_id))


JobConnection = connection(Job, "Job")
ScheduleConnection = connection(Schedule, "Schedule")


class JobFilterInput(graphene.InputObjectType):
    status = graphene.List(graphene.NonNull(JobStatusEnum))
    kind = graphene.List(graphene.NonNull(graphene.String))


def _readable_kinds(info: Any) -> list[str]:
    return [name for name in jobs.job_kinds() if _may_read_kind(info, name)]


def _id_page(model: Any, conditions: list[Any], first: int | None, after: str | None
             ) -> Page:
    """Newest first by id."""
    return keyset_page(select(model).where(*conditions), [model.id], first, after,
                       kinds=(int,), descending=True)


def resolve_jobs(root: Any, info: Any, first: int | None = None, after: str | None = None,
                 filter: dict[str, Any] | None = None) -> Page:
    spec = plain(filter or {})
    kinds = _readable_kinds(info)
    if spec.get("kind"):
        kinds = [k for k in kinds if k in set(spec["kind"])]
    conditions: list[Any] = [JobRow.kind.in_(kinds)]
    if spec.get("status"):
        conditions.append(JobRow.status.in_([JobStatus(s) for s in spec["status"]]))
    return _id_page(JobRow, conditions, first, after)


def _decoded(value: str, type_name: str) -> int:
    try:
        return decode_global_id(value, type_name)
    except ValueError as exc:
        raise bad_input(str(exc)) from None


def job_query_fields() -> dict[str, graphene.Field]:
    return {
        "job": scoped(graphene.Field(
            Job, id=graphene.ID(required=True),
            resolver=lambda root, info, id: Job.get_node(info, str(_decoded(id, "Job")))),
            "jobs:read"),
        "jobs": scoped(graphene.Field(
            JobConnection, required=True, first=graphene.Int(), after=graphene.String(),
            filter=JobFilterInput(), resolver=resolve_jobs,
            description="Jobs of the kinds this key can read, newest first."), "jobs:read"),
        "jobKinds": scoped(graphene.Field(
            graphene.List(graphene.NonNull(JobKind), required=True), required=True,
            resolver=lambda root, info: [
                JobKind(kind=k.kind, domain=k.domain, description=k.description)
                for k in jobs.job_kinds().values() if not k.internal]), "jobs:read"),
        "schedules": scoped(graphene.Field(
            ScheduleConnection, required=True, first=graphene.Int(), after=graphene.String(),
            resolver=lambda root, info, first=None, after=None: _id_page(
                ScheduleRow, [ScheduleRow.kind.in_(_readable_kinds(info))], first, after)),
            "jobs:read"),
    }


# --- Mutations ----------------------------------------------------------------------------------


class StartJobInput(graphene.InputObjectType):
    kind = graphene.String(required=True, description="plugin.verb, see jobKinds.")
    parameters = GenericScalar(description="The kind's parameters (camelCase keys).")


class StartJob(RapportMutation):
    """Start a job; follow it with ``job(id)``. Needs the kind's ``<domain>:write`` too."""

    class Arguments:
        input = StartJobInput(required=True)

    job = graphene.Field(Job)
    scope = "jobs:write"
    error_type = JobError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> StartJob:
        _require_kind_write(info, input["kind"])
        principal = ctx(info).principal
        return cls(job=jobs.start_job(input["kind"], input.get("parameters"),
                                      allow_server_paths=principal.allows("admin")))


class JobIdInput(graphene.InputObjectType):
    id = graphene.ID(required=True)


class CancelJob(RapportMutation):
    """Cancel a queued job, or stop a running one at its next progress report."""

    class Arguments:
        input = JobIdInput(required=True)

    job = graphene.Field(Job)
    scope = "jobs:write"
    error_type = JobError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CancelJob:
        job_id = global_id(input, "id", "Job")
        row = db.session.get(JobRow, job_id)
        if row is None or not _may_read_kind(info, row.kind):
            raise UserError.single(f"No job with id {shown_id('Job', job_id)}.",
                                   ErrorCode.NOT_FOUND, "id")
        _require_kind_write(info, row.kind)
        return cls(job=jobs.cancel_job(job_id))  # type: ignore[arg-type]


class ScheduleFields:
    name = graphene.String()
    parameters = GenericScalar()
    cron = graphene.String(description="minute hour day-of-month month day-of-week, in UTC.")
    interval_seconds = graphene.Int(description="At least 60; instead of cron.")
    enabled = graphene.Boolean()


class CreateScheduleInput(ScheduleFields, graphene.InputObjectType):
    kind = graphene.String(required=True)


class UpdateScheduleInput(ScheduleFields, graphene.InputObjectType):
    id = graphene.ID(required=True)


class CreateSchedule(RapportMutation):
    class Arguments:
        input = CreateScheduleInput(required=True)

    schedule = graphene.Field(Schedule)
    scope = "jobs:write"
    error_type = JobError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CreateSchedule:
        _require_kind_write(info, input["kind"])
        return cls(schedule=scheduler.create_schedule(input))


def _schedule_id(info: Any, input: dict[str, Any]) -> int:
    schedule_id = global_id(input, "id", "Schedule")
    row = db.session.get(ScheduleRow, schedule_id)
    if row is None or not _may_read_kind(info, row.kind):
        raise UserError.single(f"No schedule with id {shown_id('Schedule', schedule_id)}.",
                               ErrorCode.NOT_FOUND, "id")
    _require_kind_write(info, row.kind)
    return schedule_id  # type: ignore[return-value]


class UpdateSchedule(RapportMutation):
    class Arguments:
        input = UpdateScheduleInput(required=True)

    schedule = graphene.Field(Schedule)
    scope = "jobs:write"
    error_type = JobError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> UpdateSchedule:
        schedule_id = _schedule_id(info, input)
        return cls(schedule=scheduler.update_schedule(schedule_id, input))


class DeleteSchedule(RapportMutation):
    class Arguments:
        input = JobIdInput(required=True)

    deleted_id = graphene.ID()
    scope = "jobs:write"
    error_type = JobError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> DeleteSchedule:
        raw = input.get("id")
        scheduler.delete_schedule(_schedule_id(info, input))
        return cls(deleted_id=raw)


JOB_MUTATIONS: dict[str, type[RapportMutation]] = {
    "startJob": StartJob,
    "cancelJob": CancelJob,
    "createSchedule": CreateSchedule,
    "updateSchedule": UpdateSchedule,
    "deleteSchedule": DeleteSchedule,
}
