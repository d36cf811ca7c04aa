"""Jobs: long operations run off the request, on a real queue or on local threads.

Core owns jobs. Plugins declare job kinds through ``rapport_job_kinds`` (a ``JobKind``:
``plugin.verb`` name, a marshmallow schema of its parameters, the domain whose write scope
starting it needs, the function) and never talk to the queue library: the engine lives
behind ``dispatch`` and can change there alone.

- With ``RAPPORT_BROKER_URL`` set, ``start_job`` writes a QUEUED row and enqueues a Celery
  task carrying only the job id (``core.jobs_celery``); ``rapport worker`` runs it.
- Without a broker, a bounded pool of threads in the process that started the job runs it
  (``RAPPORT_JOB_THREADS``, default 2), so a fresh machine needs nothing more.

A kind's function receives its validated parameters and a ``Progress``: calling
``progress(fraction, message)`` records how far it got and raises ``Cancelled`` when the
job was cancelled. Its return value (JSON) is the job's result; files it writes to
``progress.output_path(name)`` are stored and shown as signed links. The CLI runs the same
functions in-process with a progress bar as the ``Progress`` (``run_here``).

A running job's row gets a heartbeat every few seconds from its worker. A job whose
worker died (heartbeat stale) is run again when its message comes back (acks late), up to
``RAPPORT_JOB_MAX_ATTEMPTS``; after that it fails with code ``WORKER_LOST``.

Fan-out: a kind's function may return a ``FanOut`` instead of a result: child jobs of
another (``internal``) kind, one per parameters, are stored and queued, and the parent
stays RUNNING without a worker while any worker takes the children. The parent's progress
is the mean of its children's. The child that finishes last runs the parent kind's
``finish(parameters, state, results, progress)`` (its return value is the parent's result);
a failed child fails the parent at once with the child's reason and asks its siblings to
stop; cancelling the parent cancels the children. ``abandon(parameters, state, reason)``
is called once when a fanned-out parent ends without success, so the kind can drop what
its children wrote. The CLI (``run_here``) runs the children one after the other in its
own process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from marshmallow import Schema, ValidationError
from sqlalchemy import case, event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core import context, files, metrics
from core.app import rapport
from core.config import ConfigError
from core.crypto import DecryptionError
from core.db import db, utcnow
from core.ids import shown_id
from core.errors import ErrorCode, FieldError, UserError, errors_from_marshmallow
from core.job_tables import FINISHED, Job, JobStatus
from core.services import in_transaction, transaction
from core.timeouts import is_statement_timeout

log = logging.getLogger("rapport.jobs")

KIND_NAME = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")
DEFAULT_THREADS = 2
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_HEARTBEAT_SECONDS = 5.0
#: Progress rows are written at most this often (the last report always is).
_PROGRESS_EVERY = 0.5
#: How long a progress or heartbeat write waits for a locked SQLite file. The lock is often
#: the job's own open write transaction (a scoring chunk's staging rows): waiting the
#: driver's default 5 s could never succeed and only stalled the job, twice per chunk. A
#: report that does not get through is made good by the next one.
_SQLITE_REPORT_WAIT_MS = 100
EXTENSION = "rapport_jobs"


class JobErrorCode:
    UNKNOWN_KIND = "UNKNOWN_KIND"
    ALREADY_FINISHED = "ALREADY_FINISHED"
    WORKER_LOST = "WORKER_LOST"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    STATEMENT_TIMEOUT = "STATEMENT_TIMEOUT"
    QUEUE_UNAVAILABLE = "QUEUE_UNAVAILABLE"
    DECRYPTION_FAILED = "DECRYPTION_FAILED"


JOB_ERROR_CODES = [v for k, v in vars(JobErrorCode).items() if k.isupper()]


class Cancelled(Exception):
    """Raised by ``Progress.__call__`` in a job that was cancelled; let it propagate."""


@dataclass(frozen=True)
class FanOut:
    """Returned by a job function to split its work: one child job of ``kind`` per entry of
    ``children`` (their JSON parameters), run by whichever workers are free. ``state``
    (JSON) is kept on the parent and handed to its kind's ``finish`` and ``abandon``."""

    kind: str
    children: list[dict[str, Any]]
    state: dict[str, Any] = dataclasses.field(default_factory=dict)


# --- Job kinds ------------------------------------------------------------------------------

JobFunction = Callable[[dict[str, Any], "Progress"], "Mapping[str, Any] | FanOut | None"]
#: ``finish(parameters, state, child results in order, progress)`` -> the parent's result.
FinishFunction = Callable[[dict[str, Any], dict[str, Any], list[dict[str, Any]], "Progress"],
                          "Mapping[str, Any] | None"]
#: ``abandon(parameters, state, reason)``: undo what the children of a failed or cancelled
#: fan-out left behind (idempotent; called once, possibly while children still stop).
AbandonFunction = Callable[[dict[str, Any], dict[str, Any], str], None]


@dataclass(frozen=True)
class JobKind:
    """A long operation a client may start: ``kind`` is ``plugin.verb``.

    ``parameters`` is a marshmallow schema (class) whose ``load`` validates the JSON
    parameters (camelCase keys through ``data_key``) and whose ``dump`` gives them back as
    JSON. Starting the job needs ``<domain>:write``. ``function(parameters, progress)``
    does the work and returns the result (JSON-serialisable, camelCase keys) or None.
    """

    kind: str
    parameters: type[Schema]
    domain: str
    function: JobFunction
    description: str = ""
    #: For a kind whose function returns a ``FanOut`` (module docstring).
    finish: FinishFunction | None = None
    abandon: AbandonFunction | None = None
    #: Started only by a parent's ``FanOut``, never by ``startJob`` or a schedule.
    internal: bool = False

    @property
    def write_scope(self) -> str:
        return f"{self.domain}:write"

    @property
    def read_scope(self) -> str:
        return f"{self.domain}:read"


def job_kinds(app: Flask | None = None) -> dict[str, JobKind]:
    """Every enabled plugin's job kinds by name (collected once per app)."""
    target = app or current_app
    state = target.extensions.get(EXTENSION)
    if state is None:
        state = target.extensions[EXTENSION] = _JobsState()
    if state.kinds is None:
        kinds: dict[str, JobKind] = {}
        for declared in rapport(target).hook.rapport_job_kinds():
            for kind in declared or []:
                if not KIND_NAME.fullmatch(kind.kind):
                    raise ConfigError(f"job kind {kind.kind!r}: name it plugin.verb "
                                      f"(lower case)")
                if kind.kind in kinds:
                    raise ConfigError(f"job kind {kind.kind!r} is declared twice")
                kinds[kind.kind] = kind
        state.kinds = dict(sorted(kinds.items()))
    return state.kinds


def kind_of(name: str, field: str = "kind") -> JobKind:
    found = job_kinds().get(name)
    if found is None:
        raise UserError.single(
            f"No job kind {name!r}; known: {', '.join(job_kinds()) or 'none'}.",
            JobErrorCode.UNKNOWN_KIND, field)
    return found


def validate_parameters(kind: JobKind, raw: Any, field: str = "parameters"
                        ) -> dict[str, Any]:
    """The parameters as Python values (``UserError`` with paths under ``field``)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise UserError.single("Parameters must be a JSON object.", ErrorCode.INVALID, field)
    try:
        return dict(kind.parameters().load(raw))
    except ValidationError as exc:
        raise UserError(errors_from_marshmallow(exc, field)) from None


def parameters_json(kind: JobKind, loaded: Mapping[str, Any]) -> dict[str, Any]:
    return dict(kind.parameters().dump(loaded))


# --- Settings -------------------------------------------------------------------------------


def _setting(name: str, default: Any, cast: Callable[[Any], Any] = int) -> Any:
    raw = rapport().settings.extra.get(name)
    if raw in (None, ""):
        return default
    try:
        value = cast(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={raw!r} must be a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


def broker_url() -> str | None:
    return rapport().settings.extra.get("RAPPORT_BROKER_URL") or None


def max_attempts() -> int:
    return int(_setting("RAPPORT_JOB_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))


def heartbeat_seconds() -> float:
    return float(_setting("RAPPORT_JOB_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS, float))


def stale_after() -> dt.timedelta:
    """A RUNNING job without a heartbeat for this long has lost its worker."""
    return dt.timedelta(seconds=3 * heartbeat_seconds())


# --- Progress -------------------------------------------------------------------------------


class Progress:
    """What a job function reports to, and where it finds its files.

    ``progress(fraction, message)`` with ``fraction`` in 0..1. ``input_file`` gives a local
    path for the ``file`` (a stored file's id) or ``path`` (a server-side path) parameter;
    ``output_path(name)`` is where to write an output file; ``drop_output`` forgets one
    the function decided not to keep (an empty rejects file). ``job_id``: the job being
    run, None in the CLI.
    """

    job_id: int | None = None

    def __call__(self, fraction: float, message: str | None = None) -> None:
        raise NotImplementedError

    def counter(self, total: int, message: str = "") -> Callable[[int], None]:
        """A callback taking increments of work done out of ``total`` (a progress bar's
        ``update``), reporting the fraction."""
        done = 0
        whole = max(total, 1)

        def advance(step: int) -> None:
            nonlocal done
            done += step
            self(min(done / whole, 1.0), message.format(done=done, total=total) or None)

        return advance

    @contextmanager
    def input_file(self, parameters: Mapping[str, Any]) -> Iterator[Path]:
        if parameters.get("file"):
            with files.local_path(files.find(parameters["file"], "file")) as path:
                yield path
        else:
            yield Path(parameters["path"])

    def output_path(self, name: str) -> Path:
        raise NotImplementedError

    def drop_output(self, name: str) -> None:
        """Forget an output (the job stores nothing for it; the CLI keeps its file)."""


class ConsoleProgress(Progress):
    """A click progress bar on stderr; outputs go where the command's options say."""

    STEPS = 1000

    def __init__(self, label: str, outputs: Mapping[str, Path] | None = None):
        self.label = label
        self.outputs = dict(outputs or {})
        self._bar: Any = None

    def __call__(self, fraction: float, message: str | None = None) -> None:
        import click

        if self._bar is None:
            if fraction <= 0:  # nothing to draw yet (and a quick job may never need it)
                return
            self._bar = click.progressbar(length=self.STEPS, label=self.label,
                                          file=sys.stderr)
            self._bar.__enter__()
        target = int(max(0.0, min(fraction, 1.0)) * self.STEPS)
        if target > self._bar.pos:
            self._bar.update(target - self._bar.pos)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def output_path(self, name: str) -> Path:
        try:
            return self.outputs[name]
        except KeyError:
            raise RuntimeError(f"the command gives no path for the output {name!r}") from None


def run_here(kind_name: str, parameters: Mapping[str, Any], progress: Progress
             ) -> dict[str, Any]:
    """Run a kind's function in this process (the CLI): same validation, same code.

    ``parameters`` are the JSON parameters (camelCase). Raises ``UserError``.
    """
    kind = kind_of(kind_name)
    loaded = validate_parameters(kind, parameters)
    try:
        with context.use(operation=kind.kind):
            value = kind.function(loaded, progress)
            if isinstance(value, FanOut):
                value = _fan_out_here(kind, loaded, value, progress)
            return dict(value or {})
    finally:
        if isinstance(progress, ConsoleProgress):
            progress.close()


class _ShareOf(Progress):
    """Child ``index`` of ``count`` run in this process: its fractions are its share of
    the parent's bar."""

    def __init__(self, parent: Progress, index: int, count: int):
        self.parent, self.index, self.count = parent, index, count

    def __call__(self, fraction: float, message: str | None = None) -> None:
        self.parent((self.index + max(0.0, min(float(fraction), 1.0))) / self.count, message)

    def output_path(self, name: str) -> Path:
        return self.parent.output_path(name)

    def drop_output(self, name: str) -> None:
        self.parent.drop_output(name)


def _fan_out_here(kind: JobKind, parameters: dict[str, Any], fan: FanOut, progress: Progress
                  ) -> Mapping[str, Any] | None:
    """A fan-out in this process (the CLI): the children one after the other, then the
    parent's ``finish``; on any failure, the parent's ``abandon``."""
    child_kind = kind_of(fan.kind)
    try:
        results = []
        for index, raw in enumerate(fan.children):
            with context.use(operation=child_kind.kind):
                done = child_kind.function(validate_parameters(child_kind, raw),
                                           _ShareOf(progress, index, len(fan.children)))
            results.append(dict(done or {}))  # type: ignore[arg-type]
        return _finished(kind, parameters, fan.state, results, progress)
    except BaseException as exc:
        if kind.abandon is not None:
            kind.abandon(parameters, fan.state, f"stopped in this process: {exc!r}"[:500])
        raise


def _finished(kind: JobKind, parameters: dict[str, Any], state: dict[str, Any],
              results: list[dict[str, Any]], progress: Progress) -> Mapping[str, Any] | None:
    if kind.finish is None:
        return {"children": results}
    return kind.finish(parameters, state, results, progress)


class _JobProgress(Progress):
    """The reporter of a job run by a runner: writes progress to the job's row from its
    own connection (never the job's transaction) and watches for cancellation."""

    def __init__(self, engine: Engine, run: _Run, outputs_dir: Path):
        self.engine = engine
        self.run = run
        self.job_id = run.job_id
        self.outputs_dir = outputs_dir
        self._last_write = 0.0
        self._dropped: set[str] = set()

    def __call__(self, fraction: float, message: str | None = None) -> None:
        if self.run.cancelled.is_set():
            raise Cancelled
        fraction = max(0.0, min(float(fraction), 1.0))
        now = time.monotonic()
        if now - self._last_write < _PROGRESS_EVERY and fraction < 1.0:
            return
        self._last_write = now
        values: dict[str, Any] = {"progress": fraction, "heartbeat_at": utcnow()}
        if message is not None:
            values["message"] = message[:500]
        self.run.write(self.engine, values)
        if self.run.cancelled.is_set():
            raise Cancelled

    def output_path(self, name: str) -> Path:
        safe = files.safe_name(name)
        self._dropped.discard(safe)
        return self.outputs_dir / safe

    def drop_output(self, name: str) -> None:
        self._dropped.add(files.safe_name(name))

    def produced(self) -> list[Path]:
        return sorted(p for p in self.outputs_dir.iterdir()
                      if p.is_file() and p.name not in self._dropped)


# --- Starting, cancelling -------------------------------------------------------------------


def start_job(kind_name: str, raw_parameters: Any, *, allow_server_paths: bool = False
              ) -> Job:
    """Validate, store a QUEUED job acting as the current actor, and hand it to the runner.

    Raises ``UserError`` (fields ``kind``, ``parameters.<name>``). ``allow_server_paths``:
    the ``path`` parameter (a file on the server) is for administrators only.
    """
    with transaction():
        job_id = create_job(kind_name, raw_parameters,
                            allow_server_paths=allow_server_paths).id
    dispatch(job_id)
    return db.session.get(Job, job_id)  # type: ignore[return-value]


def create_job(kind_name: str, raw_parameters: Any, *, allow_server_paths: bool = True,
               schedule_id: int | None = None) -> Job:
    """``start_job``'s row, in the caller's transaction; ``dispatch`` it after commit."""
    kind = kind_of(kind_name)
    if kind.internal:
        raise UserError.single(f"Jobs of kind {kind.kind!r} are started by their parent job "
                               f"only.", JobErrorCode.UNKNOWN_KIND, "kind")
    loaded = validate_parameters(kind, raw_parameters)
    if loaded.get("path") is not None and not allow_server_paths:
        raise UserError.single("Only administrators may name a file on the server; upload "
                               "it (POST /files) and pass its id as file.",
                               ErrorCode.NOT_ALLOWED, "parameters.path")
    ctx = context.current()
    if loaded.get("file") is not None:
        stored = files.find(loaded["file"], "parameters.file")
        if not allow_server_paths and not _same_owner(stored.actor, ctx.actor.to_json()):
            # Ids are guessable: a file is for the key (or agent) that uploaded it.
            raise UserError.single(f"No file with id {loaded['file']}.", ErrorCode.NOT_FOUND,
                                   "parameters.file")
    job = Job(kind=kind.kind, status=JobStatus.QUEUED, progress=0.0,
              parameters=parameters_json(kind, loaded),
              actor=dataclasses.replace(ctx.actor, via="job").to_json(),
              request_id=ctx.request_id, schedule_id=schedule_id, attempts=0,
              cancel_requested=False)
    db.session.add(job)
    db.session.flush()
    return job


def _same_owner(uploader: Mapping[str, Any], starter: Mapping[str, Any]) -> bool:
    keys = ("agentId", "service", "apiKeyPrefix")
    return all(uploader.get(k) == starter.get(k) for k in keys)


def dispatch(job_id: int) -> None:
    """Hand a QUEUED job to the queue (broker) or to this process's threads.

    Inside an open ``transaction()`` (a mutation), the job is handed over once that
    transaction commits, so no runner looks for a row it cannot see yet; a rollback
    drops it.
    """
    session = db.session()
    if in_transaction():
        session.info.setdefault(_TO_DISPATCH, []).append(job_id)
        if not session.info.get(_LISTENING):
            event.listen(session, "after_commit", _dispatch_committed)
            event.listen(session, "after_rollback", _forget_uncommitted)
            session.info[_LISTENING] = True
        return
    _send(current_app._get_current_object(), job_id)  # type: ignore[attr-defined]


_TO_DISPATCH = "rapport_jobs_to_dispatch"
_LISTENING = "rapport_jobs_dispatch_listening"


def _dispatch_committed(session: Session) -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    for job_id in session.info.pop(_TO_DISPATCH, []):
        _send(app, job_id)


def _forget_uncommitted(session: Session) -> None:
    session.info.pop(_TO_DISPATCH, None)


def _send(app: Flask, job_id: int) -> None:
    with app.app_context():
        url = broker_url()
    if url:
        from core import jobs_celery

        try:
            jobs_celery.enqueue(app, job_id)
        except Exception as exc:  # noqa: BLE001 - the job row is committed: say it failed
            log.error("job %s could not be queued: %s", job_id, exc)
            with app.app_context(), db.engine.begin() as conn:
                conn.execute(update(Job).where(
                    Job.id == job_id, Job.status == JobStatus.QUEUED).values(
                    status=JobStatus.FAILED, finished_at=utcnow(),
                    error_code=JobErrorCode.QUEUE_UNAVAILABLE,
                    error_message="The job queue (RAPPORT_BROKER_URL) could not be reached; "
                                  "start the job again once it is back."))
            with app.app_context():
                _settle_parent_of(job_id)
    else:
        _thread_runner(app).submit(job_id)


def cancel_job(job_id: int) -> Job:
    """Cancel a queued job now, or ask a running one to stop at its next progress report.

    A fanned-out parent's children are cancelled with it; the parent ends CANCELLED once
    none of them runs any more."""
    with transaction():
        job = db.session.get(Job, job_id, with_for_update=True)
        if job is None:
            raise UserError.single(f"No job with id {shown_id('Job', job_id)}.",
                                   ErrorCode.NOT_FOUND, "id")
        if job.status in FINISHED:
            raise UserError.single(f"The job already finished ({job.status.value}).",
                                   JobErrorCode.ALREADY_FINISHED, "id")
        if job.status is JobStatus.QUEUED:
            job.status = JobStatus.CANCELLED
            job.finished_at = utcnow()
            job.message = "Cancelled before it started."
        job.cancel_requested = True
        fanned_out = job.fan_out is not None
        if fanned_out:
            _stop_children(job_id)
    if fanned_out:
        _settle(job_id)
        db.session.refresh(job)
    return job


def _stop_children(parent_id: int) -> None:
    """Queued children are cancelled now, running ones at their next progress report (in
    the caller's transaction)."""
    now = utcnow()
    db.session.execute(update(Job).where(
        Job.parent_id == parent_id, Job.status == JobStatus.QUEUED).values(
        status=JobStatus.CANCELLED, finished_at=now, cancel_requested=True,
        message="Cancelled with its parent job."))
    db.session.execute(update(Job).where(
        Job.parent_id == parent_id, Job.status == JobStatus.RUNNING).values(
        cancel_requested=True))


# --- Running --------------------------------------------------------------------------------


class Outcome(enum.Enum):
    DONE = "done"  # ran (or was failed/cancelled) here
    SKIPPED = "skipped"  # finished, cancelled or taken by another worker
    RETRY_LATER = "retry_later"  # another worker looks alive on it: look again later


class _Run:
    """One attempt: the row it may write (same worker and attempt) and its cancel flag."""

    def __init__(self, job_id: int, worker: str, attempt: int, parent_id: int | None = None):
        self.job_id = job_id
        self.worker = worker
        self.attempt = attempt
        self.parent_id = parent_id
        self.cancelled = threading.Event()
        self.stop = threading.Event()

    def _mine(self) -> Any:
        return (Job.id == self.job_id, Job.status == JobStatus.RUNNING,
                Job.worker == self.worker, Job.attempts == self.attempt)

    def write(self, engine: Engine, values: dict[str, Any]) -> None:
        """Update the row if this attempt still owns it; note a cancellation request."""
        try:
            with engine.begin() as conn, _brief_sqlite_lock_wait(conn.connection):
                conn.execute(update(Job).where(*self._mine()).values(**values))
                requested = conn.execute(select(Job.cancel_requested).where(
                    Job.id == self.job_id)).scalar()
            if self.parent_id is not None and "progress" in values:
                # Its own transaction: holding this child's row while waiting for the
                # parent's would deadlock with cancel_job and _settle, which lock the
                # parent first and then update the children.
                with engine.begin() as conn:
                    conn.execute(update(Job).where(
                        Job.id == self.parent_id, Job.status == JobStatus.RUNNING).values(
                        progress=_children_progress(self.parent_id)))
        except DBAPIError as exc:  # a locked SQLite file: the next report will do
            log.warning("job %s: progress not recorded (%s)", self.job_id, exc.orig)
            return
        if requested:
            self.cancelled.set()

    def beat(self, engine: Engine, every: float) -> None:
        while not self.stop.wait(every):
            self.write(engine, {"heartbeat_at": utcnow()})


@contextmanager
def _brief_sqlite_lock_wait(dbapi_connection: Any) -> Iterator[None]:
    """On SQLite, wait at most ``_SQLITE_REPORT_WAIT_MS`` for the write lock inside the
    block, then give the pooled connection its own lock wait back."""
    raw = getattr(dbapi_connection, "driver_connection", None)
    if raw is None or not type(raw).__module__.startswith("sqlite3"):
        yield
        return
    before = raw.execute("PRAGMA busy_timeout").fetchone()[0]
    raw.execute(f"PRAGMA busy_timeout = {_SQLITE_REPORT_WAIT_MS}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout = {int(before)}")


def _children_progress(parent_id: int) -> Any:
    """The mean progress of a parent's children (finished ones count as done)."""
    child = Job.__table__.alias("child")
    return select(func.avg(case((child.c.status.in_([s.value for s in FINISHED]), 1.0),
                                else_=child.c.progress))).where(
        child.c.parent_id == parent_id).scalar_subquery()


def worker_name(suffix: str = "") -> str:
    return f"{socket.gethostname()}:{os.getpid()}{suffix}"[:200]


def run_job(job_id: int, worker: str | None = None) -> Outcome:
    """Run job ``job_id`` here if it is runnable (inside an app context)."""
    worker = worker or worker_name(f":{threading.current_thread().name}")
    claimed = _claim(job_id, worker)
    if not isinstance(claimed, _Run):
        if claimed is Outcome.DONE:  # failed as WORKER_LOST: a parent waits on it
            _settle_parent_of(job_id, worker)
        return claimed
    run = claimed
    job = db.session.get(Job, job_id)
    assert job is not None
    kind_name, request_id = job.kind, job.request_id or context.new_request_id()
    actor, raw_parameters = context.Actor.from_json(job.actor), job.parameters
    run.parent_id = job.parent_id
    db.session.remove()
    began = time.monotonic()
    # The starter's actor and request id: the audit log, events and log lines of the job
    # name who asked for it and in which request.
    with context.use(actor=actor, request_id=request_id, operation=kind_name):
        status = _execute(run, kind_name, raw_parameters, request_id)
    if status is not None:
        metrics.job_finished(kind_name, status.value, time.monotonic() - began)
    if run.parent_id is not None:
        _settle(run.parent_id, worker)
    return Outcome.DONE


def _execute(run: _Run, kind_name: str, raw_parameters: Any, request_id: str,
             finishing: tuple[dict[str, Any], list[dict[str, Any]]] | None = None
             ) -> JobStatus | None:
    """Run the kind's function for a claimed job (or, with ``finishing`` = (state, child
    results), the ``finish`` of a fanned-out parent); record how it ended (the status)."""
    engine = db.engine
    beat = threading.Thread(target=run.beat, args=(engine, heartbeat_seconds()),
                            name=f"rapport-job-{run.job_id}-heartbeat", daemon=True)
    beat.start()
    outputs = Path(tempfile.mkdtemp(prefix=f"rapport-job-{run.job_id}-"))
    kind = job_kinds().get(kind_name)
    parameters: dict[str, Any] | None = None
    status: JobStatus | None = None
    try:
        if kind is None:
            raise UserError.single(f"No job kind {kind_name!r} is enabled here.",
                                   JobErrorCode.UNKNOWN_KIND, "kind")
        reporter = _JobProgress(engine, run, outputs)
        parameters = validate_parameters(kind, raw_parameters)
        if finishing is None:
            value = kind.function(parameters, reporter)
        else:
            value = _finished(kind, parameters, finishing[0], finishing[1], reporter)
        db.session.rollback()  # whatever the function left open is not ours to commit
        if isinstance(value, FanOut):
            if finishing is not None:
                raise RuntimeError(f"{kind_name}: finish returned another fan-out")
            return _fan_out(run, kind, parameters, value)
        status = _succeed(run, dict(value or {}), reporter.produced())
        return status
    except Cancelled:
        db.session.rollback()
        status = _finish(run, JobStatus.CANCELLED, message="Cancelled while running.")
        return status
    except UserError as exc:
        db.session.rollback()
        first = exc.errors[0] if exc.errors else FieldError(str(exc))
        status = _finish(run, JobStatus.FAILED, error=(first.code, str(exc)))
        return status
    except DecryptionError as exc:  # a key missing, or a stored file altered: known
        db.session.rollback()
        log.error("job %s (%s): %s", run.job_id, kind_name, exc)
        return _finish(run, JobStatus.FAILED, error=(
            JobErrorCode.DECRYPTION_FAILED,
            f"Stored data could not be decrypted with the worker's keys; the worker's log "
            f"has the details (request id {request_id})."))
    except Exception as exc:  # noqa: BLE001 - any crash fails the job, told without detail
        db.session.rollback()
        if is_statement_timeout(exc):
            status = _finish(run, JobStatus.FAILED, error=(
                JobErrorCode.STATEMENT_TIMEOUT,
                "A database statement ran longer than RAPPORT_JOB_STATEMENT_TIMEOUT_MS."))
            return status
        log.exception("job %s (%s) failed", run.job_id, kind_name)
        status = _finish(run, JobStatus.FAILED, error=(
            JobErrorCode.INTERNAL_ERROR,
            f"The job stopped on an unexpected error ({type(exc).__name__}); the worker's "
            f"log has the details (request id {request_id})."))
        return status
    finally:
        if finishing is not None and status is not JobStatus.SUCCEEDED and kind is not None:
            _abandon(kind, parameters, finishing[0], f"the final step ended "
                     f"{status.value if status else 'elsewhere'}")
        run.stop.set()
        beat.join(timeout=5)
        shutil.rmtree(outputs, ignore_errors=True)
        db.session.remove()


def _claim(job_id: int, worker: str) -> _Run | Outcome:
    """Take the job: QUEUED, or RUNNING with a dead worker (then it is attempt n+1, or a
    failure once the attempts are used up). A compare-and-set on (status, attempts) makes
    two workers holding the same message run it once."""
    now = utcnow()
    with transaction():
        job = db.session.get(Job, job_id)
        if job is None or job.status in FINISHED:
            return Outcome.SKIPPED
        if job.status is JobStatus.QUEUED and job.cancel_requested:
            return Outcome.SKIPPED
        if job.fan_out is not None:  # its children run it now, and finish it
            return Outcome.SKIPPED
        if job.status is JobStatus.RUNNING:
            if job.heartbeat_at is not None and now - job.heartbeat_at < stale_after():
                return Outcome.RETRY_LATER
            if job.attempts >= max_attempts():
                failed = db.session.execute(update(Job).where(
                    Job.id == job_id, Job.status == JobStatus.RUNNING,
                    Job.attempts == job.attempts).values(
                    status=JobStatus.FAILED, finished_at=now,
                    error_code=JobErrorCode.WORKER_LOST,
                    error_message=(f"The worker running it stopped {job.attempts} time(s) "
                                   f"(last: {job.worker}); not retried after "
                                   f"{max_attempts()} attempts."))).rowcount
                if failed:
                    metrics.job_finished(job.kind, JobStatus.FAILED.value,
                                         (now - (job.started_at or now)).total_seconds())
                return Outcome.DONE
            log.warning("job %s: worker %s stopped while running it; attempt %s of %s",
                        job_id, job.worker, job.attempts + 1, max_attempts())
        attempt = job.attempts + 1
        claimed = db.session.execute(update(Job).where(
            Job.id == job_id, Job.status == job.status, Job.attempts == job.attempts).values(
            status=JobStatus.RUNNING, attempts=attempt, worker=worker, heartbeat_at=now,
            started_at=job.started_at or now,
            message=None if job.status is JobStatus.QUEUED else
            f"Attempt {attempt}: the previous worker stopped.")).rowcount
    return _Run(job_id, worker, attempt) if claimed == 1 else Outcome.SKIPPED


def _succeed(run: _Run, result: dict[str, Any], outputs: list[Path]) -> JobStatus | None:
    with transaction():
        if outputs:
            stored = [files.store_path(path, path.name, _content_type(path), job_id=run.job_id)
                      for path in outputs]
            result = {**result, "files": [files.file_id(row) for row in stored]}
        done = db.session.execute(update(Job).where(*run._mine()).values(
            status=JobStatus.SUCCEEDED, progress=1.0, result=result, finished_at=utcnow(),
            heartbeat_at=utcnow())).rowcount
        if done != 1:  # another attempt took over: keep its outcome, not ours
            db.session.rollback()
            return None
    return JobStatus.SUCCEEDED


def _finish(run: _Run, status: JobStatus, *, message: str | None = None,
            error: tuple[str, str] | None = None) -> JobStatus | None:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow()}
    if message is not None:
        values["message"] = message
    if error is not None:
        values["error_code"], values["error_message"] = error[0][:64], error[1]
    with transaction():
        done = db.session.execute(update(Job).where(*run._mine()).values(**values)).rowcount
    return status if done == 1 else None


# --- Fan-out ---------------------------------------------------------------------------------


def _fan_out(run: _Run, kind: JobKind, parameters: dict[str, Any], fan: FanOut
             ) -> JobStatus | None:
    """Store the children of a claimed parent and queue them; the parent waits for them
    (no worker, no heartbeat: ``_claim`` skips it) unless it was cancelled meanwhile."""
    child_kind = kind_of(fan.kind)
    if not child_kind.internal:
        raise RuntimeError(f"{kind.kind}: fan-out children must be of an internal kind, "
                           f"not {fan.kind!r}")
    children = [parameters_json(child_kind, validate_parameters(child_kind, raw))
                for raw in fan.children]
    if not children:
        return _execute_finish_now(run, kind, parameters, fan)
    with transaction():
        parent = db.session.get(Job, run.job_id, with_for_update=True)
        mine = (parent is not None and parent.status is JobStatus.RUNNING
                and parent.worker == run.worker and parent.attempts == run.attempt)
        if not mine:
            return None
        assert parent is not None
        if parent.cancel_requested:
            cancelled = True
        else:
            cancelled = False
            rows = [Job(kind=child_kind.kind, status=JobStatus.QUEUED, progress=0.0,
                        parameters=child, actor=parent.actor, request_id=parent.request_id,
                        attempts=0, cancel_requested=False, parent_id=parent.id)
                    for child in children]
            db.session.add_all(rows)
            parent.fan_out = {"kind": child_kind.kind, "children": len(rows),
                              "state": fan.state}
            parent.worker = None
            parent.heartbeat_at = utcnow()
            parent.progress = 0.0
            parent.message = f"0 of {len(rows)} {child_kind.kind} jobs done"
            db.session.flush()
            child_ids = [row.id for row in rows]
    if cancelled:
        _abandon(kind, parameters, fan.state, "cancelled before its children started")
        return _finish(run, JobStatus.CANCELLED, message="Cancelled while running.")
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    for child_id in child_ids:
        _send(app, child_id)
    return None


def _execute_finish_now(run: _Run, kind: JobKind, parameters: dict[str, Any], fan: FanOut
                        ) -> JobStatus | None:
    """A fan-out with no child (nothing to split): the parent finishes at once."""
    reporter = _JobProgress(db.engine, run, Path(tempfile.mkdtemp(
        prefix=f"rapport-job-{run.job_id}-")))
    try:
        value = _finished(kind, parameters, fan.state, [], reporter)
    except BaseException:
        _abandon(kind, parameters, fan.state, "the final step failed")
        raise
    db.session.rollback()
    return _succeed(run, dict(value or {}), reporter.produced())


def _abandon(kind: JobKind, parameters: dict[str, Any] | None, state: dict[str, Any],
             reason: str) -> None:
    if kind.abandon is None:
        return
    try:
        kind.abandon(parameters or {}, state, reason)
    except Exception:  # noqa: BLE001 - the job's outcome is recorded: log the cleanup's
        db.session.rollback()
        log.exception("%s: abandoning a fan-out failed", kind.kind)


def _settle_parent_of(job_id: int, worker: str | None = None) -> None:
    parent_id = db.session.scalar(select(Job.parent_id).where(Job.id == job_id))
    db.session.rollback()
    if parent_id is not None:
        _settle(parent_id, worker)


def _settle(parent_id: int, worker: str | None = None) -> None:
    """After a child of ``parent_id`` ended (or the parent was cancelled): fail, cancel or
    finish the parent once its children say so; otherwise record how far they got.

    The parent's row lock orders the siblings' calls; the compare-and-set on its ``worker``
    (NULL while it waits) makes one caller only run ``finish``."""
    worker = worker or worker_name(f":{threading.current_thread().name}")
    ending: JobStatus | None = None
    with transaction():
        parent = db.session.get(Job, parent_id, with_for_update=True)
        if parent is None or parent.fan_out is None or parent.status is not JobStatus.RUNNING:
            return
        children = db.session.execute(select(
            Job.id, Job.status, Job.error_code, Job.error_message).where(
            Job.parent_id == parent_id).order_by(Job.id)).all()
        running = [c for c in children if c.status not in FINISHED]
        failed = [c for c in children if c.status is JobStatus.FAILED]
        stopped = parent.cancel_requested or any(
            c.status is JobStatus.CANCELLED for c in children)
        done = sum(c.status is JobStatus.SUCCEEDED for c in children)
        now = utcnow()
        if failed:
            first = failed[0]
            parent.status, parent.finished_at = JobStatus.FAILED, now
            parent.error_code = first.error_code or JobErrorCode.INTERNAL_ERROR
            parent.error_message = (f"Child job {first.id} ({parent.fan_out['kind']}) "
                                    f"failed: {first.error_message}")
            _stop_children(parent_id)
            ending = JobStatus.FAILED
        elif stopped and not running:
            parent.status, parent.finished_at = JobStatus.CANCELLED, now
            parent.message = "Cancelled while running."
            ending = JobStatus.CANCELLED
        elif stopped:
            _stop_children(parent_id)
            return
        elif running:
            parent.progress = db.session.scalar(select(_children_progress(parent_id)))
            parent.message = f"{done} of {len(children)} {parent.fan_out['kind']} jobs done"
            return
        else:
            claimed = db.session.execute(update(Job).where(
                Job.id == parent_id, Job.status == JobStatus.RUNNING,
                Job.worker.is_(None)).values(
                worker=worker, heartbeat_at=now,
                message=f"{done} of {len(children)} {parent.fan_out['kind']} jobs done; "
                        f"finishing")).rowcount
            if claimed != 1:
                return
        kind_name, attempt, fan = parent.kind, parent.attempts, parent.fan_out
        actor, request_id = context.Actor.from_json(parent.actor), parent.request_id
        raw_parameters = parent.parameters
        took = (now - (parent.started_at or now)).total_seconds()
        results_of = [c.id for c in children]
    kind = job_kinds().get(kind_name)
    began = time.monotonic()
    with context.use(actor=actor, request_id=request_id or context.new_request_id(),
                     operation=kind_name):
        if ending is not None:
            metrics.job_finished(kind_name, ending.value, took)
            if kind is not None:
                _abandon(kind, validate_parameters(kind, raw_parameters), fan["state"],
                         f"the job ended {ending.value}")
            return
        results = [dict(r or {}) for r in db.session.scalars(
            select(Job.result).where(Job.id.in_(results_of)).order_by(Job.id))]
        db.session.remove()
        status = _execute(_Run(parent_id, worker, attempt), kind_name, raw_parameters,
                          request_id or "", finishing=(fan["state"], results))
    if status is not None:
        metrics.job_finished(kind_name, status.value, time.monotonic() - began)


def _content_type(path: Path) -> str:
    return {".csv": "text/csv", ".html": "text/html", ".json": "application/json",
            ".jsonl": "application/x-ndjson"}.get(path.suffix.lower(),
                                                  "application/octet-stream")


def recover_orphans(queued_for: dt.timedelta = dt.timedelta(minutes=2)) -> list[int]:
    """Without a broker: hand to this process's threads the jobs no runner holds any more
    (a server stopped with jobs in its queue, or died while running one). A job still
    held elsewhere is run once anyway: taking a job is a compare-and-set."""
    now = utcnow()
    orphans = list(db.session.scalars(select(Job.id).where(
        ((Job.status == JobStatus.QUEUED) & (Job.cancel_requested.is_(False))
         & (Job.created_at < now - queued_for))
        | ((Job.status == JobStatus.RUNNING) & (Job.heartbeat_at < now - stale_after())
           & Job.fan_out.is_(None)))
        .order_by(Job.id)))
    db.session.rollback()
    for job_id in orphans:
        _send(current_app._get_current_object(), job_id)  # type: ignore[attr-defined]
    return orphans


# --- The embedded runner (no broker) ----------------------------------------------------------


@dataclass
class _JobsState:
    kinds: dict[str, JobKind] | None = None
    threads: _ThreadRunner | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class _ThreadRunner:
    """A bounded pool of threads in this process, each job in its own app context."""

    def __init__(self, app: Flask, size: int):
        self.app = app
        self.pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="rapport-job")

    def submit(self, job_id: int) -> None:
        self.pool.submit(self._run, job_id)

    def _run(self, job_id: int) -> None:
        with self.app.app_context():
            try:
                run_job(job_id, worker_name(f":{threading.current_thread().name}"))
            except Exception:  # noqa: BLE001 - a thread has no caller to tell
                log.exception("job %s could not be run", job_id)


def _thread_runner(app: Flask) -> _ThreadRunner:
    job_kinds(app)
    state: _JobsState = app.extensions[EXTENSION]
    with state.lock:
        if state.threads is None:
            with app.app_context():
                size = int(_setting("RAPPORT_JOB_THREADS", DEFAULT_THREADS))
            state.threads = _ThreadRunner(app, size)
        return state.threads


def wait_for_threads(app: Flask, timeout: float | None = None) -> None:
    """Let the embedded runner finish what it holds (tests, ``rapport scheduler``)."""
    state: _JobsState | None = app.extensions.get(EXTENSION)
    if state is not None and state.threads is not None:
        state.threads.pool.shutdown(wait=True)
        state.threads = None
