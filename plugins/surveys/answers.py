"""Each answer checked against its question: one rule set for GraphQL and the CSV import.

Values come typed from GraphQL (a number, a string, a list of strings) or as text from a
CSV cell (``"4"``, ``"price;speed"``); ``from_text`` says which. A problem is reported
on the answer's path, built by the caller (``input.answers.3.value`` in the API, the
column name in the importer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import ErrorCode, FieldError

from plugins.surveys.errors import SurveyErrorCode
from plugins.surveys.models import Question, QuestionType
from plugins.surveys.schemas import NPS_MAX, NPS_MIN

MAX_TEXT = 10_000
MULTI_SEPARATOR = ";"

#: (answer index or None for a whole-response problem, question key, part) -> field path
PathOf = Callable[[int | None, str, str], str | None]


@dataclass(frozen=True)
class QuestionSpec:
    key: str
    type: QuestionType
    required: bool
    low: int | None = None
    high: int | None = None
    options: frozenset[str] = frozenset()

    @classmethod
    def of(cls, question: Question) -> QuestionSpec:
        low, high = question.scale_min, question.scale_max
        if question.type is QuestionType.NPS:
            low, high = NPS_MIN, NPS_MAX
        return cls(question.key, question.type, question.required, low, high,
                   frozenset(o["key"] for o in question.options or []))


def specs(questions: Iterable[Question]) -> dict[str, QuestionSpec]:
    return {q.key: QuestionSpec.of(q) for q in questions}


@dataclass
class Answers:
    numbers: dict[str, int] = field(default_factory=dict)
    choices: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


class _Bad(Exception):
    def __init__(self, message: str, code: str = ErrorCode.INVALID):
        super().__init__(message)
        self.message, self.code = message, code


def _number(spec: QuestionSpec, value: Any, from_text: bool) -> int:
    if from_text and type(value) is str:
        try:
            value = int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                raise _Bad(f"Not a number: {value!r}.") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad("Give a whole number.")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise _Bad(f"{value} is not a point of the scale {spec.low}..{spec.high}: "
                       f"answers are whole numbers.", SurveyErrorCode.OUT_OF_SCALE)
        value = int(value)
    assert spec.low is not None and spec.high is not None
    if not spec.low <= value <= spec.high:
        raise _Bad(f"{value} is outside the scale {spec.low}..{spec.high}.",
                   SurveyErrorCode.OUT_OF_SCALE)
    return value


def _option(spec: QuestionSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("Give an option key (a string).")
    value = value.strip()
    if value not in spec.options:
        raise _Bad(f"Unknown option {value!r}; the options are "
                   f"{', '.join(sorted(spec.options))}.", SurveyErrorCode.UNKNOWN_OPTION)
    return value


def _value(spec: QuestionSpec, value: Any, from_text: bool) -> Any:
    if spec.type in (QuestionType.NPS, QuestionType.RATING):
        return _number(spec, value, from_text)
    if spec.type is QuestionType.SINGLE_CHOICE:
        return _option(spec, value)
    if spec.type is QuestionType.MULTI_CHOICE:
        if from_text and isinstance(value, str):
            value = [part for part in value.split(MULTI_SEPARATOR) if part.strip()]
        if not isinstance(value, list):
            raise _Bad("Give a list of option keys.")
        return sorted({_option(spec, v) for v in value})
    if not isinstance(value, str):
        raise _Bad("Give the answer as text.")
    if "\x00" in value:
        raise _Bad("Text may not contain the NUL character.")
    if len(value) > MAX_TEXT:
        raise _Bad(f"At most {MAX_TEXT} characters.")
    return value


def _empty(value: Any) -> bool:
    return value is None or value == [] or (isinstance(value, str) and not value.strip())


def check_answers(questions: Mapping[str, QuestionSpec], given: Sequence[tuple[str, Any]],
                  path: PathOf, *, from_text: bool = False) -> tuple[Answers, list[FieldError]]:
    """The answers by kind, and every problem found (nothing is written by this)."""
    answers = Answers()
    errors: list[FieldError] = []
    seen: set[str] = set()
    failed: set[str] = set()
    for index, (key, value) in enumerate(given):
        spec = questions.get(key)
        if spec is None:
            errors.append(FieldError(f"The survey has no question {key!r}.",
                                     SurveyErrorCode.UNKNOWN_QUESTION, path(index, key, "key")))
            continue
        if key in seen:
            errors.append(FieldError(f"Question {key!r} is answered twice.", ErrorCode.INVALID,
                                     path(index, key, "key")))
            continue
        seen.add(key)
        if _empty(value):
            continue
        try:
            checked = _value(spec, value, from_text)
        except _Bad as bad:
            failed.add(key)
            errors.append(FieldError(bad.message, bad.code, path(index, key, "value")))
            continue
        if spec.type in (QuestionType.NPS, QuestionType.RATING):
            answers.numbers[key] = checked
        elif spec.type is QuestionType.TEXT:
            answers.texts[key] = checked
        else:
            answers.choices[key] = checked
    answered = {*answers.numbers, *answers.choices, *answers.texts}
    for spec in questions.values():
        if spec.required and spec.key not in answered and spec.key not in failed:
            errors.append(FieldError(f"Question {spec.key!r} is required.", ErrorCode.REQUIRED,
                                     path(None, spec.key, "")))
    return answers, errors
