"""``rapport surveys import SURVEY_ID FILE``: survey responses from CSV, in batches.

The file is read by core's streaming reader and run by core's ``ImportJob`` (batches of
``--batch-size`` rows, each its own transaction, a rejects file with line, column, code
and reason). What is specific to responses:

- Columns (CONTRACTS.md "Survey responses"): ``customer_external_id`` (+
  ``customer_source``, default ``default``) for a named survey, absent for an anonymous
  one; ``submitted_at`` (ISO 8601, naive means UTC; optional: a row without it, or a
  file without the column, is dated at ``--submitted-at`` when given, else at the time
  of the import); one column per question key (MULTI_CHOICE: option keys separated by
  ``;``), matched without regard to case (``Q1`` is question ``q1``) or named through
  ``--column COLUMN=KEY``. Optional ``source`` + ``external_id``
  name the response in the system it comes from. Any other column stops the import
  before anything is written (a misspelt question key would otherwise lose answers).
- Each answer is checked by the same rules as ``submitSurveyResponse``; a bad row is
  rejected whole, with every problem listed.
- Re-runs are idempotent. A row with ``external_id`` is known by ``source`` (default
  ``csv``) + ``external_id``. A row without one gets a content key: a digest of its
  customer, time and answers, plus the number of identical rows before it in the file,
  so running the same file again skips every row, and two identical anonymous rows are
  both kept.
- Rows are inserted set-based (one multi-row INSERT per batch, ids returned);
  ``rapport_survey_response_recorded`` fires for each inserted row, in the batch's
  transaction.
- The survey must be OPEN or CLOSED (importing history into a closed survey is allowed);
  a DRAFT's questions may still change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import String, bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY

from core import changes
from core.app import rapport
from core.db import UTCDateTime, db, utcnow
from core.errors import ErrorCode, FieldError
from core.ids import global_id, shown_id
from core.importers import BatchOutcome, ImportFileError, Record
from core.schemas import FUTURE_TOLERANCE, UTCDateTimeField
from core.services import transaction
from core.services.customers import customer_ids_by_external_id
from core.services.interactions import external_key_condition

from plugins.surveys.answers import QuestionSpec, check_answers, specs
from plugins.surveys.models import Response, Survey, SurveyState
from plugins.surveys.service import questions_of

DEFAULT_CUSTOMER_SOURCE = "default"
DEFAULT_SOURCE = "csv"
IDENTITY = ("customer_external_id", "customer_source")
META = ("submitted_at", "source", "external_id")
_WHEN = UTCDateTimeField()


def _content_key(values: Mapping[str, Any]) -> str:
    """A digest of the row as read (customer, time, answers: every non-empty cell)."""
    document = json.dumps(sorted(values.items()), separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(document.encode()).hexdigest()[:40]


#: The keys among the batch's that are stored: one unique-index probe per key (a LATERAL
#: subquery with LIMIT 1 cannot become a hash join). The plain ``IN (SELECT unnest)``
#: form was planned as a scan of all the survey's responses when statistics lagged behind
#: the growing table: 24 ms per batch at 60,000 rows, growing with every batch.
_KNOWN_KEYS = text("""
    SELECT w.source, w.external_id
    FROM unnest(:sources, :externals) AS w(source, external_id)
    CROSS JOIN LATERAL (SELECT 1 FROM surveys_response r
                        WHERE r.survey_id = :survey_id AND r.source = w.source
                          AND r.external_id = w.external_id LIMIT 1) AS hit""").bindparams(
    bindparam("sources", type_=ARRAY(String)), bindparam("externals", type_=ARRAY(String)))

_BATCH_INSERT = text("""
    INSERT INTO surveys_response (survey_id, anonymous, customer_id, submitted_at,
                                  recorded_at, source, external_id, numbers, choices, texts)
    SELECT :survey_id, :anonymous, u.customer_id, u.submitted_at, :recorded_at, u.source,
           u.external_id, u.numbers, u.choices, u.texts
    FROM ROWS FROM (jsonb_to_recordset(CAST(:batch AS jsonb)) AS (
        customer_id bigint, submitted_at timestamptz, source text, external_id text,
        numbers jsonb, choices jsonb, texts jsonb)) WITH ORDINALITY AS u(
        customer_id, submitted_at, source, external_id, numbers, choices, texts, n)
    ORDER BY u.n
    ON CONFLICT (survey_id, source, external_id) DO NOTHING
    RETURNING external_id, id""").bindparams(bindparam("recorded_at", type_=UTCDateTime))


class ResponseImporter:
    """``submitted_at``: the date of the rows without one (default: ``now``, the time of
    the import); ``columns``: file column -> question key, for columns named otherwise."""

    def __init__(self, survey: Survey, now: dt.datetime | None = None, *,
                 submitted_at: dt.datetime | None = None,
                 columns: Mapping[str, str] | None = None):
        if survey.state is SurveyState.DRAFT:
            raise ImportFileError(f"Survey {shown_id('Survey', survey.id)} is a draft: open it "
                                  f"before importing responses (its questions may still "
                                  f"change).")
        self.survey = survey
        self.questions: dict[str, QuestionSpec] = specs(questions_of([survey.id])[survey.id])
        self.now = now or utcnow()
        self.submitted_at = submitted_at or self.now
        self.mapping = dict(columns or {})
        #: file column -> the name the importer reads it by (question key or META field).
        self.renames: dict[str, str] = {}
        unknown = sorted(set(self.mapping.values()) - set(self.questions))
        if unknown:
            raise ImportFileError(f"--column names no question of survey {survey.id}: "
                                  f"{', '.join(unknown)} (its keys are "
                                  f"{', '.join(self.questions)}).")
        self._seen: Counter[str] = Counter()  # content keys met so far in the file
        self._fire = bool(rapport().hook.rapport_survey_response_recorded.get_hookimpls())

    def _resolve(self, columns: Sequence[str]) -> list[str]:
        """The header as the importer reads it: a mapped column as its question key, a
        column matching a question key or a known field without regard to case as that
        key (``self.renames``). Two columns landing on one name stop the import."""
        by_fold: dict[str, list[str]] = {}
        for key in (*self.questions, *IDENTITY, *META):
            by_fold.setdefault(key.casefold(), []).append(key)
        resolved = []
        for column in columns:
            name = self.mapping.get(column)
            if name is None and column not in self.questions and column not in (*IDENTITY,
                                                                                *META):
                found = by_fold.get(column.strip().casefold(), [])
                if len(found) > 1:
                    raise ImportFileError(
                        f"Column {column!r} matches the question keys {', '.join(found)} "
                        f"but for case: name it exactly, or use --column {column}=KEY.")
                name = found[0] if found else None
            if name is not None and name != column:
                self.renames[column] = name
            resolved.append(name or column)
        twice = sorted({n for n in resolved if resolved.count(n) > 1})
        if twice:
            raise ImportFileError(f"Several columns give {', '.join(twice)}: keep one.")
        return resolved

    def check_columns(self, columns: Sequence[str]) -> None:
        columns = self._resolve(columns)
        named = [c for c in IDENTITY if c in columns]
        if self.survey.anonymous and named:
            raise ImportFileError(f"Survey {shown_id('Survey', self.survey.id)} is anonymous: "
                                  f"the file must not name customers (remove {', '.join(named)}).")
        if not self.survey.anonymous and "customer_external_id" not in columns:
            raise ImportFileError("The header has no customer_external_id column; a named "
                                  "survey's responses say who answered.")
        unknown = [c for c in columns if c not in (*IDENTITY, *META) and c not in self.questions]
        if unknown:
            raise ImportFileError(f"Unknown columns {', '.join(unknown)}: the survey's "
                                  f"question keys are {', '.join(self.questions)}.")

    def import_batch(self, records: Sequence[Record]) -> BatchOutcome:
        outcome = BatchOutcome()
        if self.renames:
            records = [replace(r, values={self.renames.get(k, k): v
                                          for k, v in r.values.items()}) for r in records]
        readable = []
        for record in records:
            # NUL cannot be stored nor even compared by PostgreSQL: such a row is rejected
            # before any of its cells reaches a query.
            nul = [column for column, value in record.values.items()
                   if isinstance(value, str) and "\x00" in value]
            if nul:
                outcome.rejected[record.line] = [FieldError(
                    "Text may not contain the NUL character.", ErrorCode.INVALID, column)
                    for column in nul]
            else:
                readable.append(record)
        keyed = [(record, self._key(record.values)) for record in readable]
        with transaction():
            stored = self._existing({key for _, key in keyed})
            todo = []
            for record, key in keyed:
                if key in stored:  # stored by an earlier run: not even validated again
                    outcome.skipped += 1
                else:
                    todo.append((record, key))
            customers = {} if self.survey.anonymous else self._customers(
                [r for r, _ in todo])
            fresh: list[dict[str, Any]] = []
            taken: set[tuple[str, str]] = set()
            for record, key in todo:
                if key in taken:  # the same key twice in a batch: the first good row wins
                    outcome.skipped += 1
                    continue
                row, errors = self._row(record.values, customers)
                if errors:  # a later row with the key (a corrected copy) may still go in
                    outcome.rejected[record.line] = errors
                else:
                    taken.add(key)
                    fresh.append(row | {"source": key[0], "external_id": key[1]})
            if fresh:
                ids = self._insert(fresh)
                inserted = [(new_id, row) for new_id, row in zip(ids, fresh)
                            if new_id is not None]
                outcome.imported += len(inserted)
                # Stored meanwhile by a concurrent run of the same file.
                outcome.skipped += len(fresh) - len(inserted)
                if self._fire:
                    hook = rapport().hook.rapport_survey_response_recorded
                    for new_id, row in inserted:
                        hook(response=Response(id=new_id, **row))
            self._record(outcome, [new_id for new_id, _ in inserted] if fresh else [])
        return outcome

    def _record(self, outcome: BatchOutcome, new_ids: Sequence[int]) -> None:
        """One audit entry and one summarising event for the batch."""
        survey = global_id("Survey", self.survey.id)
        first = global_id("SurveyResponse", min(new_ids)) if new_ids else None
        last = global_id("SurveyResponse", max(new_ids)) if new_ids else None
        counts = {"recorded": len(new_ids), "skipped": outcome.skipped,
                  "rejected": len(outcome.rejected)}
        changes.record(None, [survey], {**{k: [None, v] for k, v in counts.items()},
                                        "firstId": [None, first], "lastId": [None, last]},
                       [changes.Event("survey.responses.imported", survey, {
                           "surveyId": survey, **counts, "firstId": first, "lastId": last})]
                       if new_ids else [])

    def _key(self, values: Mapping[str, Any]) -> tuple[str, str]:
        """The row's (source, external id): given, or a content key of its raw values
        with the number of identical rows met before it in the file."""
        source, external_id = values.get("source"), values.get("external_id")
        if external_id is not None:
            return str(source or DEFAULT_SOURCE), str(external_id)
        content = _content_key(values)
        self._seen[content] += 1
        return str(source or DEFAULT_SOURCE), f"{content}:{self._seen[content]}"

    def _insert(self, rows: list[dict[str, Any]]) -> list[int | None]:
        """Insert the batch, ids in row order (None: a concurrent run stored the row's key
        first). PostgreSQL: one INSERT ... SELECT FROM jsonb_to_recordset(<the batch as one
        JSON document>): one parameter whatever the batch size (a 1,000-row VALUES list,
        or ten text arrays, cost more to build and send than the insert itself); ON
        CONFLICT DO NOTHING waits for a concurrent run's transaction, then skips its
        rows."""
        if db.session.get_bind().dialect.name != "postgresql":
            return [*db.session.scalars(insert(Response).returning(
                Response.id, sort_by_parameter_order=True), rows)]
        batch = json.dumps([{
            "customer_id": r["customer_id"], "submitted_at": r["submitted_at"].isoformat(),
            "source": r["source"], "external_id": r["external_id"], "numbers": r["numbers"],
            "choices": r["choices"], "texts": r["texts"]} for r in rows])
        found: dict[str, int] = dict(db.session.execute(_BATCH_INSERT, {  # type: ignore[arg-type]
            "survey_id": self.survey.id, "anonymous": self.survey.anonymous,
            "recorded_at": self.now, "batch": batch}).all())
        return [found.get(r["external_id"]) for r in rows]  # external ids are unique here

    def _customers(self, records: Sequence[Record]) -> dict[tuple[str, str], int]:
        """(source, external id) -> customer id, one query per batch. Erasure removes a
        customer's external ids, so an erased customer is not found."""
        return customer_ids_by_external_id({
            (str(r.values.get("customer_source") or DEFAULT_CUSTOMER_SOURCE),
             str(r.values["customer_external_id"])) for r in records
            if r.values.get("customer_external_id") is not None})

    def _existing(self, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
        if not keys:
            return set()
        if db.session.get_bind().dialect.name == "postgresql":
            pairs = sorted(keys)
            rows = db.session.execute(_KNOWN_KEYS, {
                "survey_id": self.survey.id, "sources": [p[0] for p in pairs],
                "externals": [p[1] for p in pairs]})
        else:
            rows = db.session.execute(select(Response.source, Response.external_id).where(
                Response.survey_id == self.survey.id,
                external_key_condition(Response.source, Response.external_id, keys)))
        return {(source, external_id) for source, external_id in rows}

    def _row(self, values: Mapping[str, Any], customers: Mapping[tuple[str, str], int]
             ) -> tuple[dict[str, Any], list[FieldError]]:
        errors: list[FieldError] = []
        customer_id: int | None = None
        identity: tuple[str, str] | None = None
        if not self.survey.anonymous:
            if values.get("customer_external_id") is None:
                errors.append(FieldError("Required: it names the customer who answered.",
                                         ErrorCode.REQUIRED, "customer_external_id"))
            else:
                identity = (str(values.get("customer_source") or DEFAULT_CUSTOMER_SOURCE),
                            str(values["customer_external_id"]))
                customer_id = customers.get(identity)
                if customer_id is None:
                    errors.append(FieldError(
                        f"No customer with external id {identity[1]!r} in source "
                        f"{identity[0]!r}; import the customers first.", ErrorCode.NOT_FOUND,
                        "customer_external_id"))
        submitted_at = None
        if values.get("submitted_at") is None:
            submitted_at = self.submitted_at
        else:
            try:
                submitted_at = _WHEN.deserialize(values["submitted_at"])
            except ValidationError:
                errors.append(FieldError(f"Not an ISO 8601 date and time: "
                                         f"{values['submitted_at']!r}.", ErrorCode.INVALID,
                                         "submitted_at"))
            else:
                if submitted_at > self.now + FUTURE_TOLERANCE:
                    errors.append(FieldError("A response cannot be submitted in the future.",
                                             ErrorCode.INVALID, "submitted_at"))
        given = [(key, value) for key, value in values.items() if key in self.questions]
        answers, problems = check_answers(self.questions, given,
                                          lambda index, key, part: key, from_text=True)
        errors.extend(problems)
        source, external_id = values.get("source"), values.get("external_id")
        if source is not None and external_id is None:
            errors.append(FieldError("source needs an external_id.", ErrorCode.REQUIRED,
                                     "external_id"))
        for column, given, limit in (("source", source, 64), ("external_id", external_id, 200)):
            if given is not None and len(str(given)) > limit:
                errors.append(FieldError(f"At most {limit} characters.", ErrorCode.INVALID,
                                         column))
        if errors:
            return {}, errors
        return {"survey_id": self.survey.id, "anonymous": self.survey.anonymous,
                "customer_id": customer_id, "submitted_at": submitted_at,
                "recorded_at": self.now, "numbers": answers.numbers,
                "choices": answers.choices, "texts": answers.texts}, []


def open_survey_import(survey_id: int) -> Survey:
    survey = db.session.get(Survey, survey_id)
    if survey is None:
        raise ImportFileError(f"No survey with id {shown_id('Survey', survey_id)}.")
    return survey
