"""Fixtures and helpers of the surveys tests: an app with the plugin, customers, and
surveys defined through the service."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from core.services.customers import create_customer
from plugins.surveys import service
from plugins.surveys.models import Survey
from tests.conftest import AppFactory, GraphQL, admin_token

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def days_ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


@pytest.fixture
def surveys_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["surveys"])
    with app.app_context():
        yield app


@pytest.fixture
def gql(surveys_app: Flask) -> GraphQL:
    return GraphQL(surveys_app, admin_token(surveys_app))


def customer(name: str = "Ada", external_id: str | None = None) -> int:
    raw: dict[str, Any] = {"name": name}
    if external_id is not None:
        raw["external_id"] = external_id
    return create_customer(raw).id


#: A survey with one question of every type, an overall question and a scale.
QUESTIONS: list[dict[str, Any]] = [
    {"key": "nps", "text": "How likely are you to recommend us?", "type": "nps",
     "required": True},
    {"key": "overall", "text": "Overall satisfaction", "type": "rating", "scale_min": 1,
     "scale_max": 5, "labels": [{"value": 1, "label": "Very poor"},
                                {"value": 5, "label": "Excellent"}]},
    {"key": "speed", "text": "Delivery speed", "type": "rating", "scale_min": 1,
     "scale_max": 7},
    {"key": "slow", "text": "Delivery was slow", "type": "rating", "scale_min": 1,
     "scale_max": 7},
    {"key": "channel", "text": "How did you order?", "type": "single_choice",
     "options": [{"key": "web", "label": "Web"}, {"key": "phone", "label": "Phone"}]},
    {"key": "liked", "text": "What did you like?", "type": "multi_choice",
     "options": [{"key": "price", "label": "Price"}, {"key": "speed", "label": "Speed"},
                 {"key": "staff", "label": "Staff"}]},
    {"key": "comment", "text": "Anything else?", "type": "text"},
]
SCALES = [{"name": "Delivery", "items": [{"key": "speed"}, {"key": "slow", "reverse": True}]}]


def make_survey(*, anonymous: bool = False, open_it: bool = True, **extra: Any) -> Survey:
    survey = service.create_survey({"title": "After purchase", "anonymous": anonymous,
                                    "questions": QUESTIONS, "scales": SCALES,
                                    "overall_question_key": "overall", **extra})
    if open_it:
        service.open_survey(survey.id)
    return survey


def answer(survey: Survey, customer_id: int | None = None, *, at: dt.datetime | None = None,
           **values: Any) -> Any:
    raw: dict[str, Any] = {"survey_id": survey.id,
                           "answers": [{"key": k, "value": v} for k, v in values.items()]}
    if survey.anonymous:
        raw["token"] = survey.collection_token
    else:
        raw["customer_id"] = customer_id
    if at is not None:
        raw["submitted_at"] = at.isoformat()
    return service.submit_response(raw, now=NOW)
