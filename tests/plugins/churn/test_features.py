"""Features and BTYD summaries: values worked by hand, NULL defaults, chunking, every
installed plugin's contribution, and no leakage from facts dated after ``as_of``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pytest
from flask import Flask
from sqlalchemy import update

from core.db import db
from core.models import Customer
from core.services.customers import create_customer
from core.services.staff import define_customer_attribute
from plugins.churn import features
from plugins.churn.models import TimeUnit
from plugins.complaints import service as complaints
from plugins.loyalty import service as loyalty
from rapport_referrals.models import Referral
from tests.conftest import AppFactory, count_statements
from tests.plugins.churn.conftest import customer, days_ago, purchase
from tests.plugins.surveys.conftest import answer, make_survey

AS_OF = days_ago(10)


def matrix(spec: features.FeatureSpec, chunk_size: int = 1000
           ) -> tuple[list[str], np.ndarray, np.ndarray]:
    chunks = list(features.feature_chunks(spec, chunk_size))
    ids = np.concatenate([c.customer_ids for c in chunks])
    return features.feature_names(spec), ids, np.vstack([c.values for c in chunks])


def row(spec: features.FeatureSpec, customer_id: int) -> dict[str, float]:
    names, ids, values = matrix(spec)
    return dict(zip(names, values[list(ids).index(customer_id)]))


def test_core_features_by_hand(churn_app: Flask) -> None:
    ada = customer("Ada", created_days_ago=400, gender="female", birth_date="1990-01-01",
                   income_band="<25k", attributes={"seats": 12, "plan": "pro"})
    bob = customer("Bob", created_days_ago=50)
    define_customer_attribute({"key": "seats", "type": "number", "label": "Seats"})
    define_customer_attribute({"key": "plan", "type": "category", "label": "Plan",
                               "categories": ["basic", "pro"]})
    # A deployment declared before declarations checked stored values may still hold text
    # in a number attribute (writes and declarations now refuse it): the features must
    # read it as missing.
    db.session.execute(update(Customer).where(Customer.id == bob).values(
        attributes={"seats": "many"}))
    db.session.commit()
    purchase(ada, days_ago(300), "100.00")
    purchase(ada, days_ago(40), "20.50")
    purchase(ada, days_ago(20), "9.50")
    purchase(ada, days_ago(15), "999.00", currency="EUR")  # not the base currency
    purchase(ada, days_ago(200), kind="call")
    purchase(ada, days_ago(120), kind="call")
    purchase(ada, days_ago(30), kind="call")
    spec = features.feature_spec(AS_OF)
    a, b = row(spec, ada), row(spec, bob)
    assert a["recency_days"] == pytest.approx(10)
    assert (a["frequency"], a["monetary"], a["avg_order_value"]) == (3, 130.0, pytest.approx(
        130 / 3))
    assert a["tenure_days"] == pytest.approx(290)
    assert (a["call_30d"], a["call_90d"], a["call_365d"]) == (1, 1, 3)
    assert a["call_trend_90d"] == 1 - 1  # one call in the last 90 days, one in the 90 before
    assert a["days_since_last_interaction"] == pytest.approx(5)  # the EUR purchase
    expected_age = (AS_OF.date() - dt.date(1990, 1, 1)).days / 365.25
    assert (a["age_years"], a["age_missing"]) == (pytest.approx(expected_age), 0)
    assert (a["gender_female"], a["income_band_25k"]) == (1, 1)
    assert (a["attr_seats"], a["attr_seats_missing"], a["attr_plan_pro"],
            a["attr_plan_basic"]) == (12, 0, 1, 0)
    # Bob: no purchase, no birth date, a seats value that is not a number.
    assert (b["no_purchase"], b["frequency"], b["monetary"]) == (1, 0, 0)
    assert b["recency_days"] == b["tenure_days"] == pytest.approx(40)
    assert (b["age_years"], b["age_missing"], b["gender_female"]) == (0, 1, 0)
    assert (b["attr_seats"], b["attr_seats_missing"], b["attr_plan_pro"]) == (0, 1, 0)


def test_chunks_give_the_same_matrix_in_bounded_queries(churn_app: Flask) -> None:
    people = [customer(f"C{n}") for n in range(7)]
    for n, person in enumerate(people):
        purchase(person, days_ago(20 + n), f"{n + 1}.00")
    customer("Later", created_days_ago=1)  # did not exist at AS_OF
    spec = features.feature_spec(AS_OF)
    names, ids, whole = matrix(spec, chunk_size=1000)
    with count_statements(churn_app) as statements:
        _, chunked_ids, chunked = matrix(spec, chunk_size=3)
    assert list(ids) == list(chunked_ids) == people
    assert np.array_equal(whole, chunked)
    assert len(statements) <= 2 * 3 + 1 + 3  # per chunk: its ids, its features
    assert not np.isnan(whole).any()
    assert len(names) == whole.shape[1]


def test_btyd_summary_by_hand(churn_app: Flask) -> None:
    ada, bob = customer("Ada"), customer("Bob")
    start = AS_OF.replace(hour=12, minute=0, second=0) - dt.timedelta(days=20)
    for offset, amount in ((0, "10"), (0, "5"), (3, "20"), (10, "30"), (10, "10")):
        purchase(ada, start + dt.timedelta(days=offset, hours=offset % 2), amount)
    purchase(ada, start + dt.timedelta(days=5), "500", currency="EUR")
    purchase(bob, start, "7")
    purchase(bob, AS_OF + dt.timedelta(days=2), "7")  # after as_of: not counted
    daily = list(features.btyd_chunks(AS_OF, TimeUnit.DAY))[0]
    weekly = list(features.btyd_chunks(AS_OF, TimeUnit.WEEK))[0]
    assert list(daily.customer_ids) == [ada, bob]
    assert list(daily.frequency) == [2, 0]
    assert list(daily.recency) == [10, 0]
    assert list(daily.T) == [20, 20]
    assert daily.monetary[0] == pytest.approx((20 + 40) / 2)
    assert np.isnan(daily.monetary[1])
    assert list(weekly.recency) == pytest.approx([10 / 7, 0])
    assert list(weekly.T) == pytest.approx([20 / 7, 20 / 7])


@pytest.fixture
def everything_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["churn", "complaints", "loyalty", "surveys", "referrals"])
    with app.app_context():
        yield app


def test_every_plugin_contributes_and_nothing_leaks_from_after_as_of(
        everything_app: Flask) -> None:
    ada, bob = customer("Ada"), customer("Bob")
    for person in (ada, bob):
        purchase(person, days_ago(100), "50")
        complaints.file_complaint({"customer_id": person, "type": "logistics",
                                   "channel": "phone", "subject": "Late",
                                   "filed_at": days_ago(60).isoformat()}, now=days_ago(60))
    survey = make_survey()
    answer(survey, ada, at=days_ago(40), nps=3, overall=2)
    db.session.add(Referral(referrer_id=ada, referred_id=bob, referred_at=days_ago(50)))
    db.session.commit()
    spec = features.feature_spec(AS_OF)
    names, _, before = matrix(spec)
    for plugin in ("loyalty_", "complaints_", "surveys_", "referrals_"):
        assert any(n.startswith(plugin) for n in names), plugin
    assert "referrals_count_missing" in names

    # Facts dated after AS_OF, for core and for every plugin.
    late = days_ago(5)
    for person in (ada, bob):
        purchase(person, late, "75")
        purchase(person, late, kind="call")
        filed = complaints.file_complaint({"customer_id": person, "type": "logistics",
                                           "channel": "phone", "subject": "Again",
                                           "filed_at": late.isoformat()}, now=late)
        complaints.transition_complaint({"id": filed.id, "to": "confirmed",
                                         "cause": "internal_management"}, now=late)
        answer(survey, person, at=late, nps=10, overall=5)
    loyalty.adjust_points({"customer_id": ada, "points": 100, "reason": "Goodwill",
                           "idempotency_key": "late-goodwill"})  # dated now
    carol = create_customer({"name": "Carol"}).id
    db.session.add(Referral(referrer_id=ada, referred_id=carol, referred_at=late))
    db.session.commit()

    names_after, _, after = matrix(features.feature_spec(AS_OF))
    assert names_after == names
    assert np.array_equal(before, after)
    _, _, now_values = matrix(spec.at(dt.datetime.now(dt.timezone.utc)))
    changed = {names[i] for i in np.nonzero((now_values[:2] != before).any(axis=0))[0]}
    assert {"frequency", "complaints_last_90d", "referrals_count", "loyalty_balance",
            "surveys_latest_nps"} <= changed


def test_spec_round_trips(churn_app: Flask) -> None:
    customer(gender="male", income_band="<25k")
    customer("Bob", income_band="25k")
    spec = features.feature_spec(AS_OF)
    again = features.FeatureSpec.from_json(spec.to_json())
    assert again == spec
    names = features.feature_names(again)
    assert names == features.feature_names(spec)
    assert {"gender_male", "income_band_25k", "income_band_25k_2"} <= set(names)
    assert len(set(names)) == len(names)
