"""Surveys features for the churn plugin's ``rapport_churn_features`` hook.

One SELECT, LEFT JOINed by churn with every other plugin's; only responses submitted on
or before ``as_of`` count, and anonymous responses never do (they name no customer).

- ``surveys_latest_nps``: the answer (0-10) to an NPS question in the customer's latest
  response that has one.
- ``surveys_latest_satisfaction``: the answer to the overall-satisfaction question of the
  latest response that has one, rescaled to 0-1 ((x - min) / (max - min)) so surveys with
  1-5 and 1-7 scales compare.
- ``surveys_days_since_last_response``: days from the latest response to ``as_of``.

NULL when the customer has no such response by then.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Float, Select, and_, case, cast, extract, func, literal, select
from sqlalchemy.sql import ColumnElement, FromClause

from core.db import UTCDateTime, db

from plugins.surveys.models import Question, QuestionType, Response, Survey


def _answer(key: ColumnElement[Any]) -> ColumnElement[Any]:
    """The number a response gives the question named by the column ``key``."""
    if db.session.get_bind().dialect.name == "postgresql":
        return cast(func.jsonb_extract_path_text(Response.numbers, key), Float)
    return cast(func.json_extract(Response.numbers, literal("$.") + key), Float)


def _latest(value: ColumnElement[Any], conditions: list[Any], joins: list[Any],
            name: str) -> Any:
    """(customer_id, value) of each customer's latest response where ``value`` is set."""
    n = func.row_number().over(partition_by=Response.customer_id,
                               order_by=(Response.submitted_at.desc(), Response.id.desc()))
    ranked = select(Response.customer_id, value.label("value"), n.label("n"))
    for target, on in joins:
        ranked = ranked.join(target, on)
    ranked_sub = ranked.where(*conditions, value.is_not(None)).subquery(f"{name}_ranked")
    return select(ranked_sub.c.customer_id, ranked_sub.c.value).where(
        ranked_sub.c.n == 1).subquery(name)


def _days_until(as_of: dt.datetime, moment: ColumnElement[Any]) -> ColumnElement[Any]:
    if db.session.get_bind().dialect.name == "postgresql":
        return cast(extract("epoch", literal(as_of, UTCDateTime) - moment) / 86400.0, Float)
    naive = as_of.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    return cast(func.julianday(naive) - func.julianday(moment), Float)


def churn_features(customers: FromClause, as_of: dt.datetime) -> Select[Any]:
    ids = customers.c.customer_id
    mine = [Response.customer_id.in_(select(ids)), Response.submitted_at <= as_of]

    nps = _latest(_answer(Question.key), mine,
                  [(Question, and_(Question.survey_id == Response.survey_id,
                                   Question.type == QuestionType.NPS))], "surveys_nps")
    low = case((Question.type == QuestionType.NPS, 0), else_=Question.scale_min)
    high = case((Question.type == QuestionType.NPS, 10), else_=Question.scale_max)
    rescaled = (_answer(Question.key) - low) / cast(high - low, Float)
    satisfaction = _latest(rescaled, mine, [
        (Survey, Survey.id == Response.survey_id),
        (Question, and_(Question.survey_id == Survey.id,
                        Question.key == Survey.overall_question_key))], "surveys_overall")
    last = (select(Response.customer_id, func.max(Response.submitted_at).label("at"))
            .where(*mine).group_by(Response.customer_id).subquery("surveys_last"))

    return (select(
        ids.label("customer_id"),
        nps.c.value.label("surveys_latest_nps"),
        satisfaction.c.value.label("surveys_latest_satisfaction"),
        _days_until(as_of, last.c.at).label("surveys_days_since_last_response"))
        .select_from(customers)
        .outerjoin(nps, nps.c.customer_id == ids)
        .outerjoin(satisfaction, satisfaction.c.customer_id == ids)
        .outerjoin(last, last.c.customer_id == ids))
