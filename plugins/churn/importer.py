"""``rapport churn import FILE``: churn records from CSV or JSON Lines (CONTRACTS.md,
"Churn records": ``customer_external_id`` (+ ``customer_source``), ``churned_at``,
``type``, ``reason``, ``note``).

The file is read with core's streaming reader and marked in batches through
``service.mark_customers_churned`` (the API's validation), each batch its own
transaction with ``partial=True``: a bad row goes to the rejects file (``line, field,
code, message``; ``field`` is the column) and does not hold back the others. A re-run
skips the records already stored (same customer and ``churned_at``), so ``churned_at``
is required. Columns other than those five are refused: a churn record has no free-form
part, and a misspelt column would otherwise be dropped silently.

A snapshot (CONTRACTS.md, "Churn data as businesses export it") has a ``churned`` column
(yes/no, true/false, 1/0) instead of ``churned_at``, dated by ``--as-of DATE`` or an
``as_of`` column (a date means the end of that day in RAPPORT_TIMEZONE, capped at the time
of the import; a datetime is exact). A churned row becomes a record dated at the snapshot,
type and reason OTHER unless given; a row not churned writes nothing (counted as skipped),
and so does a churned row of a customer already churned (a re-run).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.app import rapport
from core.dates import DateError, parse_moment
from core.db import db, utcnow
from core.errors import ErrorCode, FieldError
from core.models import Customer, CustomerStatus
from core.importers import (
    BatchOutcome, ImportFileError, ImportJob, Record, RecordReader, default_rejects_path,
    detect_format,
)
from core.schemas import UTCDateTimeField
from core.services import transaction
from core.services.customers import customer_ids_by_external_id

from plugins.churn import report, service
from plugins.churn.errors import ChurnErrorCode

COLUMNS = ("customer_external_id", "customer_source", "churned_at", "type", "reason", "note")
REQUIRED = ("customer_external_id", "churned_at", "type", "reason")
SNAPSHOT_COLUMNS = ("customer_external_id", "customer_source", "churned", "as_of", "type",
                    "reason", "note")
SNAPSHOT_REQUIRED = ("customer_external_id", "churned")
_YES = {"yes", "y", "true", "t", "1"}
_NO = {"no", "n", "false", "f", "0"}
_KEY_COLUMNS = ("customer_external_id", "customer_source")
DEFAULT_SOURCE = "default"
_DATE = UTCDateTimeField()
_FIELD_TO_COLUMN = {"customerId": "customer_external_id", "churnedAt": "churned_at"}


class ChurnRecordImporter:
    """core's ``Importer`` protocol for churn records: core's ``ImportJob`` runs it.

    The churn-rate jump check runs once after the import (``check_jumps``), over the
    months the imported records fall in, rather than after every batch.
    """

    def __init__(self, as_of: str | None = None) -> None:
        #: One imported churn date per month of RAPPORT_TIMEZONE (the months to check).
        self.churn_dates: dict[dt.date, dt.datetime] = {}
        #: The snapshot date of ``--as-of`` (text as given; parsed per CONTRACTS "Dates").
        self.as_of = as_of
        self.snapshot = False
        self.not_churned = 0

    def check_jumps(self) -> list[report.Jump]:
        with transaction():
            return report.check_churn_jumps(self.churn_dates.values())

    def check_columns(self, columns: Sequence[str]) -> None:
        if "churned" in columns:
            self.snapshot = True
            self._check_snapshot_columns(columns)
            return
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise ImportFileError(f"The header has no {', '.join(missing)} column"
                                  f"{'s' if len(missing) > 1 else ''}; required: "
                                  f"{', '.join(REQUIRED)}.")
        unknown = [c for c in columns if c not in COLUMNS]
        if unknown:
            raise ImportFileError(f"Unknown column{'s' if len(unknown) > 1 else ''} "
                                  f"{', '.join(unknown)}; a churn file has "
                                  f"{', '.join(COLUMNS)}.")

    def _check_snapshot_columns(self, columns: Sequence[str]) -> None:
        missing = [c for c in SNAPSHOT_REQUIRED if c not in columns]
        if missing:
            raise ImportFileError(f"The header has no {', '.join(missing)} column; a snapshot "
                                  f"has {', '.join(SNAPSHOT_REQUIRED)}.")
        unknown = [c for c in columns if c not in SNAPSHOT_COLUMNS]
        if unknown:
            raise ImportFileError(f"Unknown column{'s' if len(unknown) > 1 else ''} "
                                  f"{', '.join(unknown)}; a churn snapshot has "
                                  f"{', '.join(SNAPSHOT_COLUMNS)}.")
        if "as_of" not in columns and self.as_of is None:
            raise ImportFileError("A snapshot of churned flags needs its date: give --as-of "
                                  "DATE or an as_of column.")
        if self.as_of is not None:
            try:
                self._snapshot_moment(self.as_of, "as_of")
            except DateError as exc:
                raise ImportFileError(f"--as-of: {exc.errors[0].message}") from None

    def _snapshot_moment(self, text: str, field: str) -> dt.datetime:
        moment = parse_moment(text, rapport().settings.tz, ends=True, field=field)
        # The end of today is still to come: a snapshot taken today is dated now.
        return min(moment, utcnow())

    def _snapshot_rows(self, records: Sequence[Record], outcome: BatchOutcome) -> list[Record]:
        """Snapshot rows as churn rows (``churned_at`` set, OTHER defaults); rows not
        churned are counted and dropped; bad flags and dates rejected."""
        rows: list[Record] = []
        for record in records:
            values = dict(record.values)
            flag = str(values.pop("churned", "") or "").strip().lower()
            if flag not in _YES | _NO:
                outcome.rejected[record.line] = [FieldError(
                    "Use yes or no (true/false, 1/0).",
                    ErrorCode.REQUIRED if not flag else ErrorCode.INVALID, "churned")]
                continue
            when_text = values.pop("as_of", None) or self.as_of
            if when_text is None:
                outcome.rejected[record.line] = [FieldError(
                    "Missing data for required field.", ErrorCode.REQUIRED, "as_of")]
                continue
            try:
                when = self._snapshot_moment(str(when_text), "as_of")
            except DateError as exc:
                outcome.rejected[record.line] = exc.errors
                continue
            if flag in _NO:
                outcome.skipped += 1
                self.not_churned += 1
                continue
            values["churned_at"] = when.isoformat()
            values["type"] = values.get("type") or "other"
            values["reason"] = values.get("reason") or "other"
            rows.append(Record(record.line, values))
        keys = {_customer_key(r.values) for r in rows if not _row_problems(r.values)}
        churned = _already_churned(customer_ids_by_external_id(keys))
        kept = []
        for record in rows:
            key = _customer_key(record.values)
            if key in churned:
                outcome.skipped += 1  # a re-run, or churned already by another record
            else:
                kept.append(record)
        return kept

    def import_batch(self, records: Sequence[Record]) -> BatchOutcome:
        """Mark one batch churned; rows that cannot be are reported by line."""
        outcome = BatchOutcome()
        # JSON Lines has no header: a row with a churned flag makes it a snapshot.
        if self.snapshot or any("churned" in r.values for r in records):
            self.snapshot = True
            records = self._snapshot_rows(records, outcome)
        for record in records:
            problems = _row_problems(record.values)
            if problems:
                outcome.rejected[record.line] = problems
        usable = [r for r in records if r.line not in outcome.rejected]
        customers = customer_ids_by_external_id({_customer_key(r.values) for r in usable})
        items: list[dict[str, Any]] = []
        lines: list[int] = []
        for record in usable:
            key = _customer_key(record.values)
            if key not in customers:
                outcome.rejected[record.line] = [FieldError(
                    f"No customer with external id {key[1]!r} of source {key[0]!r}; import "
                    f"the customers first.", ErrorCode.NOT_FOUND, "customer_external_id")]
                continue
            values = record.values
            # As read: the API's schema refuses a JSON value that is not text (and NUL).
            item = {"customer_id": customers[key], "churned_at": values["churned_at"],
                    "type": values["type"], "reason": values["reason"]}
            if values.get("note") is not None:
                item["note"] = values["note"]
            items.append(item)
            lines.append(record.line)
        if items:
            result = service.mark_customers_churned(items, partial=True, check_jumps=False,
                                                    imported=True)
            tz = report.business_tz()
            for index in result.recorded_ids:
                # Parsed as the service parsed it; keyed by the month the report uses (a
                # date's month in UTC or in its own offset may be another one).
                when = _DATE.deserialize(items[index]["churned_at"])
                self.churn_dates.setdefault(report.month_of(when, tz), when)
            outcome.imported = result.recorded
            outcome.skipped += len(result.existing_ids)
            for index, errors in result.rejected.items():
                outcome.rejected[lines[index]] = [self._as_column(e) for e in errors]
        return outcome

    def _as_column(self, error: FieldError) -> FieldError:
        """A service error named after the file's column; in a snapshot the date is the
        snapshot's (``as_of``), and a customer that did not exist yet needs its own start."""
        column = _FIELD_TO_COLUMN.get(error.field or "", error.field)
        if not self.snapshot or column != "churned_at":
            return FieldError(error.message, error.code, column)
        message = error.message.replace("The churn date", "The snapshot date")
        if error.code == ChurnErrorCode.BEFORE_CUSTOMER_EXISTED:
            message += (" Give the customer its start date (customer_since in the customer "
                        "import, or customerSince) when its record was created later.")
        return FieldError(message, error.code, "as_of")


def _row_problems(values: dict[str, Any]) -> list[FieldError]:
    """What keeps a row from reaching the service: unknown or missing columns, and a
    customer key that cannot be looked up (not text or a whole number, or with NUL, which
    PostgreSQL cannot compare)."""
    problems = [FieldError("Unknown field.", ErrorCode.UNKNOWN_FIELD, k)
                for k in values if k not in COLUMNS]
    problems += [FieldError("Missing data for required field.", ErrorCode.REQUIRED, k)
                 for k in REQUIRED if k not in values]
    for column in _KEY_COLUMNS:
        value = values.get(column)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            problems.append(FieldError("Use text or a whole number.", ErrorCode.INVALID, column))
        elif "\x00" in str(value):
            problems.append(FieldError("Text may not contain the NUL character.",
                                       ErrorCode.INVALID, column))
    return problems


def _already_churned(customers: dict[tuple[str, str], int]) -> set[tuple[str, str]]:
    if not customers:
        return set()
    churned = set(db.session.scalars(select(Customer.id).where(
        Customer.id.in_(customers.values()), Customer.status == CustomerStatus.CHURNED)))
    return {key for key, cid in customers.items() if cid in churned}


def _customer_key(values: dict[str, Any]) -> tuple[str, str]:
    return (str(values.get("customer_source") or DEFAULT_SOURCE),
            str(values["customer_external_id"]))


@contextmanager
def open_churn_import(path: Path, *, file_format: str | None = None, encoding: str = "utf-8",
                      rejects_path: Path | None = None, as_of: str | None = None
                      ) -> Iterator[ImportJob]:
    """Check ``path`` (format, encoding, header) without writing anything. ``as_of``
    dates a snapshot file (a ``churned`` column)."""
    reader = RecordReader(path, detect_format(path, file_format), encoding)
    try:
        importer = ChurnRecordImporter(as_of)
        if reader.columns is not None:
            importer.check_columns(reader.columns)
        # The checks read interactions and churn records by customer: right after a bulk
        # load, before autovacuum analyzed it, the planner scanned the whole interactions
        # table per batch (60 s instead of 4 s with 228,000 interactions; issue 14).
        from plugins.churn.features import analyze_stale

        analyze_stale(["customers", "interactions", "churn_records",
                       "customer_external_ids"])
        yield ImportJob(importer, reader, rejects_path or default_rejects_path(path))
    finally:
        reader.close()
