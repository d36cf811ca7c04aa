"""`rapport db upgrade` builds exactly the surveys models, and the schema itself keeps
anonymous responses anonymous."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import inspect, insert, update
from sqlalchemy.exc import IntegrityError

from core.db import db
from core.migrate import current_heads, upgrade
from core.services.customers import create_customer
from plugins.surveys.models import Response, Survey
from tests.conftest import AppFactory
from tests.migrations import drop_everything, schema_differences

NOW = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)


def test_upgrade_builds_exactly_the_models(make_app: AppFactory) -> None:
    app = make_app(enabled=["surveys"])
    drop_everything(app)
    upgrade(app)
    assert "surveys_0001" in current_heads(app)
    with app.app_context():
        tables = {t for t in inspect(db.engine).get_table_names() if t.startswith("surveys_")}
    assert tables == {"surveys_survey", "surveys_question", "surveys_scale", "surveys_response"}
    assert schema_differences(app) == []
    heads = current_heads(app)
    upgrade(app)
    assert current_heads(app) == heads


def test_tables_stay_out_when_the_plugin_is_disabled(make_app: AppFactory) -> None:
    app = make_app(enabled=[])
    drop_everything(app)
    upgrade(app)
    with app.app_context():
        tables = inspect(db.engine).get_table_names()
    assert not [t for t in tables if t.startswith("surveys_")]


def _survey(anonymous: bool) -> int:
    survey = Survey(title="t", anonymous=anonymous,
                    collection_token="x" * 32 if anonymous else None)
    db.session.add(survey)
    db.session.commit()
    return survey.id


def _response(survey_id: int, anonymous: bool, customer_id: int | None) -> None:
    db.session.execute(insert(Response).values(
        survey_id=survey_id, anonymous=anonymous, customer_id=customer_id, submitted_at=NOW,
        recorded_at=NOW, numbers={}, choices={}, texts={}))
    db.session.commit()


def test_the_schema_refuses_a_customer_on_an_anonymous_response(make_app: AppFactory) -> None:
    app = make_app(enabled=["surveys"])
    with app.app_context():
        customer = create_customer({"name": "Ada"}).id
        anonymous = _survey(True)
        with pytest.raises(IntegrityError):  # CHECK: anonymous => no customer
            _response(anonymous, True, customer)
        db.session.rollback()
        with pytest.raises(IntegrityError):  # FK: the flag must be the survey's
            _response(anonymous, False, customer)
        db.session.rollback()
        _response(anonymous, True, None)


def test_a_survey_with_responses_cannot_change_its_anonymity(make_app: AppFactory) -> None:
    app = make_app(enabled=["surveys"])
    with app.app_context():
        survey_id = _survey(True)
        _response(survey_id, True, None)
        with pytest.raises(IntegrityError):
            db.session.execute(update(Survey).where(Survey.id == survey_id).values(
                anonymous=False, collection_token=None))
            db.session.commit()
        db.session.rollback()
        empty = _survey(True)  # without responses the flag may change (while DRAFT)
        db.session.execute(update(Survey).where(Survey.id == empty).values(
            anonymous=False, collection_token=None))
        db.session.commit()
