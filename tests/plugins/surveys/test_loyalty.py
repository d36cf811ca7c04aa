"""The loyalty matrix (Dick and Basu): attitude from a survey answer x purchases, over a
window; ``loyaltyMatrix`` and the customer filter field ``loyaltyQuadrant``.

A hand-built data set with known answers and purchases (window 2026-03-01..2026-03-31):

====  ==========================================  =====================  ===============
name  NPS answers (date: value)                   purchases in window    NPS quadrant
====  ==========================================  =====================  ===============
A     03-10: 10 (overall 5)                        4, one refunded in     TRUE
                                                   part
B     03-10: 9 (overall 2)                         1                      LATENT
C     03-10: 3 (overall 4)                         2                      SPURIOUS
D     03-10: 5                                     0                      NONE
E     none                                         4                      UNKNOWN
F     02-20: 10 (before the window)                2                      UNKNOWN
G     03-02: 10 (overall 5), 03-20: 2 (overall 3)  2                      SPURIOUS
H     03-10: 8 (a passive: low); 04-02: 10 after   3, one refunded in     SPURIOUS
                                                   full (+1 in April)
I     03-05: 4 (overall 5), 03-25: 9               2, one refunded in     LATENT
                                                   full
K     03-10: 10, erased                            3                      (left out)
====  ==========================================  =====================  ===============
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask

from core.db import db
from core.ids import global_id
from core.services.customers import create_customer, erase_customer
from core.services.interactions import record_interaction
from core.services.segments import filter_document, validate_filter
from plugins.surveys import service
from plugins.surveys.loyalty import LoyaltyQuadrant, load_window, loyalty_matrix
from plugins.surveys.models import Survey
from tests.conftest import AppFactory, GraphQL, admin_token, count_statements
from tests.plugins.surveys.conftest import NOW, make_survey

UTC = dt.timezone.utc
WINDOW = {"from": "2026-03-01", "to": "2026-03-31"}

MATRIX = """query($survey: ID!, $key: String, $from: Date!, $to: Date!, $min: Int,
                  $filter: CustomerFilterInput) {
  loyaltyMatrix(surveyId: $survey, questionKey: $key, from: $from, to: $to,
                minPurchases: $min, filter: $filter) {
    errors { field code message }
    questionKey highAttitudeFrom minPurchases customers answered
    quadrants { quadrant customers share shareOfAnswered meanPurchases meanAttitude } } }"""
CUSTOMERS = """query($f: CustomerFilterInput) { customers(first: 50, filter: $f) {
  totalCount edges { node { name } } } }"""


def at(month: int, day: int) -> dt.datetime:
    return dt.datetime(2026, month, day, 12, tzinfo=UTC)


def _respond(survey: Survey, customer_id: int, when: dt.datetime, **values: Any) -> None:
    service.submit_response({"survey_id": survey.id, "customer_id": customer_id,
                             "submitted_at": when.isoformat(),
                             "answers": [{"key": k, "value": v} for k, v in values.items()]},
                            now=NOW)


def _buy(customer_id: int, when: dt.datetime, amount: str = "10.00") -> int:
    return record_interaction({"customer_id": customer_id, "kind": "purchase",
                               "occurred_at": when.isoformat(), "amount": amount,
                               "currency": "USD"}).id


def _refund(purchase_id: int, customer_id: int, amount: str) -> None:
    record_interaction({"customer_id": customer_id, "kind": "refund", "amount": amount,
                        "currency": "USD", "occurred_at": at(4, 5).isoformat(),
                        "refers_to_id": purchase_id})


def build() -> tuple[Survey, dict[str, int]]:
    survey = make_survey()
    people = {name: create_customer({"name": name, "tags": ["vip"] if name in "AC" else []}).id
              for name in "ABCDEFGHIK"}
    answers: list[tuple[str, dt.datetime, dict[str, Any]]] = [
        ("A", at(3, 10), {"nps": 10, "overall": 5}), ("B", at(3, 10), {"nps": 9, "overall": 2}),
        ("C", at(3, 10), {"nps": 3, "overall": 4}), ("D", at(3, 10), {"nps": 5}),
        ("F", at(2, 20), {"nps": 10}),
        ("G", at(3, 2), {"nps": 10, "overall": 5}), ("G", at(3, 20), {"nps": 2, "overall": 3}),
        ("H", at(3, 10), {"nps": 8}), ("H", at(4, 2), {"nps": 10}),
        ("I", at(3, 5), {"nps": 4, "overall": 5}), ("I", at(3, 25), {"nps": 9}),
        ("K", at(3, 10), {"nps": 10}),
    ]
    for name, when, values in answers:
        _respond(survey, people[name], when, **values)
    bought = {"A": 3, "B": 1, "C": 2, "E": 4, "F": 2, "G": 2, "H": 2, "I": 1, "K": 3}
    for name, count in bought.items():
        for i in range(count):
            _buy(people[name], at(3, 3 + i))
    # Around the window's edges: 28 February and 1 April are outside it.
    _buy(people["D"], dt.datetime(2026, 2, 28, 23, 59, tzinfo=UTC))
    _buy(people["H"], dt.datetime(2026, 4, 1, 0, 0, tzinfo=UTC))
    # Refunds: H's 3rd purchase in full (two refunds), I's first in full, A's in part.
    h_third = _buy(people["H"], at(3, 28))
    _refund(h_third, people["H"], "4.00")
    _refund(h_third, people["H"], "6.00")
    i_first = _buy(people["I"], at(3, 29))
    _refund(i_first, people["I"], "10.00")
    _refund(_buy(people["A"], at(3, 30)), people["A"], "2.00")  # partial: still counts
    erase_customer(people["K"])
    db.session.commit()
    return survey, people


#: quadrant -> (customers, mean purchases, mean attitude) on NPS.
NPS_EXPECTED = {"TRUE": (1, 4.0, 10.0), "LATENT": (2, 1.0, 9.0),
                "SPURIOUS": (3, 2.0, 13 / 3), "NONE": (1, 0.0, 5.0),
                "UNKNOWN": (2, 3.0, None)}


@pytest.fixture
def app(make_app: AppFactory) -> Any:
    app = make_app(enabled=["surveys", "segments"])
    with app.app_context():
        yield app


@pytest.fixture
def data(app: Flask) -> tuple[Survey, dict[str, int]]:
    return build()


def matrix(gql: GraphQL, survey_id: int | str, **extra: Any) -> dict[str, Any]:
    survey = survey_id if isinstance(survey_id, str) else global_id("Survey", survey_id)
    got = gql(MATRIX, {"survey": survey, "from": WINDOW["from"], "to": WINDOW["to"],
                       **extra})
    return got["loyaltyMatrix"]  # type: ignore[no-any-return]


def test_the_quadrants_of_a_hand_built_set(app: Flask, data: Any) -> None:
    survey, _ = data
    gql = GraphQL(app, admin_token(app))
    got = matrix(gql, survey.id, key="nps")
    assert got["errors"] == []
    assert (got["questionKey"], got["highAttitudeFrom"], got["minPurchases"]) == ("nps", 9, 2)
    assert (got["customers"], got["answered"]) == (9, 7)
    rows = {q["quadrant"]: q for q in got["quadrants"]}
    assert [q["quadrant"] for q in got["quadrants"]] == list(NPS_EXPECTED)
    for name, (count, purchases, attitude) in NPS_EXPECTED.items():
        row = rows[name]
        assert row["customers"] == count, name
        assert row["share"] == pytest.approx(count / 9)
        assert row["meanPurchases"] == pytest.approx(purchases), name
        if attitude is None:
            assert row["meanAttitude"] is None and row["shareOfAnswered"] is None
        else:
            assert row["meanAttitude"] == pytest.approx(attitude), name
            assert row["shareOfAnswered"] == pytest.approx(count / 7)


def test_the_default_question_is_the_overall_rating_top_two_box(app: Flask, data: Any
                                                                ) -> None:
    survey, _ = data
    found = loyalty_matrix({"survey_id": survey.id, **WINDOW})
    assert (found.window.question_key, found.window.high_from) == ("overall", 4)
    # A 5/3p, C 4/2p: TRUE; I 5 (its later response skips the question)/1p: LATENT;
    # G 3 (the later answer)/2p: SPURIOUS; B 2/1p: NONE; D, E, F, H: no overall answer.
    assert {f.quadrant.name: f.customers for f in found.quadrants} == {
        "TRUE": 2, "LATENT": 1, "SPURIOUS": 1, "NONE": 1, "UNKNOWN": 4}
    # A higher bar for patronage moves A and C (3 and 2 purchases) apart.
    three = loyalty_matrix({"survey_id": survey.id, "min_purchases": 3, **WINDOW})
    assert {f.quadrant.name: f.customers for f in three.quadrants} == {
        "TRUE": 1, "LATENT": 2, "SPURIOUS": 0, "NONE": 2, "UNKNOWN": 4}
    empty = next(f for f in three.quadrants if f.quadrant is LoyaltyQuadrant.SPURIOUS)
    assert empty.mean_purchases is None and empty.mean_attitude is None


def test_a_filter_narrows_the_customers_and_needs_customers_read(app: Flask, data: Any
                                                                 ) -> None:
    survey, _ = data
    both = GraphQL(app, admin_token(app, ("surveys:read", "customers:read")))
    got = matrix(both, survey.id, key="nps", filter={"tagsAny": ["vip"]})
    assert got["errors"] == [] and got["customers"] == 2
    assert {q["quadrant"]: q["customers"] for q in got["quadrants"]} == {
        "TRUE": 1, "LATENT": 0, "SPURIOUS": 1, "NONE": 0, "UNKNOWN": 0}
    surveys_only = GraphQL(app, admin_token(app, ("surveys:read",)))
    assert matrix(surveys_only, survey.id, key="nps")["customers"] == 9
    body = surveys_only.raw(MATRIX, {"survey": global_id("Survey", survey.id),
                                     "filter": {"tagsAny": ["vip"]}, **WINDOW}).get_json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    customers_only = GraphQL(app, admin_token(app, ("customers:read",)))
    body = customers_only.raw(MATRIX, {"survey": global_id("Survey", survey.id),
                                       **WINDOW}).get_json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # A plugin field of the filter needs its own scope.
    body = both.raw(MATRIX, {"survey": global_id("Survey", survey.id), **WINDOW,
                             "filter": {"valueTier": ["TOP"]}}).get_json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_bad_arguments_are_typed_errors(app: Flask, data: Any) -> None:
    survey, _ = data
    gql = GraphQL(app, admin_token(app))
    anonymous = make_survey(anonymous=True)
    bare = service.create_survey({"title": "No overall", "questions": [
        {"key": "nps", "text": "Recommend?", "type": "nps"}]})
    sid = global_id("Survey", survey.id)
    cases: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        (sid, {"key": "channel"}, {"questionKey": "NOT_NUMERIC"}),
        (sid, {"key": "comment"}, {"questionKey": "NOT_NUMERIC"}),
        (sid, {"key": "nope"}, {"questionKey": "UNKNOWN_QUESTION"}),
        (global_id("Survey", 999_999), {}, {"surveyId": "NOT_FOUND"}),
        (global_id("Customer", survey.id), {}, {"surveyId": "INVALID"}),
        (global_id("Survey", anonymous.id), {}, {"surveyId": "ANONYMITY"}),
        (global_id("Survey", bare.id), {}, {"questionKey": "REQUIRED"}),
        (sid, {"from": "2026-04-01"}, {"to": "INVALID"}),
        (sid, {"from": "1899-12-31"}, {"from": "INVALID"}),
        (sid, {"to": "9999-12-31"}, {"to": "INVALID"}),
        (sid, {"min": 0}, {"minPurchases": "INVALID"}),
        (sid, {"filter": {"country": ["FRA"]}}, {"filter.country.0": "INVALID"}),
    ]
    for survey_id, extra, expected in cases:
        got = matrix(gql, survey_id, **extra)
        assert {e["field"]: e["code"] for e in got["errors"]} == expected, extra
        assert all(e["message"] for e in got["errors"])
        assert got["quadrants"] is None and got["customers"] is None


def test_the_statements_do_not_grow_with_the_customers(app: Flask, data: Any) -> None:
    survey, _ = data
    gql = GraphQL(app, admin_token(app))
    matrix(gql, survey.id)  # the API key's last-use stamp is written once
    counts = []
    for _ in range(2):
        db.session.expire_all()  # the survey is read from the database each time
        with count_statements(app) as statements:
            got = matrix(gql, survey.id, key="nps", filter={"tagsAny": ["vip"]})
        assert got["errors"] == []
        counts.append(len(statements))
        for i in range(10):  # more customers, answers and purchases for the second run
            someone = create_customer({"name": f"X{i}", "tags": ["vip"]}).id
            _respond(survey, someone, at(3, 9), nps=i % 11)
            _buy(someone, at(3, 9))
        db.session.commit()
    assert got["customers"] == 12
    assert counts[0] == counts[1] <= 4, counts


def _names(result: dict[str, Any]) -> list[str]:
    return sorted(edge["node"]["name"] for edge in result["customers"]["edges"])


def test_the_filter_field_finds_each_quadrant(app: Flask, data: Any) -> None:
    survey, _ = data
    gql = GraphQL(app, admin_token(app))
    condition = {"surveyId": global_id("Survey", survey.id), "questionKey": "nps", **WINDOW}
    expected = {"TRUE": ["A"], "LATENT": ["B", "I"], "SPURIOUS": ["C", "G", "H"],
                "NONE": ["D"], "UNKNOWN": ["E", "F"]}
    for quadrant, names in expected.items():
        got = gql(CUSTOMERS, {"f": {"loyaltyQuadrant": {"quadrant": quadrant, **condition}}})
        assert _names(got) == names, quadrant
        assert got["customers"]["totalCount"] == NPS_EXPECTED[quadrant][0]
    # With other conditions, and with the default question and minPurchases.
    both = gql(CUSTOMERS, {"f": {"tagsAny": ["vip"], "loyaltyQuadrant": {
        "quadrant": "TRUE", "surveyId": global_id("Survey", survey.id), **WINDOW}}})
    assert _names(both) == ["A", "C"]


def test_the_filter_field_needs_surveys_read_and_reports_bad_values(app: Flask, data: Any
                                                                    ) -> None:
    survey, _ = data
    condition = {"quadrant": "SPURIOUS", "surveyId": global_id("Survey", survey.id),
                 **WINDOW}
    customers_only = GraphQL(app, admin_token(app, ("customers:read",)))
    body = customers_only.raw(CUSTOMERS, {"f": {"loyaltyQuadrant": condition}}).get_json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    gql = GraphQL(app, admin_token(app))
    for bad, field in (({"questionKey": "channel"}, "filter.loyaltyQuadrant.questionKey"),
                       ({"from": "2026-05-01"}, "filter.loyaltyQuadrant.to"),
                       ({"surveyId": global_id("Survey", 999_999)},
                        "filter.loyaltyQuadrant.surveyId")):
        body = gql.raw(CUSTOMERS, {"f": {"loyaltyQuadrant": {**condition, **bad}}}).get_json()
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", bad
        assert body["errors"][0]["message"].startswith(field + ":"), body
    # The survey analysis takes the field in its filter too (its typed errors).
    analysis = gql("""query($id: ID!, $f: CustomerFilterInput) { survey(id: $id) {
      analysis(filter: $f) { errors { field code } responsesUsed } } }""",
                   {"id": global_id("Survey", survey.id),
                    "f": {"loyaltyQuadrant": {**condition, "questionKey": "nps"}}}
                   )["survey"]["analysis"]
    assert analysis["errors"] == [] and analysis["responsesUsed"] == 5  # C, G x2, H x2


def test_a_saved_segment_keeps_the_condition(app: Flask, data: Any) -> None:
    survey, _ = data
    gql = GraphQL(app, admin_token(app))
    condition = {"quadrant": "SPURIOUS", "surveyId": global_id("Survey", survey.id),
                 "questionKey": "nps", **WINDOW}
    created = gql("""mutation($input: CreateSegmentInput!) { createSegment(input: $input) {
      segment { id filter customerCount } errors { field code } } }""",
                  {"input": {"name": "Spurious loyals", "filter": {
                      "loyaltyQuadrant": condition}}})["createSegment"]
    assert created["errors"] == []
    assert created["segment"]["customerCount"] == 3
    assert created["segment"]["filter"]["loyaltyQuadrant"] == {**condition,
                                                               "minPurchases": 2}
    got = gql(CUSTOMERS, {"f": {"segment": created["segment"]["id"]}})
    assert _names(got) == ["C", "G", "H"]
    # The stored document validates back to the same condition.
    spec = validate_filter({"loyalty_quadrant": {**condition, "quadrant": "spurious"}})
    assert validate_filter(filter_document(spec)) == spec


def test_the_window_is_whole_days_in_the_configured_zone(make_app: AppFactory) -> None:
    app = make_app(enabled=["surveys"], RAPPORT_TIMEZONE="Europe/Paris")
    with app.app_context():
        survey = make_survey()
        window = load_window({"survey_id": survey.id, "from": "2026-03-01",
                              "to": "2026-03-31"})
        assert window.bounds == (dt.datetime(2026, 2, 28, 23, tzinfo=UTC),
                                 dt.datetime(2026, 3, 31, 22, tzinfo=UTC))  # CEST from 29 March
