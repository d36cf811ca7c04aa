"""Reading the audit log outside GraphQL: ``rapport audit export`` writes it as CSV.

The export runs on the machine with the database and the encryption keys, for an
operator: e-mail and phone values inside ``changes`` are written decrypted.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from flask.cli import AppGroup
from sqlalchemy import func, select

from core import changes
from core.db import db
from core.ids import decode_global_id, global_id
from core.models import AuditEntry, AuditObject

COLUMNS = ("id", "occurredAt", "operation", "agentId", "service", "apiKeyPrefix",
           "onBehalfOfAgentId", "via", "objectIds", "changes", "requestId")
_BATCH = 1000


@dataclass(frozen=True)
class AuditFilter:
    """Entries at or after ``start``, before ``end``, naming ``object_id``, of ``operation``."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    object_id: str | None = None
    operation: str | None = None

    def conditions(self) -> list[Any]:
        found: list[Any] = []
        if self.start is not None:
            found.append(AuditEntry.occurred_at >= self.start)
        if self.end is not None:
            found.append(AuditEntry.occurred_at < self.end)
        if self.object_id is not None:
            found.append(AuditEntry.id.in_(select(AuditObject.entry_id).where(
                AuditObject.object_id == self.object_id)))
        if self.operation is not None:
            found.append(AuditEntry.operation == self.operation)
        return found


def count_entries(spec: AuditFilter) -> int:
    return db.session.scalar(select(func.count()).select_from(AuditEntry).where(
        *spec.conditions())) or 0


def entries(spec: AuditFilter) -> Iterator[AuditEntry]:
    """Oldest first, in batches by id (keyset: no OFFSET, constant memory)."""
    after = 0
    while True:
        batch = db.session.scalars(select(AuditEntry).where(
            *spec.conditions(), AuditEntry.id > after).order_by(AuditEntry.id)
            .limit(_BATCH)).all()
        if not batch:
            return
        yield from batch
        after = batch[-1].id
        db.session.expunge_all()


def csv_row(entry: AuditEntry) -> list[Any]:
    actor = entry.actor or {}
    readable = None if entry.changes is None else {
        name: [changes.unseal(name, v) for v in pair] for name, pair in entry.changes.items()}
    return [global_id("AuditEntry", entry.id), entry.occurred_at.isoformat(), entry.operation, actor.get("agentId"),
            actor.get("service"), actor.get("apiKeyPrefix"), actor.get("onBehalfOfAgentId"),
            actor.get("via"), " ".join(entry.object_ids or []),
            "" if readable is None else json.dumps(readable, ensure_ascii=False),
            entry.request_id]


def export_csv(out: Path, spec: AuditFilter,
               on_progress: Callable[[int], None] | None = None) -> int:
    """Write the entries ``spec`` selects to ``out``; returns how many."""
    written = 0
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for entry in entries(spec):
            writer.writerow(csv_row(entry))
            written += 1
            if on_progress and written % 100 == 0:
                on_progress(100)
    if on_progress and written % 100:
        on_progress(written % 100)
    return written


def _moment(value: str | None, name: str, end: bool) -> dt.datetime | None:
    """A date (00:00 UTC of that day; as an end, of the next day) or an ISO datetime
    (without an offset: UTC)."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            if not dt.date(1900, 1, 1) <= day <= dt.date(9998, 12, 31):
                raise ValueError
            moment = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
            return moment + dt.timedelta(days=1) if end else moment
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 "
                                 f"datetime", param_hint=name) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


audit_group = AppGroup("audit", help="The audit log: who changed what, when, through which "
                                      "credentials.")


@audit_group.command("export")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The CSV file to write.")
@click.option("--from", "start", default=None, help="Entries at or after this date/time.")
@click.option("--to", "end", default=None, help="Entries up to this date (included) or "
                                                "before this datetime.")
@click.option("--object", "object_id", default=None, help="Entries naming this global id.")
@click.option("--operation", default=None, help="Entries of this operation "
                                                "(createCustomer, loyalty.expire, ...).")
def audit_export(out: Path, start: str | None, end: str | None, object_id: str | None,
                 operation: str | None) -> None:
    """Export audit entries as CSV, oldest first (e-mail and phone values decrypted)."""
    if object_id is not None:
        try:
            decode_global_id(object_id)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--object") from None
    spec = AuditFilter(_moment(start, "--from", False), _moment(end, "--to", True),
                       object_id, operation)
    total = count_entries(spec)
    with click.progressbar(length=total, label="Exporting the audit log",
                           file=sys.stderr) as bar:
        written = export_csv(out, spec, bar.update)
    click.echo(f"exported {written} audit entries to {out}")
