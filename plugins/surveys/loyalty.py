"""Loyalty as attitude x behaviour (Dick and Basu), per customer, over a window of days.

- Attitude: the customer's latest answer, submitted in the window, to one NPS or RATING
  question of one survey (``questionKey``, by default the survey's overall-satisfaction
  question). High when it is a promoter's (9-10 on NPS) or in the top two points of the
  rating scale (4-5 on 1-5, 6-7 on 1-7): the thresholds the NPS and CSAT analyses use.
  A later response that skips the question does not replace an earlier answer.
- Behaviour: the customer's purchases that occurred in the window, less those refunded in
  full (refunds referring to the purchase summing to its amount or more; any refund of a
  purchase without an amount), whenever the refund came. High (repeat patronage) at
  ``minPurchases`` (default 2) or more.
- TRUE (high, high), LATENT (high attitude, low patronage), SPURIOUS (low attitude, high
  patronage), NONE (low, low); a customer with no answer in the window is UNKNOWN
  (counted, never guessed). Erased customers are left out.

The window is ``from`` .. ``to``, whole days in RAPPORT_TIMEZONE, ``to`` included
(CONTRACTS "Dates"). Everything is computed by one SELECT (a window function for the
latest answer, GROUP BY for purchases and quadrants): two more read the survey and its
question, whatever the number of customers. See docs/surveys.md "Loyalty matrix".
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, ValidationError, fields, validate, validates_schema
from sqlalchemy import Float, and_, case, cast, exists, func, literal, not_, or_, select, true
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, Subquery

from core.app import rapport
from core.dates import end_of_day, start_of_day
from core.db import MAX_ID, db
from core.errors import ErrorCode, UserError
from core.ids import global_id, parse_id
from core.models import Customer, CustomerStatus, Interaction
from core.schemas import DAY_RANGE, InputSchema
from core.services import load, not_found
from core.services.segments import customer_conditions

from plugins.surveys.errors import SurveyErrorCode
from plugins.surveys.models import NUMERIC_TYPES, Question, QuestionType, Response, Survey

#: Default repeat-patronage threshold: two purchases in the window.
DEFAULT_MIN_PURCHASES = 2
MAX_MIN_PURCHASES = 10_000
#: NPS promoters.
NPS_HIGH = 9
#: What the ``loyaltyQuadrant`` customer filter adds to a query's cost (api/limits.py): a
#: GROUP BY over a period's purchases and a survey's responses, like a report
#: (REPORT_COST).
FILTER_COST = 1_000


class LoyaltyQuadrant(enum.StrEnum):
    TRUE = "true"
    LATENT = "latent"
    SPURIOUS = "spurious"
    NONE = "none"
    UNKNOWN = "unknown"


class WindowDay(fields.Date):
    """A calendar day (ISO text or a ``date``) from 1900-01-01 to 9998-12-31."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.validators.insert(0, DAY_RANGE)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.date:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        return super()._deserialize(value, attr, data, **kwargs)  # type: ignore[no-any-return]


class LoyaltyWindowSchema(InputSchema):
    """``surveyId``, ``questionKey``, ``from``, ``to``, ``minPurchases``."""

    class Meta:
        unknown = RAISE

    survey_id = fields.Integer(required=True, strict=True,
                               validate=validate.Range(1, MAX_ID, error="No such id."))
    question_key = fields.String(allow_none=True, validate=validate.Length(1, 40))
    period_from = WindowDay(required=True, data_key="from")
    period_to = WindowDay(required=True, data_key="to")
    min_purchases = fields.Integer(strict=True, load_default=DEFAULT_MIN_PURCHASES,
                                   validate=validate.Range(1, MAX_MIN_PURCHASES))

    @validates_schema
    def _ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "period_from" in data and "period_to" in data \
                and data["period_to"] < data["period_from"]:
            raise ValidationError("to is before from.", "to")


@dataclass(frozen=True)
class LoyaltyWindow:
    """A validated window: the question attitude comes from and the purchases' period."""

    survey_id: int
    question_key: str
    question_type: QuestionType
    high_from: int
    """An answer at or above it is a high attitude."""
    scale_min: int
    scale_max: int
    period_from: dt.date
    period_to: dt.date
    min_purchases: int

    @property
    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) in UTC: 00:00 of ``from`` to 00:00 after ``to``, local time."""
        tz = rapport().settings.tz
        return (start_of_day(self.period_from, tz, "from"),
                end_of_day(self.period_to, tz, "to"))


def load_window(raw: Mapping[str, Any]) -> LoyaltyWindow:
    """``raw`` (snake_case, ``from``/``to``) as a ``LoyaltyWindow``, or a ``UserError``:
    INVALID (bad or unordered dates, ...), NOT_FOUND (survey), ANONYMITY (an anonymous
    survey names no customer), REQUIRED (no question given and no overall question),
    UNKNOWN_QUESTION, NOT_NUMERIC (a question that is not NPS or RATING)."""
    data = load(LoyaltyWindowSchema(), raw)
    survey = db.session.get(Survey, data["survey_id"])
    if survey is None:
        raise not_found("survey", data["survey_id"], "surveyId", type_name="Survey")
    if survey.anonymous:
        raise UserError.single("An anonymous survey keeps no customers: it has no attitude "
                               "to pair with purchases.", SurveyErrorCode.ANONYMITY,
                               "surveyId")
    key = data.get("question_key") or survey.overall_question_key
    if not key:
        raise UserError.single("The survey declares no overall-satisfaction question: name "
                               "an NPS or RATING question.", ErrorCode.REQUIRED, "questionKey")
    question = db.session.scalars(select(Question).where(
        Question.survey_id == survey.id, Question.key == key)).first()
    if question is None:
        raise UserError.single(f"The survey has no question {key!r}.",
                               SurveyErrorCode.UNKNOWN_QUESTION, "questionKey")
    if question.type not in NUMERIC_TYPES:
        raise UserError.single(
            f"Question {key!r} is {question.type.value.upper()}: attitude needs an NPS or "
            "RATING question.", SurveyErrorCode.NOT_NUMERIC, "questionKey")
    if question.type is QuestionType.NPS:
        low, high, high_from = 0, 10, NPS_HIGH
    else:
        low, high = int(question.scale_min or 0), int(question.scale_max or 0)
        high_from = high - 1  # top two box
    return LoyaltyWindow(survey.id, question.key, question.type, high_from, low, high,
                         data["period_from"], data["period_to"], data["min_purchases"])


# --- SQL -------------------------------------------------------------------------------------


def _answer(numbers: Any, key: str) -> ColumnElement[Any]:
    if db.session.get_bind().dialect.name == "postgresql":
        return cast(func.jsonb_extract_path_text(numbers, literal(key)), Float)
    return cast(func.json_extract(numbers, literal(f'$."{key}"')), Float)


def attitudes(window: LoyaltyWindow) -> Subquery:
    """(customer_id, value): each customer's latest answer to the question in the window."""
    start, end = window.bounds
    # An alias: a filter condition may sit inside a query on the responses (the survey
    # analysis), which must not correlate with this one.
    response = aliased(Response)
    value = _answer(response.numbers, window.question_key)
    n = func.row_number().over(partition_by=response.customer_id,
                               order_by=(response.submitted_at.desc(), response.id.desc()))
    ranked = select(response.customer_id, value.label("value"), n.label("n")).where(
        response.survey_id == window.survey_id, response.customer_id.is_not(None),
        response.submitted_at >= start, response.submitted_at < end,
        value.is_not(None)).subquery("loyalty_ranked")
    return select(ranked.c.customer_id, ranked.c.value).where(
        ranked.c.n == 1).subquery("loyalty_attitude")


def purchases(window: LoyaltyWindow) -> Subquery:
    """(customer_id, n): purchases in the window not refunded in full."""
    start, end = window.bounds
    bought, refund = aliased(Interaction), aliased(Interaction)
    refunded_in_full = exists(
        select(refund.refers_to_id).where(refund.kind == "refund",
                                          refund.refers_to_id == bought.id)
        .group_by(refund.refers_to_id)
        .having(or_(bought.amount.is_(None),
                    func.coalesce(func.sum(refund.amount), 0) >= bought.amount)))
    return (select(bought.customer_id, func.count().label("n"))
            .where(bought.kind == "purchase", bought.occurred_at >= start,
                   bought.occurred_at < end, not_(refunded_in_full))
            .group_by(bought.customer_id).subquery("loyalty_purchases"))


def _quadrant(window: LoyaltyWindow, attitude: Subquery, bought: Subquery
              ) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """(quadrant, purchases) of a customer row joined to ``attitude`` and ``bought``."""
    count = func.coalesce(bought.c.n, 0)
    high_attitude = attitude.c.value >= window.high_from
    high_patronage = count >= window.min_purchases
    quadrant = case(
        (attitude.c.customer_id.is_(None), LoyaltyQuadrant.UNKNOWN.value),
        (and_(high_attitude, high_patronage), LoyaltyQuadrant.TRUE.value),
        (high_attitude, LoyaltyQuadrant.LATENT.value),
        (high_patronage, LoyaltyQuadrant.SPURIOUS.value),
        else_=LoyaltyQuadrant.NONE.value)
    return quadrant, count


def quadrant_condition(window: LoyaltyWindow, quadrant: LoyaltyQuadrant
                       ) -> ColumnElement[bool]:
    """Customers (not erased) in ``quadrant``: one condition on ``Customer``."""
    attitude, bought = attitudes(window), purchases(window)
    known = Customer.status != CustomerStatus.ERASED
    if quadrant is LoyaltyQuadrant.UNKNOWN:
        return and_(known, Customer.id.not_in(select(attitude.c.customer_id)))
    which, _ = _quadrant(window, attitude, bought)
    members = (select(attitude.c.customer_id)
               .outerjoin(bought, bought.c.customer_id == attitude.c.customer_id)
               .where(which == quadrant.value))
    return and_(known, Customer.id.in_(members))


@dataclass(frozen=True)
class QuadrantFigures:
    quadrant: LoyaltyQuadrant
    customers: int
    share: float | None
    """Of every customer counted (UNKNOWN included), 0-1."""
    share_of_answered: float | None
    """Of the customers with an answer, 0-1 (null for UNKNOWN)."""
    mean_purchases: float | None
    mean_attitude: float | None


@dataclass(frozen=True)
class LoyaltyMatrix:
    window: LoyaltyWindow
    customers: int
    answered: int
    quadrants: list[QuadrantFigures]


def loyalty_matrix(raw: Mapping[str, Any], segment: Mapping[str, Any] | None = None
                   ) -> LoyaltyMatrix:
    """Customers per quadrant (``load_window(raw)``), of the customers matching
    ``segment`` (a filter validated by ``core.services.segments``; none: every customer
    not erased), with the mean purchases and mean answer of each quadrant."""
    window = load_window(raw)
    attitude, bought = attitudes(window), purchases(window)
    quadrant, count = _quadrant(window, attitude, bought)
    rows = (select(quadrant.label("quadrant"), count.label("purchases"),
                   attitude.c.value.label("attitude"))
            .select_from(Customer)
            .outerjoin(attitude, attitude.c.customer_id == Customer.id)
            .outerjoin(bought, bought.c.customer_id == Customer.id)
            .where(Customer.status != CustomerStatus.ERASED,
                   *(customer_conditions(segment) if segment else [true()]))
            .subquery("loyalty_customers"))
    # Grouped outside: PostgreSQL cannot match a CASE with bound parameters in GROUP BY.
    found = {row.quadrant: row for row in db.session.execute(
        select(rows.c.quadrant, func.count().label("customers"),
               func.avg(cast(rows.c.purchases, Float)).label("purchases"),
               func.avg(rows.c.attitude).label("attitude"))
        .group_by(rows.c.quadrant))}
    total = sum(int(row.customers) for row in found.values())
    unknown = int(found[LoyaltyQuadrant.UNKNOWN.value].customers) \
        if LoyaltyQuadrant.UNKNOWN.value in found else 0
    answered = total - unknown
    figures = []
    for member in LoyaltyQuadrant:
        row = found.get(member.value)
        n = int(row.customers) if row is not None else 0
        figures.append(QuadrantFigures(
            member, n, n / total if total else None,
            None if member is LoyaltyQuadrant.UNKNOWN else (n / answered if answered
                                                            else None),
            float(row.purchases) if row is not None and row.purchases is not None else None,
            float(row.attitude) if row is not None and row.attitude is not None else None))
    return LoyaltyMatrix(window, total, answered, figures)


# --- The customer filter field ``loyalty_quadrant`` ----------------------------------------


@dataclass(frozen=True)
class QuadrantRef:
    """The validated value of the ``loyalty_quadrant`` filter field."""

    quadrant: LoyaltyQuadrant
    window: LoyaltyWindow
    question_given: bool

    def __str__(self) -> str:  # how reports name it
        w = self.window
        return (f"{self.quadrant.name} on {w.question_key!r} of survey "
                f"{global_id('Survey', w.survey_id)}, {w.period_from}..{w.period_to}")


_CAMEL = {"survey_id": "surveyId", "question_key": "questionKey", "period_from": "from",
          "period_to": "to", "min_purchases": "minPurchases", "surveyId": "surveyId",
          "questionKey": "questionKey", "from": "from", "to": "to",
          "minPurchases": "minPurchases", "quadrant": "quadrant"}


def _quadrant_of(value: Any) -> LoyaltyQuadrant:
    if isinstance(value, LoyaltyQuadrant):
        return value
    text = str(getattr(value, "value", value))
    for member in LoyaltyQuadrant:
        if text in (member.name, member.value):
            return member
    names = ", ".join(m.name for m in LoyaltyQuadrant)
    raise ValidationError({"quadrant": [f"Use one of {names}."]})


class QuadrantField(fields.Field):
    """``{quadrant, surveyId, questionKey, from, to, minPurchases}`` (camelCase as a
    client sends it, or snake_case as GraphQL hands it over). Every problem is reported on
    the field as INVALID or NOT_FOUND (core codes: every report's error type knows them)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any
                     ) -> QuadrantRef:
        if isinstance(value, QuadrantRef):
            return value
        if not isinstance(value, Mapping):
            raise ValidationError("Give quadrant, surveyId, from and to.")
        given: dict[str, Any] = {}
        for key, item in value.items():
            if key not in _CAMEL:
                raise ValidationError({key: ["Unknown field."]})
            if item is not None:
                given[_CAMEL[key]] = item
        if "quadrant" not in given:
            raise ValidationError({"quadrant": ["Missing data for required field."]})
        quadrant = _quadrant_of(given.pop("quadrant"))
        raw: dict[str, Any] = {}
        if "surveyId" in given:
            try:
                raw["survey_id"] = parse_id(given["surveyId"], "Survey")
            except ValueError as exc:
                raise ValidationError({"surveyId": [str(exc)]}) from None
        for source, target in (("questionKey", "question_key"), ("from", "from"),
                               ("to", "to"), ("minPurchases", "min_purchases")):
            if source in given:
                raw[target] = given[source]
        try:
            window = load_window(raw)
        except UserError as exc:
            if any(e.code == ErrorCode.NOT_FOUND for e in exc.errors):
                raise UserError([e.prefixed("loyaltyQuadrant") for e in exc.errors]
                                ) from None
            raise ValidationError({e.field or "_schema": [e.message] for e in exc.errors}
                                  ) from None
        return QuadrantRef(quadrant, window, bool(given.get("questionKey")))

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if value is None:
            return None
        w = value.window
        out: dict[str, Any] = {"quadrant": value.quadrant.name,
                               "surveyId": global_id("Survey", w.survey_id),
                               "from": w.period_from.isoformat(),
                               "to": w.period_to.isoformat(), "minPurchases": w.min_purchases}
        if value.question_given:
            out["questionKey"] = w.question_key
        return out


def quadrant_filter_condition(ref: QuadrantRef) -> ColumnElement[bool]:
    return quadrant_condition(ref.window, ref.quadrant)


__all__ = ["DEFAULT_MIN_PURCHASES", "FILTER_COST", "LoyaltyMatrix", "LoyaltyQuadrant",
           "LoyaltyWindow", "QuadrantField", "QuadrantRef", "attitudes", "load_window",
           "loyalty_matrix", "purchases", "quadrant_condition"]
