"""The response matrix the analyses run on, loaded with one SQL statement (two when the
survey has choice questions).

``load_matrix`` returns the NPS and RATING answers as a float64 array (one row per
response, one column per item, NaN where unanswered) in response-id order, the customer
of each row (None for an anonymous survey), and the counts of each choice option.
Numbers live in one JSON document per response (``Response.numbers``). On PostgreSQL the
database extracts the items and serialises the whole matrix as one text numpy parses;
elsewhere the items come as float columns (docs/surveys.md has the measurements).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Float, Select, cast, func, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import Selectable

from core.db import db
from core.errors import ErrorCode, UserError
from core.lazy import lazy_module

from plugins.surveys.models import (
    CHOICE_TYPES, NUMERIC_TYPES, Question, QuestionType, Response, Scale, Survey,
)
from plugins.surveys.schemas import NPS_MAX, NPS_MIN
from plugins.surveys.service import questions_of, scales_of

if TYPE_CHECKING:
    import numpy as np
else:  # imported on first use: the app starts without the statistics stack
    np = lazy_module("numpy")


#: Text answers a report shows per TEXT question.
TEXT_SAMPLE = 5


@dataclass(frozen=True)
class MatrixQuestion:
    """A column of the matrix: an NPS or RATING question."""

    key: str
    type: QuestionType
    text: str
    scale_min: int
    scale_max: int
    #: The scales the item belongs to, with whether it is reverse-keyed in each.
    scales: tuple[tuple[str, bool], ...] = ()
    is_overall: bool = False


@dataclass(frozen=True)
class MatrixScale:
    name: str
    #: (question key, reverse-keyed)
    items: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class ChoiceQuestion:
    key: str
    type: QuestionType
    text: str
    options: tuple[tuple[str, str], ...]  # (key, label)


@dataclass
class ResponseMatrix:
    survey_id: int
    anonymous: bool
    questions: list[MatrixQuestion]
    #: n_responses x n_items, NaN = unanswered.
    values: np.ndarray
    #: The customer of each row (int64), or None for an anonymous survey.
    customer_ids: np.ndarray | None
    response_ids: np.ndarray
    scales: list[MatrixScale] = field(default_factory=list)
    choice_questions: list[ChoiceQuestion] = field(default_factory=list)
    #: question key -> option key -> number of responses that chose it.
    choice_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: question key -> number of responses that answered the choice question.
    choice_answered: dict[str, int] = field(default_factory=dict)
    #: TEXT questions as (key, text), in the survey's order.
    text_questions: list[tuple[str, str]] = field(default_factory=list)
    #: question key -> number of responses with a non-blank answer.
    text_answered: dict[str, int] = field(default_factory=dict)
    #: question key -> up to ``TEXT_SAMPLE`` answers, the latest first.
    text_samples: dict[str, list[str]] = field(default_factory=dict)
    overall_key: str | None = None

    @property
    def n_responses(self) -> int:
        return int(self.values.shape[0])

    @property
    def keys(self) -> list[str]:
        return [q.key for q in self.questions]

    def column(self, key: str) -> np.ndarray:
        return self.values[:, self.keys.index(key)]


def _matrix_questions(survey: Survey, questions: list[Question], scales: list[Scale]
                      ) -> list[MatrixQuestion]:
    membership: dict[str, list[tuple[str, bool]]] = {}
    for scale in scales:
        for item in scale.items:
            membership.setdefault(item["key"], []).append((scale.name, bool(item["reverse"])))
    out = []
    for q in questions:
        if q.type not in NUMERIC_TYPES:
            continue
        low, high = ((NPS_MIN, NPS_MAX) if q.type is QuestionType.NPS
                     else (q.scale_min, q.scale_max))
        out.append(MatrixQuestion(q.key, q.type, q.text, int(low or 0), int(high or 0),
                                  tuple(membership.get(q.key, ())),
                                  q.key == survey.overall_question_key))
    return out


def _number(key: str) -> ColumnElement[Any]:
    return cast(Response.numbers[key].as_float(), Float)


def _rows_generic(items: list[MatrixQuestion], conditions: list[Any]) -> np.ndarray:
    """id, customer id (0: none), then the items: one row per response."""
    columns = [Response.id, func.coalesce(Response.customer_id, 0),
               *(_number(q.key) for q in items)]
    rows = db.session.execute(select(*columns).where(*conditions).order_by(Response.id)).all()
    if not rows:
        return np.empty((0, 2 + len(items)), dtype=np.float64)
    return np.array(rows, dtype=np.float64)


def _rows_postgresql(items: list[MatrixQuestion], conditions: list[Any]) -> np.ndarray:
    """The same rows, serialised by PostgreSQL into one comma-separated text that numpy
    parses in one call: 4-5 times faster than fetching 2M values as Python floats
    (0.4 s instead of 1.8 s for 100,000 x 20; docs/surveys.md)."""
    parts: list[Any] = [Response.id, func.coalesce(Response.customer_id, 0)]
    if items:
        parts.append(func.array_to_string(
            postgresql.array([Response.numbers[q.key].as_string() for q in items]), ",", "nan"))
    line = func.concat_ws(",", *parts)
    text = db.session.scalar(select(func.string_agg(
        line, postgresql.aggregate_order_by(literal(","), Response.id)))
        .where(*conditions))
    width = 2 + len(items)
    if not text:
        return np.empty((0, width), dtype=np.float64)
    return np.array(text.split(","), dtype=np.float64).reshape(-1, width)


def _id_select(customer_ids: Selectable) -> Select[Any]:
    """A SELECT of the ids: a Select as it is, a table or subquery by its only column."""
    if isinstance(customer_ids, Select):
        return customer_ids
    return select(*customer_ids.c)  # type: ignore[attr-defined]


def load_matrix(survey: Survey, customer_ids: Selectable | None = None, *,
                submitted_after: dt.datetime | None = None,
                submitted_before: dt.datetime | None = None) -> ResponseMatrix:
    """Every response of ``survey`` (or those of the customers ``customer_ids`` selects: a
    selectable of one column of customer ids, e.g. a segment; and/or those submitted in
    ``[submitted_after, submitted_before]``) as a ``ResponseMatrix``."""
    if customer_ids is not None and survey.anonymous:
        raise UserError.single("An anonymous survey keeps no customers: it cannot be "
                               "filtered by segment.", ErrorCode.NOT_ALLOWED, "filter")
    questions = questions_of([survey.id])[survey.id]
    scales = scales_of([survey.id])[survey.id]
    items = _matrix_questions(survey, questions, scales)
    choice = [q for q in questions if q.type in CHOICE_TYPES]

    conditions: list[Any] = [Response.survey_id == survey.id]
    if customer_ids is not None:
        conditions.append(Response.customer_id.in_(_id_select(customer_ids)))
    if submitted_after is not None:
        conditions.append(Response.submitted_at >= submitted_after)
    if submitted_before is not None:
        conditions.append(Response.submitted_at <= submitted_before)
    if db.session.get_bind().dialect.name == "postgresql":
        table = _rows_postgresql(items, conditions)
    else:
        table = _rows_generic(items, conditions)
    values = np.ascontiguousarray(table[:, 2:])
    response_ids = table[:, 0].astype(np.int64)
    customers = None if survey.anonymous else table[:, 1].astype(np.int64)

    texts = [q for q in questions if q.type == QuestionType.TEXT]
    tallies: dict[str, Counter[str]] = {q.key: Counter() for q in choice}
    answered = {q.key: 0 for q in choice}
    text_answered = {q.key: 0 for q in texts}
    samples: dict[str, list[str]] = {q.key: [] for q in texts}
    if choice or texts:
        # One pass over both documents, the latest first (the text samples).
        for chosen, written in db.session.execute(
                select(Response.choices, Response.texts).where(*conditions)
                .order_by(Response.submitted_at.desc(), Response.id.desc())):
            for key, picked in (chosen or {}).items():
                if key in tallies:
                    answered[key] += 1
                    tallies[key].update(picked if isinstance(picked, list) else [picked])
            for key, text in (written or {}).items():
                if key in text_answered and isinstance(text, str) and text.strip():
                    text_answered[key] += 1
                    if len(samples[key]) < TEXT_SAMPLE:
                        samples[key].append(text.strip())
    counts = {q.key: {o["key"]: tallies[q.key].get(o["key"], 0) for o in q.options}
              for q in choice}

    return ResponseMatrix(
        survey_id=survey.id, anonymous=survey.anonymous, questions=items, values=values,
        customer_ids=customers, response_ids=response_ids,
        scales=[MatrixScale(s.name, tuple((i["key"], bool(i["reverse"])) for i in s.items))
                for s in scales],
        choice_questions=[ChoiceQuestion(q.key, q.type, q.text,
                                         tuple((o["key"], o["label"]) for o in q.options))
                          for q in choice],
        choice_counts=counts, choice_answered=answered,
        text_questions=[(q.key, q.text) for q in texts], text_answered=text_answered,
        text_samples=samples,
        overall_key=survey.overall_question_key)
