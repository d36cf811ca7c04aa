"""``load_matrix``: the response matrix on both databases, segments, anonymous surveys."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flask import Flask
from sqlalchemy import select

from core.errors import UserError
from core.models import Customer
from plugins.surveys.data import load_matrix
from plugins.surveys.models import QuestionType
from tests.conftest import count_statements
from tests.plugins.surveys.conftest import answer, customer, make_survey


def test_the_matrix_holds_every_numeric_answer_in_order(surveys_app: Flask) -> None:
    survey = make_survey()
    ada, bob, cy = customer("Ada"), customer("Bob"), customer("Cy")
    answer(survey, ada, nps=9, overall=5, speed=6, slow=2, channel="web",
           liked=["price", "speed"], comment="Fine")
    answer(survey, bob, nps=3, speed=1, channel="phone", liked=["staff"])
    answer(survey, cy, nps=10, overall=4, slow=7)
    matrix = load_matrix(survey)
    assert [q.key for q in matrix.questions] == ["nps", "overall", "speed", "slow"]
    assert [q.type for q in matrix.questions] == [QuestionType.NPS] + [QuestionType.RATING] * 3
    assert [(q.scale_min, q.scale_max) for q in matrix.questions] == [(0, 10), (1, 5), (1, 7),
                                                                      (1, 7)]
    assert matrix.questions[1].is_overall and matrix.overall_key == "overall"
    assert matrix.questions[3].scales == (("Delivery", True),)
    assert matrix.scales[0].items == (("speed", False), ("slow", True))
    assert matrix.n_responses == 3 and matrix.values.dtype == np.float64
    expected = np.array([[9, 5, 6, 2], [3, math.nan, 1, math.nan], [10, 4, math.nan, 7]])
    np.testing.assert_array_equal(matrix.values, expected)
    assert matrix.customer_ids is not None and matrix.customer_ids.dtype == np.int64
    assert matrix.customer_ids.tolist() == [ada, bob, cy]
    assert matrix.choice_counts == {"channel": {"web": 1, "phone": 1},
                                    "liked": {"price": 1, "speed": 1, "staff": 1}}
    assert matrix.choice_answered == {"channel": 2, "liked": 2}
    np.testing.assert_array_equal(matrix.column("speed"), [6, 1, math.nan])


def test_a_segment_selects_the_rows_of_its_customers(surveys_app: Flask) -> None:
    survey = make_survey()
    ada, bob = customer("Ada"), customer("Bob")
    answer(survey, ada, nps=9)
    answer(survey, bob, nps=2)
    answer(survey, ada, nps=7)
    segment = select(Customer.id.label("customer_id")).where(Customer.name == "Ada")
    matrix = load_matrix(survey, segment)
    assert matrix.customer_ids is not None and matrix.customer_ids.tolist() == [ada, ada]
    assert matrix.values[:, 0].tolist() == [9, 7]
    assert load_matrix(survey, segment.subquery()).n_responses == 2


def test_an_anonymous_survey_has_no_customer_column(surveys_app: Flask) -> None:
    survey = make_survey(anonymous=True)
    answer(survey, nps=8, overall=3)
    matrix = load_matrix(survey)
    assert matrix.customer_ids is None and matrix.anonymous
    assert matrix.values[0, :2].tolist() == [8, 3]
    with pytest.raises(UserError) as caught:
        load_matrix(survey, select(Customer.id))
    assert caught.value.errors[0].code == "NOT_ALLOWED"


def test_a_survey_without_responses_gives_an_empty_matrix(surveys_app: Flask) -> None:
    matrix = load_matrix(make_survey())
    assert matrix.values.shape == (0, 4) and matrix.n_responses == 0
    assert matrix.customer_ids is not None and matrix.customer_ids.shape == (0,)
    assert matrix.choice_counts["channel"] == {"web": 0, "phone": 0}


def test_responses_load_in_one_statement_two_with_choices(surveys_app: Flask) -> None:
    survey = make_survey()
    for index in range(30):
        answer(survey, customer(f"C{index}"), nps=index % 11, channel="web")
    assert survey.anonymous is False  # loads the expired survey row before counting
    with count_statements(surveys_app) as statements:
        matrix = load_matrix(survey)
    assert matrix.n_responses == 30
    on_responses = [s for s in statements if "surveys_response" in s]
    # Questions and scales: one statement each; the responses: numbers, then choices.
    assert len(on_responses) == 2 and len(statements) == 4, statements
