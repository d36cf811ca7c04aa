"""Streaming CSV / JSON Lines importers behind ``rapport import customers|interactions``.

A file is read record by record and handed to the services in batches, so memory stays
flat whatever its size. Every batch is committed on its own: a bad row goes to the rejects
file with its line number and does not hold back the good rows around it. Re-running an
import skips what is already stored, recognised by ``source`` + ``external_id``.

Column names are the field names of CONTRACTS.md ("CSV / JSON Lines import formats");
unknown columns become customer attributes or interaction payload. Validation is the
API's own (``CustomerSchema`` and ``InteractionSchema``, through the services). Choices
where the contract is silent:

- ``external_id`` is required on every row (customers and interactions): without it a
  re-run would import the row twice. ``source`` and ``customer_source`` default to
  ``default``.
- An empty cell, a blank string or a JSON null means "no value".
- CSV values of declared attributes are typed (number, boolean, date, category); values
  of undeclared attributes stay text.
- ``refers_to`` names an interaction of the same ``source`` stored before, or earlier in
  the file; a forward reference is rejected.
- The rejects file is CSV with ``line, field, code, message``: one row per problem,
  ``line`` the row's first physical line (the header is line 1), ``field`` the column.
  It is rewritten by every run.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from itertools import chain, islice
from pathlib import Path
from typing import Any, Literal, Protocol

from marshmallow import ValidationError
from sqlalchemy import Connection, event, select
from sqlalchemy.orm import Session, SessionTransaction

from core.db import db
from core.errors import ErrorCode, FieldError, errors_from_marshmallow
from core.attributes import declared_attributes, typed_attribute, typed_attributes
from core.models import Interaction
from core.schemas import CustomerSchema, unstorable_text_fields
from core.services.customers import customer_ids_by_external_id, import_customers
from core.services.interactions import (
    BatchResult, external_key_condition, record_interactions,
)

Entity = Literal["customers", "interactions"]
DEFAULT_SOURCE = "default"
#: Rows per transaction. Each batch pays a fixed set of statements (look-ups, the plugins'
#: batch hooks, the audit entry): at 1,000 rows they were a third of an import's time.
DEFAULT_BATCH_SIZE = 5000
REJECTS_HEADER = ("line", "field", "code", "message")
_SCAN_CHUNK = 1 << 20


class ImportFileError(Exception):
    """The file cannot be imported (missing, unreadable, wrong header): nothing was written,
    or, when raised mid-file, only the batches before the stated line were."""


class FileFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


_EXTENSIONS = {".csv": FileFormat.CSV, ".jsonl": FileFormat.JSONL, ".ndjson": FileFormat.JSONL}


def detect_format(path: Path, given: str | None = None) -> FileFormat:
    """``given`` wins; otherwise the extension decides."""
    if given:
        return FileFormat(given)
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise ImportFileError(
            f"Cannot tell the format of {path.name} from its extension; name it .csv, .jsonl "
            f"or .ndjson, or give --format csv|jsonl.")
    return found


# --- Reading records ------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One data row: its first line in the file and its non-empty values by column name."""

    line: int
    values: dict[str, Any]
    problem: FieldError | None = None  # set when the line could not be read as a record


def _text_encoding(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ImportFileError(f"Unknown encoding {encoding!r}; try utf-8 or latin-1."
                              ) from None
    # Spreadsheets often start UTF-8 files with a byte-order mark; it is not part of a name.
    return "utf-8-sig" if name == "utf-8" else name


def _check_decodable(path: Path, codec: str, encoding: str) -> None:
    """Decode the whole file once before writing anything.

    A decoding error found halfway through the import would leave the file half imported;
    this pass costs a fraction of a second per 100 MB.
    """
    decoder = codecs.getincrementaldecoder(codec)("strict")
    line = 1
    with path.open("rb") as raw:
        for chunk in iter(lambda: raw.read(_SCAN_CHUNK), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                near = line + chunk[:max(exc.start, 0)].count(b"\n")
                raise ImportFileError(
                    f"{path.name} is not valid {encoding} text (near line {near}): save it "
                    f"as UTF-8 or give its encoding with --encoding.") from None
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ImportFileError(f"{path.name} ends in the middle of a {encoding} character."
                                  ) from None


def _without_blanks(values: Mapping[str, Any]) -> dict[str, Any]:
    """An empty cell, a blank string or a JSON null means "no value"."""
    return {key: value for key, value in values.items()
            if value is not None and not (isinstance(value, str) and not value.strip())}


def _refuse_constant(name: str) -> Any:
    # JSON databases reject NaN and Infinity: refuse them at the row, not at COMMIT.
    raise ValueError(f"{name} is not a number JSON allows")


class RecordReader:
    """The records of a CSV or JSON Lines file, read lazily.

    ``columns`` is the CSV header (``None`` for JSON Lines) and ``bytes_read`` how far the
    reading got, for a progress bar. Opening checks what must hold before anything is
    written: the file exists, decodes, and is not empty.
    """

    def __init__(self, path: Path, file_format: FileFormat, encoding: str = "utf-8"):
        if not path.is_file():
            raise ImportFileError(f"No such file: {path}")
        self.path = path
        self.format = file_format
        text_encoding = _text_encoding(encoding)
        _check_decodable(path, text_encoding, encoding)
        self._binary = path.open("rb")
        self._text = io.TextIOWrapper(self._binary, encoding=text_encoding, newline="")
        self.columns: list[str] | None = None
        self._csv: Any = None
        self._first_json: tuple[int, str] | None = None
        self._json_lines: Iterator[tuple[int, str]] | None = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        if self.format is FileFormat.CSV:
            self._csv = csv.reader(self._text)
            header = next((row for row in self._csv if any(cell.strip() for cell in row)),
                          None)
            if header is None:
                raise ImportFileError(f"{self.path.name} is empty: a header row is expected.")
            self.columns = _checked_header([cell.strip() for cell in header])
        else:
            self._json_lines = ((number, text) for number, text in enumerate(self._text, 1)
                                if text.strip())
            self._first_json = next(self._json_lines, None)
            if self._first_json is None:
                raise ImportFileError(f"{self.path.name} is empty: one JSON object per line "
                                      f"is expected.")

    @property
    def bytes_read(self) -> int:
        return self._binary.tell()

    def close(self) -> None:
        self._text.close()

    def __iter__(self) -> Iterator[Record]:
        return self._csv_records() if self.format is FileFormat.CSV else self._json_records()

    def _csv_records(self) -> Iterator[Record]:
        assert self.columns is not None
        width = len(self.columns)
        previous_end = self._csv.line_num
        while True:
            try:
                row = next(self._csv, None)
            except csv.Error as exc:
                raise ImportFileError(
                    f"line {previous_end + 1}: {exc}. The batches before it were imported; "
                    f"fix the file and run the import again (imported rows are skipped)."
                ) from None
            if row is None:
                return
            line, previous_end = previous_end + 1, self._csv.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != width:
                yield Record(line, {}, FieldError(
                    f"{len(row)} values for the {width} header columns.", ErrorCode.INVALID))
                continue
            # ``_without_blanks`` for text cells, in one pass: a stripped cell is blank or not.
            yield Record(line, {name: value for name, value in
                                zip(self.columns, [cell.strip() for cell in row]) if value})

    def _json_records(self) -> Iterator[Record]:
        assert self._json_lines is not None and self._first_json is not None
        for line, text in chain([self._first_json], self._json_lines):
            try:
                value = json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
            except ValueError as exc:
                yield Record(line, {}, FieldError(f"Not valid JSON: {exc}", ErrorCode.INVALID))
                continue
            if not isinstance(value, dict):
                yield Record(line, {}, FieldError("Each line must be one JSON object.",
                                                  ErrorCode.INVALID))
                continue
            yield Record(line, _without_blanks(value))


def _checked_header(columns: list[str]) -> list[str]:
    if any(not name for name in columns):
        raise ImportFileError("The header row has an empty column name; name every column.")
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise ImportFileError(f"The header names {', '.join(repeated)} more than once.")
    return columns


def _plain_json(value: Any) -> Any:
    """JSON lines are read with Decimal floats (exact amounts); elsewhere floats are floats."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: _plain_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain_json(item) for item in value]
    return value


_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _column_path(error_field: str | None, aliases: Mapping[str, str]) -> str | None:
    """Turn the API's camelCase error path back into the file's column name."""
    if not error_field:
        return None
    head, dot, rest = error_field.partition(".")
    column = aliases.get(head) or _CAMEL_HUMP.sub(r"_\1", head).lower()
    return f"{column}{dot}{rest}"


# --- What a batch did -----------------------------------------------------------------------


@dataclass
class BatchOutcome:
    imported: int = 0
    skipped: int = 0
    rejected: dict[int, list[FieldError]] = field(default_factory=dict)  # line -> errors


class Importer(Protocol):
    def check_columns(self, columns: Sequence[str]) -> None:
        """Raise ``ImportFileError`` when the CSV header cannot work."""

    def import_batch(self, records: Sequence[Record]) -> BatchOutcome:
        """Write the batch's good rows; report the others by line."""


def _count_service_result(result: BatchResult, lines: Sequence[int], outcome: BatchOutcome,
                          aliases: Mapping[str, str]) -> None:
    """Add a service's per-index result to ``outcome``; ``lines[i]`` is item i's line."""
    outcome.imported += len(result.recorded_ids)
    outcome.skipped += len(result.existing_ids)
    for index, errors in result.rejected.items():
        outcome.rejected[lines[index]] = [
            FieldError(e.message, e.code, _column_path(e.field, aliases)) for e in errors]


def _missing_columns(columns: Sequence[str], required: Sequence[str]) -> None:
    missing = [name for name in required if name not in columns]
    if missing:
        raise ImportFileError(
            f"The header has no {', '.join(missing)} column"
            f"{'s' if len(missing) > 1 else ''}; required: {', '.join(required)}.")


# --- Customers ------------------------------------------------------------------------------

CUSTOMER_COLUMNS = frozenset({
    "source", "external_id", "name", "email", "phone", "birth_date", "gender", "education",
    "occupation", "income_band", "country", "region", "city", "tags", "lifecycle_stage",
    "owner_id", "attributes", "customer_since", "tenure_periods", "period",
})
CUSTOMER_REQUIRED = ("external_id",)
def check_customer_columns(columns: Sequence[str]) -> None:
    """Raise ``ImportFileError`` when a customer file's header cannot work: a required
    column missing, or a column that would become an attribute with an invalid key."""
    _missing_columns(columns, CUSTOMER_REQUIRED)
    extra = [name for name in columns if name not in CUSTOMER_COLUMNS]
    if extra:
        # The schema's own key rule, checked once here rather than failing every row.
        try:
            CustomerSchema().load({"attributes": dict.fromkeys(extra, "")}, partial=True)
        except ValidationError as exc:
            problems = "; ".join(e.message for e in errors_from_marshmallow(exc))
            raise ImportFileError(
                f"Columns that are not customer fields become attributes, but: {problems}"
            ) from None


class CustomerImporter:
    """Rows become customers through ``import_customers`` (one transaction per batch)."""

    def __init__(self) -> None:
        self.definitions = declared_attributes()

    def check_columns(self, columns: Sequence[str]) -> None:
        check_customer_columns(columns)

    def import_batch(self, records: Sequence[Record]) -> BatchOutcome:
        outcome = BatchOutcome()
        raws: list[dict[str, Any]] = []
        lines: list[int] = []
        for record in records:
            raw, errors = self._customer_input(record.values)
            if errors:
                outcome.rejected[record.line] = errors
            else:
                raws.append(raw)
                lines.append(record.line)
        if raws:
            _count_service_result(import_customers(raws), lines, outcome, {})
        return outcome

    def _customer_input(self, values: Mapping[str, Any]
                        ) -> tuple[dict[str, Any], list[FieldError]]:
        raw = {key: value for key, value in values.items() if key in CUSTOMER_COLUMNS}
        for key in ("source", "external_id"):
            if isinstance(raw.get(key), int) and not isinstance(raw[key], bool):
                raw[key] = str(raw[key])  # JSON exports often write numeric ids
        nested = raw.pop("attributes", None)
        if nested is not None and not isinstance(nested, dict):
            return raw, [FieldError("attributes must be a JSON object.", ErrorCode.INVALID,
                                    "attributes")]
        attributes = {**(nested or {}),
                      **{key: value for key, value in values.items()
                         if key not in CUSTOMER_COLUMNS}}
        # The service types them again (the same rule for every write path); typing here
        # reports every bad value of the row at once, with the file's line.
        attributes, errors = typed_attributes(
            {key: _plain_json(value) for key, value in attributes.items()}, self.definitions)
        if attributes:
            raw["attributes"] = attributes
        return raw, errors


# --- Interactions ---------------------------------------------------------------------------

INTERACTION_COLUMNS = frozenset({
    "customer_external_id", "customer_source", "external_id", "source", "kind",
    "occurred_at", "amount", "currency", "channel", "refers_to", "payload",
})
INTERACTION_REQUIRED = ("customer_external_id", "external_id", "kind", "occurred_at")
#: The service's paths name ids the file gives as external ids.
_INTERACTION_ALIASES = {"customerId": "customer_external_id", "refersTo": "refers_to",
                        "refersToId": "refers_to"}
_SERVICE_FIELDS = ("kind", "occurred_at", "amount", "currency", "channel")


@dataclass
class _PendingInteraction:
    """A row whose customer is resolved, waiting for the interaction it refers to."""

    line: int
    data: dict[str, Any]
    key: tuple[str, str]
    refers_to: tuple[str, str] | None


class InteractionImporter:
    """Rows become interactions through ``record_interactions(partial=True)``.

    A refund may refer to a purchase earlier in the same batch: rows are recorded in
    rounds, each round only rows whose referred interaction is already stored, so every
    round is one service call (one transaction); usually a batch needs one or two.
    """

    def check_columns(self, columns: Sequence[str]) -> None:
        _missing_columns(columns, INTERACTION_REQUIRED)

    def import_batch(self, records: Sequence[Record]) -> BatchOutcome:
        outcome = BatchOutcome()
        rows: list[tuple[int, dict[str, Any]]] = []
        for record in records:
            problem = _missing_identity(record.values)
            if problem:
                outcome.rejected[record.line] = [problem]
            else:
                rows.append((record.line, record.values))
        pending = self._with_customers(rows, outcome)
        self._record_in_rounds(pending, outcome)
        return outcome

    def _with_customers(self, rows: Sequence[tuple[int, Mapping[str, Any]]],
                        outcome: BatchOutcome) -> list[_PendingInteraction]:
        """Resolve every row's customer external id with one query for the batch."""
        found = customer_ids_by_external_id({_customer_key(values) for _, values in rows})
        pending: list[_PendingInteraction] = []
        for line, values in rows:
            source, external_id = _customer_key(values)
            customer_id = found.get((source, external_id))
            if customer_id is None:
                outcome.rejected[line] = [FieldError(
                    f"No customer with external id {external_id!r} in source {source!r}; "
                    f"import the customers first.", ErrorCode.NOT_FOUND,
                    "customer_external_id")]
                continue
            pending.append(_pending(line, values, customer_id))
        return pending

    def _record_in_rounds(self, pending: list[_PendingInteraction], outcome: BatchOutcome
                          ) -> None:
        targets = {p.refers_to for p in pending if p.refers_to is not None}
        known = _interaction_ids(targets)
        while pending:
            ready = [p for p in pending if p.refers_to is None or p.refers_to in known]
            if not ready:
                break
            pending = [p for p in pending if p.refers_to is not None
                       and p.refers_to not in known]
            rows = [p.data | ({"refers_to_id": known[p.refers_to]} if p.refers_to else {})
                    for p in ready]
            result = record_interactions(rows, partial=True)
            _count_service_result(result, [p.line for p in ready], outcome,
                                  _INTERACTION_ALIASES)
            for index, new_id in (result.recorded_ids | result.existing_ids).items():
                known[ready[index].key] = new_id
        for row in pending:
            assert row.refers_to is not None
            outcome.rejected[row.line] = [FieldError(
                f"No interaction with external id {row.refers_to[1]!r} in source "
                f"{row.refers_to[0]!r} to refer to: it must be imported before, or come "
                f"earlier in the file (and not be rejected).", ErrorCode.NOT_FOUND,
                "refers_to")]


def _customer_key(values: Mapping[str, Any]) -> tuple[str, str]:
    return (str(values.get("customer_source") or DEFAULT_SOURCE),
            str(values["customer_external_id"]))


def _missing_identity(values: Mapping[str, Any]) -> FieldError | None:
    for column, why in (("customer_external_id", "it names the customer"),
                        ("external_id", "a re-run recognises the interaction by it")):
        if values.get(column) is None:
            return FieldError(f"Required: {why}.", ErrorCode.REQUIRED, column)
    return None


def _pending(line: int, values: Mapping[str, Any], customer_id: int) -> _PendingInteraction:
    source = str(values.get("source") or DEFAULT_SOURCE)
    external_id = str(values["external_id"])
    data: dict[str, Any] = {key: values[key] for key in _SERVICE_FIELDS if key in values}
    data |= {"customer_id": customer_id, "source": source, "external_id": external_id}
    payload = values.get("payload", {})
    if isinstance(payload, dict):  # unknown columns join the payload
        payload = {**payload, **{key: value for key, value in values.items()
                                 if key not in INTERACTION_COLUMNS}}
    if payload != {}:  # a payload that is not an object goes on for the schema to reject
        data["payload"] = _plain_json(payload)
    refers_to = values.get("refers_to")
    return _PendingInteraction(line, data, (source, external_id),
                               (source, str(refers_to)) if refers_to is not None else None)


def _interaction_ids(keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The id of each stored interaction among ``keys`` (source, external id), one query."""
    if not keys:
        return {}
    rows = db.session.execute(select(Interaction.source, Interaction.external_id,
                                     Interaction.id).where(external_key_condition(
                                         Interaction.source, Interaction.external_id, keys)))
    return {(source, external_id): interaction_id
            for source, external_id, interaction_id in rows}


# --- Running an import ----------------------------------------------------------------------


@dataclass
class ImportReport:
    imported: int = 0
    skipped: int = 0
    rejected: int = 0
    rejects_path: Path | None = None


def default_rejects_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.rejects.csv")


def _importer(entity: Entity) -> Importer:
    if entity == "customers":
        return CustomerImporter()
    if db.session.get_bind().dialect.name == "postgresql":
        # COPY and set-wise checks (core/interaction_import.py); same rejects as below.
        from core.interaction_import import PostgresInteractionImporter

        return PostgresInteractionImporter()
    return InteractionImporter()


class ImportJob:
    """A file that passed every check; ``run`` imports it batch by batch."""

    def __init__(self, importer: Importer, reader: RecordReader, rejects_path: Path):
        self.importer = importer
        self.reader = reader
        self.rejects_path = rejects_path

    @property
    def size(self) -> int:
        return self.reader.path.stat().st_size

    def run(self, batch_size: int = DEFAULT_BATCH_SIZE,
            on_progress: Callable[[int], None] | None = None) -> ImportReport:
        """Import every batch; ``on_progress`` receives the bytes read since its last call."""
        report = ImportReport(rejects_path=self.rejects_path)
        # From the file's start: opening read the header and, through the text buffer, up
        # to 8 KiB more (a small file whole), which the first batch's step must count.
        position = 0
        records = iter(self.reader)
        with self.rejects_path.open("w", newline="", encoding="utf-8") as rejects_file, \
                _plans_for_the_growing_table():
            rejects = csv.writer(rejects_file)
            rejects.writerow(REJECTS_HEADER)
            while batch := list(islice(records, batch_size)):
                outcome = self._import_batch(batch)
                report.imported += outcome.imported
                report.skipped += outcome.skipped
                report.rejected += len(outcome.rejected)
                for line in sorted(outcome.rejected):
                    rejects.writerows((line, e.field or "", e.code, e.message)
                                      for e in outcome.rejected[line])
                rejects_file.flush()
                if on_progress is not None:
                    now = self.reader.bytes_read
                    on_progress(now - position)
                    position = now
        if on_progress is not None and self.size > position:
            on_progress(self.size - position)  # blank lines after the last record: 100 %
        return report

    def _import_batch(self, batch: Sequence[Record]) -> BatchOutcome:
        unreadable = {r.line: [r.problem] for r in batch if r.problem is not None}
        # Before any value is looked up in the database (a customer's external id), which
        # could not even encode it.
        for record in batch:
            unstorable = _unstorable(record.values) if record.problem is None else {}
            if unstorable:
                unreadable[record.line] = [FieldError(messages[0], ErrorCode.INVALID, column)
                                           for column, messages in unstorable.items()]
        outcome = self.importer.import_batch([r for r in batch if r.line not in unreadable])
        outcome.rejected |= unreadable
        return outcome


def _unstorable(values: Mapping[str, Any]) -> dict[str, list[str]]:
    """``unstorable_text_fields``, answered at once for the usual row: ASCII text only."""
    for key, value in values.items():
        if type(value) is not str or not value.isascii() or not key.isascii() \
                or "\x00" in value or "\x00" in key:
            return unstorable_text_fields(values)
    return {}


@contextmanager
def _plans_for_the_growing_table() -> Iterator[None]:
    """On PostgreSQL, plan every statement of the import for the tables as they are now.

    psycopg prepares a statement once it ran five times, and PostgreSQL may then keep one
    generic plan for it. Made while the interactions table was nearly empty, that plan
    scans the table, and nothing replaces it while the import grows the table a
    thousandfold (no ANALYZE runs in between when autovacuum is off or lags): look-ups by
    external id went from 1 ms to over 40 ms per batch across 250k rows. ``SET LOCAL``
    lasts one transaction, so every transaction of the import gets it.
    """
    session = db.session()
    if session.get_bind().dialect.name != "postgresql":
        yield
        return

    def custom_plans(session: Session, transaction: SessionTransaction,
                     connection: Connection) -> None:
        connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")

    event.listen(session, "after_begin", custom_plans)
    try:
        yield
    finally:
        event.remove(session, "after_begin", custom_plans)


@contextmanager
def open_import(entity: Entity, path: Path, *, file_format: str | None = None,
                encoding: str = "utf-8", rejects_path: Path | None = None
                ) -> Iterator[ImportJob]:
    """Check ``path`` for ``entity`` (format, encoding, header) without writing anything.

    Raises ``ImportFileError`` with a message a person can act on.
    """
    fmt = detect_format(path, file_format)
    reader = RecordReader(path, fmt, encoding)
    try:
        importer = _importer(entity)
        if reader.columns is not None:
            importer.check_columns(reader.columns)
        yield ImportJob(importer, reader, rejects_path or default_rejects_path(path))
    finally:
        reader.close()


__all__ = [
    "CUSTOMER_COLUMNS", "INTERACTION_COLUMNS", "FileFormat", "ImportFileError", "ImportJob",
    "ImportReport", "Record", "RecordReader", "default_rejects_path", "detect_format",
    "open_import", "typed_attribute",
]
