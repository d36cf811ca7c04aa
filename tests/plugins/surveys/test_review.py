"""Hostile review of the surveys API and data layer: each test pins a defect found in the
review (it failed before the fix) or an attack that must stay harmless."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.db import db
from plugins.surveys import service
from plugins.surveys.models import Question, Response, Scale
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.plugins.surveys.conftest import answer, customer, make_survey
from tests.plugins.surveys.test_api import CREATE, DEFINITION, RESPOND, SUBMIT, UPDATE, gid

T = TypeVar("T")


def race(app: Flask, runners: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(n)`` in ``runners`` threads started together, each with its own app
    context and session; every result, or the first failure raised."""
    results: list[T] = []
    failures: list[BaseException] = []
    start = threading.Barrier(runners)

    def run(n: int) -> None:
        with app.app_context():
            try:
                start.wait()
                results.append(work(n))
            except BaseException as exc:  # noqa: BLE001 - raised below
                failures.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(runners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results


def _responses() -> int:
    return db.session.scalar(select(func.count()).select_from(Response)) or 0


def _respond_key(app: Flask) -> GraphQL:
    return GraphQL(app, admin_token(app, ("surveys:respond",)))


def test_a_respond_key_cannot_read_other_responses_through_the_payload(
        gql: GraphQL, surveys_app: Flask) -> None:
    survey = make_survey()
    ada = customer("Ada")
    answer(survey, ada, nps=2, comment="Ada's secret complaint")
    respond = _respond_key(surveys_app)
    leak = """mutation($input: SubmitSurveyResponseInput!) { submitSurveyResponse(input: $input) {
      response { id survey { responseCount responses(first: 10) { edges { node {
        answers { key value } } } } } } errors { code } } }"""
    body = respond.raw(leak, {"input": {
        "surveyId": gid("Survey", survey.id), "customerId": gid("Customer", customer("Bob")),
        "answers": [{"key": "nps", "value": 9}]}}).get_json()
    assert "Ada's secret complaint" not in str(body)
    assert {e["extensions"]["code"] for e in body["errors"]} == {"FORBIDDEN"}


def test_a_respond_key_cannot_read_a_customer_through_the_payload(
        surveys_app: Flask) -> None:
    survey = make_survey()
    from core.services.customers import create_customer
    victim = create_customer({"name": "Victim", "email": "victim@example.com"}).id
    body = _respond_key(surveys_app).raw(
        """mutation($input: SubmitSurveyResponseInput!) { submitSurveyResponse(input: $input) {
        response { id customer { name email } } errors { code } } }""",
        {"input": {"surveyId": gid("Survey", survey.id), "customerId": gid("Customer", victim),
                   "answers": [{"key": "nps", "value": 9}]}}).get_json()
    assert "victim@example.com" not in str(body)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_a_respond_key_cannot_read_the_analysis_through_the_payload(
        surveys_app: Flask) -> None:
    survey = make_survey()
    body = _respond_key(surveys_app).raw(
        """mutation($input: SubmitSurveyResponseInput!) { submitSurveyResponse(input: $input) {
        response { survey { analysis { responsesUsed } } } errors { code } } }""",
        {"input": {"surveyId": gid("Survey", survey.id),
                   "customerId": gid("Customer", customer("Bob")),
                   "answers": [{"key": "nps", "value": 9}]}}).get_json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_without_the_token_nothing_about_the_questions_is_told(surveys_app: Flask) -> None:
    survey = make_survey(anonymous=True)
    data = _respond_key(surveys_app)(RESPOND, {"input": {
        "surveyId": gid("Survey", survey.id), "token": "guess",
        "answers": [{"key": "probe", "value": 1}, {"key": "channel", "value": "x"}]}})
    errors = data["submitSurveyResponse"]["errors"]
    assert [(e["field"], e["code"]) for e in errors] == [("input.token", "ANONYMITY")]
    assert "channel" not in str(errors) and "web" not in str(errors)


def test_scale_labels_must_not_repeat_a_point(gql: GraphQL) -> None:
    questions = [{"key": "q", "text": "Q", "type": "RATING", "scaleMin": 1, "scaleMax": 5,
                  "labels": [{"value": 1, "label": "Bad"}, {"value": 1, "label": "Awful"}]}]
    errors = gql(CREATE, {"input": {"title": "T", "questions": questions}}
                 )["createSurvey"]["errors"]
    assert [e["code"] for e in errors] == ["INVALID"]


def test_nps_labels_are_points_of_0_to_10(gql: GraphQL) -> None:
    questions = [{"key": "q", "text": "Q", "type": "NPS",
                  "labels": [{"value": 0, "label": "Never"}, {"value": 99, "label": "Huh"}]}]
    errors = gql(CREATE, {"input": {"title": "T", "questions": questions}}
                 )["createSurvey"]["errors"]
    assert [e["code"] for e in errors] == ["INVALID"]


def test_the_number_of_scales_is_bounded(gql: GraphQL) -> None:
    scales = [{"name": f"s{i}", "items": [{"key": "speed"}, {"key": "slow"}]}
              for i in range(1000)]
    errors = gql(CREATE, {"input": {**DEFINITION, "scales": scales}})["createSurvey"]["errors"]
    assert [(e["field"], e["code"]) for e in errors] == [("input.scales", "INVALID")]
    assert db.session.scalar(select(func.count()).select_from(Scale)) == 0


def _typed_problem(body: Any) -> list[str]:
    """The codes a caller gets: the payload's errors, or a request-level typed refusal."""
    assert body.status_code in (200, 400), body.status_code
    payload = body.get_json()
    if payload.get("errors"):
        return [e["extensions"]["code"] for e in payload["errors"]]
    return [e["code"] for e in payload["data"]["submitSurveyResponse"]["errors"]]


def test_odd_answer_values_are_typed_errors(gql: GraphQL) -> None:
    survey = make_survey()
    who = gid("Customer", customer("Ada"))
    deep: Any = "web"
    for _ in range(200):
        deep = [deep]
    cases: list[tuple[str, Any]] = [
        *(("nps", v) for v in [10 ** 40, -(10 ** 40), 1e308, "NaN", "7", 7.5, True,
                               {"a": 1}, deep, [7], "\x00"]),
        ("liked", deep), ("liked", [["price"]]), ("channel", ["web"]), ("comment", 7),
        ("comment", "a\x00b"), ("liked", "price")]
    for key, value in cases:
        answers = [{"key": key, "value": value}]
        if key != "nps":
            answers.insert(0, {"key": "nps", "value": 7})
        codes = _typed_problem(gql.raw(SUBMIT, {"input": {
            "surveyId": gid("Survey", survey.id), "customerId": who, "answers": answers}}))
        assert codes and "INTERNAL_SERVER_ERROR" not in codes, (key, value, codes)
    assert _responses() == 0


def test_odd_text_in_identifiers_is_a_typed_error(gql: GraphQL) -> None:
    survey = make_survey()
    who = gid("Customer", customer("Ada"))
    for extra in [{"source": "a\x00", "externalId": "x"}, {"source": "web", "externalId": "x" * 201},
                  {"source": "web"}, {"token": "\x00"},
                  {"submittedAt": "0001-01-01T00:00:00+01:00"}]:
        codes = _typed_problem(gql.raw(SUBMIT, {"input": {
            "surveyId": gid("Survey", survey.id), "customerId": who, **extra,
            "answers": [{"key": "nps", "value": 7}]}}))
        assert codes and "INTERNAL_SERVER_ERROR" not in codes, (extra, codes)
    assert _responses() == 0


def test_a_bad_update_changes_nothing(gql: GraphQL) -> None:
    created = gql(CREATE, {"input": DEFINITION})["createSurvey"]["survey"]
    bad = dict(DEFINITION["questions"][0], key="nps")
    result = gql(UPDATE, {"input": {"id": created["id"], "title": "Renamed",
                                    "questions": [*DEFINITION["questions"], bad]}})
    assert result["updateSurvey"]["errors"]
    again = gql("query($id: ID!) { survey(id: $id) { title questions { key } } }",
                {"id": created["id"]})["survey"]
    assert again["title"] == "After purchase" and len(again["questions"]) == 7
    assert db.session.scalar(select(func.count()).select_from(Question)) == 7


def test_an_external_id_of_another_customer_is_a_conflict_not_their_response(
        gql: GraphQL) -> None:
    survey = make_survey()
    ada, bob = customer("Ada"), customer("Bob")
    answer(survey, ada, nps=1, comment="Ada's words")
    service.submit_response({"survey_id": survey.id, "customer_id": ada, "source": "web",
                             "external_id": "r-1", "answers": [{"key": "nps", "value": 2},
                                                               {"key": "comment",
                                                                "value": "Ada again"}]})
    data = gql(SUBMIT, {"input": {"surveyId": gid("Survey", survey.id),
                                  "customerId": gid("Customer", bob), "source": "web",
                                  "externalId": "r-1", "answers": [{"key": "nps", "value": 9}]}})
    result = data["submitSurveyResponse"]
    assert result["response"] is None and "Ada again" not in str(result)
    assert [(e["field"], e["code"]) for e in result["errors"]] == [
        ("input.externalId", "CONFLICT")]
    assert _responses() == 2


def test_concurrent_identical_submissions_store_one_response(
        make_app: AppFactory, dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("SQLite serialises writers: no concurrent submission to race")
    app = make_app(enabled=["surveys"])
    with app.app_context():
        survey_id, ada = make_survey().id, customer("Ada")
    raw = {"survey_id": survey_id, "customer_id": ada, "source": "kiosk",
           "external_id": "k-1", "answers": [{"key": "nps", "value": 9}]}
    ids = race(app, 4, lambda n: service.submit_response(dict(raw)).id)
    with app.app_context():
        assert _responses() == 1
        assert set(ids) == {db.session.scalar(select(Response.id))}
