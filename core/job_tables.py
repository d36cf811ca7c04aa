"""Tables of the job system: jobs, their schedules, and stored files (inputs and outputs).

They live beside ``core.models`` (which imports them) so the job machinery can change
without touching the domain models. Migration: core_0006.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    BigInteger, Boolean, Enum, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.crypto import EncryptedString
from core.db import BigIntPK, JSONDocument, UTCDateTime, db, utcnow


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class Job(db.Model):
    """One run of a job kind: who started it, with what, how far it got, what it gave."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(80))
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=20,
             values_callable=lambda e: [m.value for m in e]),
        default=JobStatus.QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(String(500))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(128))
    schedule_id: Mapped[int | None] = mapped_column(
        ForeignKey("schedules.id", ondelete="SET NULL"))
    #: Set by cancelJob on a running job; the job's next progress report stops it.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    #: Written every few seconds while the job runs: a stale one means its worker died.
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: A child job of a fan-out: the job that enqueued it (core.jobs.FanOut).
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    #: Set on a parent once it fanned out: ``{"kind", "children", "state"}``; the parent
    #: then waits for its children, which finish it (migration core_0007).
    fan_out: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)

    __table_args__ = (
        # jobs(filter: {status, kind}) pages newest first.
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_kind_id", "kind", "id"),
        Index("ix_jobs_parent_id", "parent_id", "status"),
    )


class Schedule(db.Model):
    """A periodic job: a cron expression or an interval, read by ``rapport scheduler``."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(80))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    cron: Mapped[str | None] = mapped_column(String(120))
    interval_seconds: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    next_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    last_job_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class StoredFile(db.Model):
    """An uploaded job input or a produced job output.

    The bytes are in ``content`` (the default), or under ``RAPPORT_FILES_DIR`` at ``path``
    when that shared folder is configured (workers on several machines, large files).
    Either way they are encrypted (``core.files``: AES-GCM frames under the file's own
    ``data_key``, which is itself encrypted with ``RAPPORT_ENCRYPTION_KEYS``, so
    ``rapport keys rotate`` rewraps it without touching the bytes). The digest is sealed
    too: a clear SHA-256 of a small file would confirm a guessed e-mail.
    """

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(120))
    size: Mapped[int] = mapped_column(BigInteger)
    # Deferred: listing files (a job's links) needs neither, so it works even with a key
    # missing; only opening or checking a file does.
    sha256: Mapped[str] = mapped_column(EncryptedString(), deferred=True)
    data_key: Mapped[str] = mapped_column(EncryptedString(), deferred=True)
    content: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    path: Mapped[str | None] = mapped_column(String(500))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"),
                                               index=True)
    actor: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
