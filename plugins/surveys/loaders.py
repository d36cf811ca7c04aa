"""DataLoaders of the survey types: one query per relation for a whole page."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

from sqlalchemy import func, select

from api import ModelByIdLoader, RapportLoader
from api.pagination import after_condition
from core.db import db

from plugins.surveys import service
from plugins.surveys.models import Response, Survey


class SurveyByIdLoader(ModelByIdLoader):
    model = Survey


class ResponseByIdLoader(ModelByIdLoader):
    model = Response


class QuestionsBySurveyLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[list[Any]]:
        found = service.questions_of(keys)
        return [found.get(k, []) for k in keys]


class ScalesBySurveyLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[list[Any]]:
        found = service.scales_of(keys)
        return [found.get(k, []) for k in keys]


class _ResponsesBy(RapportLoader):
    """Up to ``limit`` responses per parent (survey or customer), newest first, after an
    optional cursor ``(submitted_at, id)``: one ROW_NUMBER() query for the page."""

    #: The parent's column of Response (a name: a mapped attribute on a class would bind).
    parent: ClassVar[str]

    def load_batch(self, keys: list[int]) -> list[list[Response]]:
        column = getattr(Response, self.parent)
        conditions: list[Any] = [column.in_(keys)]
        after = self.params.get("after")
        if after is not None:
            conditions.append(after_condition([Response.submitted_at, Response.id],
                                              list(after), descending=True))
        position = func.row_number().over(
            partition_by=column,
            order_by=(Response.submitted_at.desc(), Response.id.desc())).label("position")
        ranked = select(Response.id, position).where(*conditions).subquery()
        found: dict[int, list[Response]] = defaultdict(list)
        for response in db.session.scalars(
                select(Response).join(ranked, ranked.c.id == Response.id)
                .where(ranked.c.position <= self.params["limit"])
                .order_by(column, Response.submitted_at.desc(), Response.id.desc())):
            found[getattr(response, self.parent)].append(response)
        return [found.get(k, []) for k in keys]


class _ResponseCountBy(RapportLoader):
    parent: ClassVar[str]

    def load_batch(self, keys: list[int]) -> list[int]:
        column = getattr(Response, self.parent)
        counts = dict(db.session.execute(  # type: ignore[arg-type]
            select(column, func.count()).where(column.in_(keys))
            .group_by(column)).all())
        return [counts.get(k, 0) for k in keys]


class ResponsesBySurveyLoader(_ResponsesBy):
    parent = "survey_id"


class ResponsesByCustomerLoader(_ResponsesBy):
    parent = "customer_id"


class ResponseCountBySurveyLoader(_ResponseCountBy):
    parent = "survey_id"


class ResponseCountByCustomerLoader(_ResponseCountBy):
    parent = "customer_id"
