"""The surveys GraphQL API: define, open, collect, read; bad input; scopes; N+1."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from graphene import relay
from sqlalchemy import func, select

from core.db import db
from plugins.surveys.models import Question, Response
from tests.conftest import GraphQL, admin_token, count_statements
from tests.plugins.surveys.conftest import answer, customer, make_survey

SURVEY_FIELDS = """id title state anonymous collectionToken overallQuestionKey openedAt closedAt
  responseCount questions { key position type required scaleMin scaleMax
    labels { value label } options { key label } }
  scales { name items { key reverse } }"""
CREATE = """mutation($input: CreateSurveyInput!) { createSurvey(input: $input) {
  survey { %s } errors { field message code } } }""" % SURVEY_FIELDS
UPDATE = """mutation($input: UpdateSurveyInput!) { updateSurvey(input: $input) {
  survey { %s } errors { field message code } } }""" % SURVEY_FIELDS
OPEN = """mutation($id: ID!) { openSurvey(input: {id: $id}) {
  survey { state openedAt } errors { field message code } } }"""
CLOSE = """mutation($id: ID!) { closeSurvey(input: {id: $id}) {
  survey { state closedAt } errors { field message code } } }"""
SUBMIT = """mutation($input: SubmitSurveyResponseInput!) { submitSurveyResponse(input: $input) {
  response { id submittedAt customer { name } answers { key value } survey { title } }
  errors { field message code } } }"""
#: What a surveys:respond key may select: the response itself is surveys:read data.
RESPOND = """mutation($input: SubmitSurveyResponseInput!) {
  submitSurveyResponse(input: $input) { errors { field message code } } }"""

DEFINITION: dict[str, Any] = {
    "title": "After purchase", "overallQuestionKey": "overall",
    "questions": [
        {"key": "nps", "text": "Recommend us?", "type": "NPS", "required": True},
        {"key": "overall", "text": "Overall", "type": "RATING", "scaleMin": 1, "scaleMax": 5,
         "labels": [{"value": 1, "label": "Poor"}, {"value": 5, "label": "Great"}]},
        {"key": "speed", "text": "Speed", "type": "RATING", "scaleMin": 1, "scaleMax": 7},
        {"key": "slow", "text": "It was slow", "type": "RATING", "scaleMin": 1, "scaleMax": 7},
        {"key": "channel", "text": "Ordered by", "type": "SINGLE_CHOICE",
         "options": [{"key": "web", "label": "Web"}, {"key": "phone", "label": "Phone"}]},
        {"key": "liked", "text": "Liked", "type": "MULTI_CHOICE",
         "options": [{"key": "price", "label": "Price"}, {"key": "staff", "label": "Staff"}]},
        {"key": "comment", "text": "Anything else?", "type": "TEXT"},
    ],
    "scales": [{"name": "Delivery", "items": [{"key": "speed"},
                                              {"key": "slow", "reverse": True}]}],
}


def gid(type_name: str, ident: int) -> str:
    return relay.Node.to_global_id(type_name, ident)


def _responses() -> int:
    return db.session.scalar(select(func.count()).select_from(Response)) or 0


def _create(gql: GraphQL, **extra: Any) -> dict[str, Any]:
    result = gql(CREATE, {"input": {**DEFINITION, **extra}})["createSurvey"]
    assert result["errors"] == []
    return result["survey"]  # type: ignore[no-any-return]


def test_a_survey_from_definition_to_responses(gql: GraphQL) -> None:
    survey = _create(gql)
    assert (survey["state"], survey["anonymous"], survey["collectionToken"]) == (
        "DRAFT", False, None)
    assert [q["key"] for q in survey["questions"]] == ["nps", "overall", "speed", "slow",
                                                        "channel", "liked", "comment"]
    assert survey["questions"][0]["scaleMin"] == 0 and survey["questions"][0]["scaleMax"] == 10
    assert survey["questions"][1]["labels"] == [{"value": 1, "label": "Poor"},
                                                {"value": 5, "label": "Great"}]
    assert survey["scales"] == [{"name": "Delivery", "items": [
        {"key": "speed", "reverse": False}, {"key": "slow", "reverse": True}]}]
    renamed = gql(UPDATE, {"input": {"id": survey["id"], "title": "After delivery",
                                      "questions": DEFINITION["questions"][:2]}})
    assert renamed["updateSurvey"]["errors"] == [{
        "field": "input.scales.0.items.0.key", "code": "INVALID",
        "message": "Name a RATING question of this survey."}]
    renamed = gql(UPDATE, {"input": {"id": survey["id"], "title": "After delivery"}})
    assert renamed["updateSurvey"]["survey"]["title"] == "After delivery"
    assert len(renamed["updateSurvey"]["survey"]["questions"]) == 7
    assert gql(OPEN, {"id": survey["id"]})["openSurvey"]["survey"]["state"] == "OPEN"

    ada = customer("Ada")
    submitted = gql(SUBMIT, {"input": {"surveyId": survey["id"],
                                       "customerId": gid("Customer", ada), "answers": [
        {"key": "nps", "value": 9}, {"key": "overall", "value": 4},
        {"key": "liked", "value": ["staff", "price"]}, {"key": "channel", "value": "web"},
        {"key": "comment", "value": "Quick!"}]}})["submitSurveyResponse"]
    assert submitted["errors"] == []
    response = submitted["response"]
    assert response["customer"] == {"name": "Ada"}
    assert response["answers"] == [
        {"key": "nps", "value": 9}, {"key": "overall", "value": 4},
        {"key": "channel", "value": "web"}, {"key": "liked", "value": ["price", "staff"]},
        {"key": "comment", "value": "Quick!"}]
    updated = gql(UPDATE, {"input": {"id": survey["id"], "questions": []}})["updateSurvey"]
    assert updated["errors"][0]["code"] == "WRONG_STATE"
    assert updated["errors"][0]["field"] == "input.questions"
    closed = gql(CLOSE, {"id": survey["id"]})["closeSurvey"]
    assert closed["survey"]["state"] == "CLOSED" and closed["survey"]["closedAt"]
    late = gql(SUBMIT, {"input": {"surveyId": survey["id"], "customerId": gid("Customer", ada),
                                  "answers": [{"key": "nps", "value": 9}]}})
    assert late["submitSurveyResponse"]["errors"][0]["code"] == "WRONG_STATE"
    read = gql("""query($id: ID!) { survey(id: $id) { responseCount responses(first: 5) {
      totalCount edges { node { customer { name } answers { key value } } } } } }""",
               {"id": survey["id"]})["survey"]
    assert read["responseCount"] == 1 and read["responses"]["totalCount"] == 1
    assert read["responses"]["edges"][0]["node"]["customer"] == {"name": "Ada"}


BAD_ANSWERS: list[tuple[list[dict[str, Any]], str, str]] = [
    ([{"key": "nps", "value": 11}], "input.answers.0.value", "OUT_OF_SCALE"),
    ([{"key": "nps", "value": 7}, {"key": "overall", "value": 3.5}],
     "input.answers.1.value", "OUT_OF_SCALE"),
    ([{"key": "nps", "value": 7}, {"key": "speed", "value": 0}], "input.answers.1.value",
     "OUT_OF_SCALE"),
    ([{"key": "nps", "value": "nine"}], "input.answers.0.value", "INVALID"),
    ([{"key": "nps", "value": True}], "input.answers.0.value", "INVALID"),
    ([{"key": "nps", "value": 7}, {"key": "channel", "value": "fax"}],
     "input.answers.1.value", "UNKNOWN_OPTION"),
    ([{"key": "nps", "value": 7}, {"key": "liked", "value": ["price", "gifts"]}],
     "input.answers.1.value", "UNKNOWN_OPTION"),
    ([{"key": "nps", "value": 7}, {"key": "liked", "value": "price"}],
     "input.answers.1.value", "INVALID"),
    ([{"key": "nps", "value": 7}, {"key": "comment", "value": 5}],
     "input.answers.1.value", "INVALID"),
    ([{"key": "nps", "value": 7}, {"key": "colour", "value": "red"}],
     "input.answers.1.key", "UNKNOWN_QUESTION"),
    ([{"key": "nps", "value": 7}, {"key": "nps", "value": 8}], "input.answers.1.key",
     "INVALID"),
    ([{"key": "overall", "value": 4}], "input.answers", "REQUIRED"),
    ([{"key": "nps", "value": None}], "input.answers", "REQUIRED"),
]


@pytest.mark.parametrize(("answers", "field", "code"), BAD_ANSWERS)
def test_every_bad_answer_is_a_typed_error_and_nothing_is_stored(
        gql: GraphQL, answers: list[dict[str, Any]], field: str, code: str) -> None:
    survey = _create(gql)
    gql(OPEN, {"id": survey["id"]})
    ada = customer("Ada")
    result = gql(SUBMIT, {"input": {"surveyId": survey["id"],
                                    "customerId": gid("Customer", ada),
                                    "answers": answers}})["submitSurveyResponse"]
    assert result["response"] is None
    assert [(e["field"], e["code"]) for e in result["errors"]] == [(field, code)]
    assert _responses() == 0


def test_bad_definitions_are_typed_errors(gql: GraphQL) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"questions": [{"key": "q", "text": "t", "type": "RATING"}]},
         "input.questions.0.scaleMin"),
        ({"questions": [{"key": "q", "text": "t", "type": "RATING", "scaleMin": 5,
                         "scaleMax": 1}]}, "input.questions.0.scaleMax"),
        ({"questions": [{"key": "q", "text": "t", "type": "SINGLE_CHOICE",
                         "options": [{"key": "a", "label": "A"}]}]},
         "input.questions.0.options"),
        ({"questions": [{"key": "Bad Key", "text": "t", "type": "TEXT"}]},
         "input.questions.0.key"),
        ({"questions": [{"key": "q", "text": "t", "type": "TEXT"},
                        {"key": "q", "text": "u", "type": "TEXT"}]}, "input.questions.1.key"),
        ({"overallQuestionKey": "comment", "questions": [
            {"key": "comment", "text": "t", "type": "TEXT"}]}, "input.overallQuestionKey"),
        ({"title": ""}, "input.title"),
    ]
    for extra, field in cases:
        result = gql(CREATE, {"input": {"title": "T", **extra}})["createSurvey"]
        assert result["survey"] is None, extra
        assert field in [e["field"] for e in result["errors"]], (extra, result["errors"])
    assert db.session.scalar(select(func.count()).select_from(Question)) == 0
    empty = _create(gql, questions=[], scales=[], overallQuestionKey=None)
    opened = gql(OPEN, {"id": empty["id"]})["openSurvey"]
    assert opened["errors"][0]["code"] == "WRONG_STATE"


def test_anonymous_collection_needs_the_token_and_stores_no_customer(
        gql: GraphQL, surveys_app: Flask) -> None:
    survey = _create(gql, anonymous=True)
    token = survey["collectionToken"]
    assert token and len(token) >= 32
    gql(OPEN, {"id": survey["id"]})
    respond = GraphQL(surveys_app, admin_token(surveys_app, ("surveys:respond",)))
    answers = [{"key": "nps", "value": 3}]
    missing = respond(RESPOND, {"input": {"surveyId": survey["id"], "answers": answers}})
    assert [(e["field"], e["code"]) for e in missing["submitSurveyResponse"]["errors"]] == [
        ("input.token", "ANONYMITY")]
    wrong = respond(RESPOND, {"input": {"surveyId": survey["id"], "token": token + "x",
                                       "answers": answers}})
    assert wrong["submitSurveyResponse"]["errors"][0]["code"] == "ANONYMITY"
    named = respond(RESPOND, {"input": {"surveyId": survey["id"], "token": token,
                                       "customerId": gid("Customer", customer("Ada")),
                                       "answers": answers}})
    assert [(e["field"], e["code"]) for e in named["submitSurveyResponse"]["errors"]] == [
        ("input.customerId", "ANONYMITY")]
    assert _responses() == 0
    reading = respond.raw(SUBMIT, {"input": {"surveyId": survey["id"], "token": token,
                                             "answers": answers}})
    assert reading.status_code == 403 and _responses() == 0
    ok = respond(RESPOND, {"input": {"surveyId": survey["id"], "token": token,
                                     "answers": answers}})["submitSurveyResponse"]
    assert ok["errors"] == []
    assert db.session.scalar(select(Response.customer_id)) is None
    # The token is for surveys:write callers only; a respond-only key cannot read surveys.
    reader = GraphQL(surveys_app, admin_token(surveys_app, ("surveys:read",)))
    seen = reader("query($id: ID!) { survey(id: $id) { collectionToken anonymous } }",
                  {"id": survey["id"]})["survey"]
    assert seen == {"collectionToken": None, "anonymous": True}
    refused = respond.raw("query { surveys { totalCount } }").get_json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    refused = respond.raw(CREATE, {"input": DEFINITION}).get_json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # Anonymity is fixed once the survey is open.
    flipped = gql(UPDATE, {"input": {"id": survey["id"], "anonymous": False}})["updateSurvey"]
    assert flipped["errors"][0]["code"] == "WRONG_STATE"


def test_a_named_survey_needs_an_existing_customer(gql: GraphQL) -> None:
    survey = _create(gql)
    gql(OPEN, {"id": survey["id"]})
    answers = [{"key": "nps", "value": 3}]
    for customer_id, field, code in [(None, "input.customerId", "REQUIRED"),
                                     (gid("Customer", 999), "input.customerId", "NOT_FOUND"),
                                     ("nonsense", "input.customerId", "INVALID")]:
        raw: dict[str, Any] = {"surveyId": survey["id"], "answers": answers}
        if customer_id is not None:
            raw["customerId"] = customer_id
        errors = gql(SUBMIT, {"input": raw})["submitSurveyResponse"]["errors"]
        assert [(e["field"], e["code"]) for e in errors] == [(field, code)]


def test_resubmitting_with_the_same_external_id_stores_once(gql: GraphQL) -> None:
    survey = _create(gql)
    gql(OPEN, {"id": survey["id"]})
    raw = {"surveyId": survey["id"], "customerId": gid("Customer", customer("Ada")),
           "source": "web", "externalId": "r-1", "answers": [{"key": "nps", "value": 3}]}
    first = gql(SUBMIT, {"input": raw})["submitSurveyResponse"]["response"]["id"]
    again = gql(SUBMIT, {"input": raw})["submitSurveyResponse"]["response"]["id"]
    assert first == again and _responses() == 1


def test_lists_take_a_fixed_number_of_statements(gql: GraphQL, surveys_app: Flask) -> None:
    surveys = [make_survey() for _ in range(4)]
    people = [customer(f"C{i}") for i in range(5)]
    for survey in surveys:
        for person in people:
            answer(survey, person, nps=7, channel="web", comment="ok")
    query = """{ surveys(first: 10) { totalCount edges { cursor node { title responseCount
      questions { key options { key } } scales { name items { key } }
      responses(first: 3) { totalCount edges { node { submittedAt customer { name }
        answers { key value } survey { title } } } } } } } }"""
    gql(query)  # the API key's first use of the period is recorded once
    with count_statements(surveys_app) as statements:
        data = gql(query)
    assert len(data["surveys"]["edges"]) == 4
    assert all(len(e["node"]["responses"]["edges"]) == 3 for e in data["surveys"]["edges"])
    # surveys, count, questions, scales, response counts, responses, customers (+ auth)
    small = len(statements)
    more = make_survey()
    for person in people:
        answer(more, person, nps=1)
    with count_statements(surveys_app) as statements:
        gql(query)
    assert len(statements) == small <= 10, statements
    customers = """{ customers(first: 10) { edges { node { name
      surveyResponses(first: 2) { totalCount edges { node { answers { key value }
        survey { title questions { key } } } } } } } } }"""
    with count_statements(surveys_app) as statements:
        data = gql(customers)
    assert all(e["node"]["surveyResponses"]["totalCount"] == 5
               for e in data["customers"]["edges"])
    assert len(statements) <= 10, statements


def test_pages_follow_the_cursor(gql: GraphQL) -> None:
    for title in ("A", "B", "C"):
        _create(gql, title=title)
    first = gql("{ surveys(first: 2) { edges { node { title } } pageInfo { endCursor "
                "hasNextPage } } }")["surveys"]
    assert [e["node"]["title"] for e in first["edges"]] == ["C", "B"]
    assert first["pageInfo"]["hasNextPage"] is True
    rest = gql("query($after: String) { surveys(first: 2, after: $after) { edges { node { "
               "title } } } }", {"after": first["pageInfo"]["endCursor"]})["surveys"]
    assert [e["node"]["title"] for e in rest["edges"]] == ["A"]
    drafts = gql("{ surveys(state: OPEN) { totalCount } }")["surveys"]
    assert drafts["totalCount"] == 0
