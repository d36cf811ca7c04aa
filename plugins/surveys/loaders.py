"""DataLoaders of the survey types: one query per relation for a whole page."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import func, select

from api import ModelByIdLoader, RapportLoader
from api.pagination import Keyset, rows_per_parent
from core.db import db

from plugins.surveys import service
from plugins.surveys.models import Response, Survey


#: The order of response lists (a survey's, a customer's): newest submitted first.
NEWEST_RESPONSES = Keyset((Response.submitted_at, Response.id), (dt.datetime, int),
                          descending=True)


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
    optional cursor ``(submitted_at, id)`` (``NEWEST_RESPONSES.decode``): one ROW_NUMBER()
    query for the page."""

    #: The parent's column of Response (a name: a mapped attribute on a class would bind).
    parent: ClassVar[str]

    def load_batch(self, keys: list[int]) -> list[list[Response]]:
        return rows_per_parent(Response, getattr(Response, self.parent), keys,
                               NEWEST_RESPONSES, self.params["limit"], self.params.get("after"))


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
