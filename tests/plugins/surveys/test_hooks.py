"""The plugin's own hook, merge, erasure, export, the churn features and the demo data."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import numpy as np
import pytest
from flask import Flask
from sqlalchemy import func, select

from core import hookimpl
from core.db import db
from core.errors import UserError
from core.ids import global_id
from core.models import Customer
from core.services.customers import erase_customer, export_customer, merge_customers
from plugins import surveys as plugin
from plugins.surveys.data import load_matrix
from plugins.surveys.demo import ANONYMOUS, NAMED
from plugins.surveys.models import Response, Survey
from tests.conftest import AppFactory
from tests.plugins.surveys.conftest import answer, customer, days_ago, make_survey


class Recorder:
    def __init__(self, refuse: bool = False):
        self.seen: list[tuple[int, int | None, dict[str, Any]]] = []
        self.refuse = refuse

    @hookimpl
    def rapport_survey_response_recorded(self, response: Response) -> None:
        # inside the transaction: the row is flushed and visible to this session
        stored = db.session.get(Response, response.id)
        assert stored is not None
        self.seen.append((response.id, response.customer_id, dict(response.numbers)))
        if self.refuse:
            raise UserError.single("Refused by a partner plugin.")


def test_the_response_hook_fires_inside_the_transaction(make_app: AppFactory) -> None:
    recorder = Recorder()
    app = make_app(enabled=["surveys"], plugins=(recorder,))
    with app.app_context():
        survey = make_survey()
        ada = customer("Ada")
        response = answer(survey, ada, nps=2)
        assert recorder.seen == [(response.id, ada, {"nps": 2})]


def test_a_hook_that_raises_leaves_nothing_written(make_app: AppFactory) -> None:
    app = make_app(enabled=["surveys"], plugins=(Recorder(refuse=True),))
    with app.app_context():
        survey = make_survey()
        with pytest.raises(UserError):
            answer(survey, customer("Ada"), nps=2)
        assert db.session.scalar(select(func.count()).select_from(Response)) == 0


def test_merge_rekeys_responses(surveys_app: Flask) -> None:
    survey = make_survey()
    ada, twin, bob = customer("Ada"), customer("Ada L."), customer("Bob")
    answer(survey, ada, nps=9)
    answer(survey, twin, nps=3)
    answer(survey, bob, nps=5)
    merge_customers(ada, [twin])
    owners = sorted(db.session.execute(select(Response.customer_id, Response.numbers["nps"]
                                              .as_integer())).all())
    assert owners == sorted([(ada, 9), (ada, 3), (bob, 5)])


def test_erasure_drops_free_text_and_keeps_the_statistics(surveys_app: Flask) -> None:
    survey = make_survey()
    ada, bob = customer("Ada"), customer("Bob")
    answer(survey, ada, nps=9, overall=4, channel="web", comment="Call me on 555-0100")
    answer(survey, bob, nps=3, comment="Slow")
    before = load_matrix(survey)
    result = erase_customer(ada)
    assert result.reports["surveys"] == {"responses_anonymised": 1}
    db.session.expire_all()
    rows = {r.customer_id: r for r in db.session.scalars(select(Response))}
    assert rows[ada].texts == {} and rows[ada].numbers == {"nps": 9, "overall": 4}
    assert rows[ada].choices == {"channel": "web"}
    assert rows[bob].texts == {"comment": "Slow"}
    after = load_matrix(survey)
    np.testing.assert_array_equal(after.values, before.values)
    assert after.choice_counts == before.choice_counts
    assert erase_customer(customer("Cy")).reports.get("surveys") is None


def test_export_section(surveys_app: Flask) -> None:
    survey = make_survey()
    ada = customer("Ada")
    answer(survey, ada, at=days_ago(2), nps=9, liked=["price"], comment="Fine")
    [exported] = export_customer(ada)["plugins"]["surveys"]["surveyResponses"]
    assert exported["survey"] == "After purchase"
    assert exported["surveyId"] == global_id("Survey", survey.id)
    assert {"id", "surveyId", "submittedAt", "externalId"} <= set(exported)
    assert exported["answers"] == {"nps": 9, "liked": ["price"], "comment": "Fine"}
    assert "surveys" not in export_customer(customer("Bob")).get("plugins", {})


def test_churn_features_are_computed_as_of_a_date(surveys_app: Flask) -> None:
    as_of = days_ago(10)
    survey = make_survey()
    other = make_survey(overall_question_key="nps", scales=[])
    anonymous = make_survey(anonymous=True)
    ada, bob, cy = customer("Ada"), customer("Bob"), customer("Cy")
    answer(survey, ada, at=as_of - dt.timedelta(days=30), nps=4, overall=2)
    answer(survey, ada, at=as_of - dt.timedelta(days=6), nps=8)          # no overall answer
    answer(survey, ada, at=days_ago(1), nps=0, overall=1)                # after as_of
    answer(other, cy, at=as_of - dt.timedelta(days=1), nps=5)           # overall is the NPS
    answer(anonymous, at=as_of - dt.timedelta(days=1), nps=1)
    customers = select(Customer.id.label("customer_id")).subquery()
    query = plugin.rapport_churn_features(customers=customers, as_of=as_of)
    rows = {r.customer_id: r._asdict() for r in db.session.execute(query)}
    assert set(rows) == {ada, bob, cy}
    assert rows[ada]["surveys_latest_nps"] == 8
    assert rows[ada]["surveys_latest_satisfaction"] == pytest.approx(0.25)   # 2 on 1..5
    assert rows[ada]["surveys_days_since_last_response"] == pytest.approx(6, abs=1e-6)
    assert rows[bob] == {"customer_id": bob, "surveys_latest_nps": None,
                         "surveys_latest_satisfaction": None,
                         "surveys_days_since_last_response": None}
    assert rows[cy]["surveys_latest_nps"] == 5
    assert rows[cy]["surveys_latest_satisfaction"] == pytest.approx(0.5)     # 5 on 0..10


def test_demo_data_answers_hang_together(surveys_app: Flask) -> None:
    as_of = dt.datetime(2026, 6, 30, 15, tzinfo=dt.timezone.utc)
    for n in range(600):
        customer(f"C{n}")
    customers = db.session.scalars(select(Customer).order_by(Customer.id)).all()
    plugin.rapport_demo_data(rng=random.Random(4), customers=customers[:300], as_of=as_of)
    plugin.rapport_demo_data(rng=random.Random(5), customers=customers[300:], as_of=as_of)
    db.session.commit()
    surveys = {s.title: s for s in db.session.scalars(select(Survey))}
    assert set(surveys) == {NAMED, ANONYMOUS}  # the second chunk found them again
    assert db.session.scalar(select(func.max(Response.submitted_at))) <= as_of
    named = load_matrix(surveys[NAMED])
    assert 200 < named.n_responses < 320
    keys = named.keys
    values = named.values
    complete = values[~np.isnan(values).any(axis=1)]
    corr = np.corrcoef(complete, rowvar=False)

    def r(a: str, b: str) -> float:
        return float(corr[keys.index(a), keys.index(b)])

    assert r("delivery_speed", "delivery_care") > 0.3
    assert r("delivery_speed", "delivery_late") < -0.3    # the reverse-keyed item
    assert r("staff_friendly", "staff_helpful") > 0.3
    assert r("nps", "overall") > 0.4
    assert named.choice_answered["channel"] == named.n_responses
    anonymous = load_matrix(surveys[ANONYMOUS])
    assert anonymous.customer_ids is None and anonymous.n_responses == 200
    assert db.session.scalar(select(func.count()).select_from(Response).where(
        Response.anonymous, Response.customer_id.is_not(None))) == 0
