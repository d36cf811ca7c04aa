"""GraphQL: ``surveys``, ``survey``, ``Customer.surveyResponses`` and the mutations
``createSurvey``, ``updateSurvey``, ``openSurvey``, ``closeSurvey``,
``submitSurveyResponse``; ``Survey.analysis`` and ``saveSurveyClusters`` come from
``analysis_schema``.

Scopes: ``surveys:read`` reads, ``surveys:write`` defines and moves surveys (and alone
sees an anonymous survey's ``collectionToken``), ``surveys:respond`` submits responses.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import graphene
from graphene import relay
from graphene.types.generic import GenericScalar
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from api import (
    CustomerType, RapportMutation, connection, ctx, domain, error_type, global_id,
    load_related, node_type, page_size, scoped,
)
from api.loaders import CustomerByIdLoader
from api.pagination import bad_input, keyset_page
from api.report_links import ReportLink
from api.types import decode_global_id
from core.errors import UserError
from core.report_links import report_link

from plugins.surveys import loyalty_schema, routes, service
from plugins.surveys.analysis_schema import Rotation, SaveSurveyClusters, analysis_field
from plugins.surveys.errors import CODES
from plugins.surveys.loaders import (
    QuestionsBySurveyLoader, ResponseByIdLoader, ResponseCountByCustomerLoader,
    ResponseCountBySurveyLoader, ResponsesByCustomerLoader, ResponsesBySurveyLoader,
    NEWEST_RESPONSES, ScalesBySurveyLoader, SurveyByIdLoader,
)
from plugins.surveys.models import Question, QuestionType, Response, Scale, Survey, SurveyState

READ, WRITE, RESPOND = "surveys:read", "surveys:write", "surveys:respond"

SurveyError = error_type("Survey", CODES)
SurveyStateEnum = graphene.Enum.from_enum(SurveyState, name="SurveyState")
SurveyQuestionType = graphene.Enum.from_enum(QuestionType, name="SurveyQuestionType",
                                             description=(
    "NPS (0-10), RATING (scaleMin..scaleMax, whole numbers), SINGLE_CHOICE (an option key), "
    "MULTI_CHOICE (a list of option keys), TEXT."))


@domain("surveys")
class SurveyOption(graphene.ObjectType):
    key = graphene.String(required=True, description="Stable: answers name it.")
    label = graphene.String(required=True)


@domain("surveys")
class SurveyScaleLabel(graphene.ObjectType):
    value = graphene.Int(required=True)
    label = graphene.String(required=True)


@domain("surveys")
class SurveyQuestion(graphene.ObjectType):
    key = graphene.String(required=True)
    position = graphene.Int(required=True)
    text = graphene.String(required=True)
    type = graphene.Field(SurveyQuestionType, required=True)
    required = graphene.Boolean(required=True)
    scale_min = graphene.Int(description="RATING: the lowest point; NPS: 0.")
    scale_max = graphene.Int(description="RATING: the highest point; NPS: 10.")
    labels = graphene.List(graphene.NonNull(SurveyScaleLabel), required=True)
    options = graphene.List(graphene.NonNull(SurveyOption), required=True)

    @staticmethod
    def resolve_scale_min(root: Question, info: Any) -> int | None:
        return 0 if root.type is QuestionType.NPS else root.scale_min

    @staticmethod
    def resolve_scale_max(root: Question, info: Any) -> int | None:
        return 10 if root.type is QuestionType.NPS else root.scale_max

    @staticmethod
    def resolve_labels(root: Question, info: Any) -> list[SurveyScaleLabel]:
        return [SurveyScaleLabel(value=int(v), label=t)
                for v, t in sorted((root.labels or {}).items(), key=lambda i: int(i[0]))]

    @staticmethod
    def resolve_options(root: Question, info: Any) -> list[SurveyOption]:
        return [SurveyOption(key=o["key"], label=o["label"]) for o in root.options or []]


@domain("surveys")
class SurveyScaleItem(graphene.ObjectType):
    key = graphene.String(required=True, description="A RATING question's key.")
    reverse = graphene.Boolean(required=True, description="Reverse-keyed: scored max+min-x.")


@domain("surveys")
class SurveyScale(graphene.ObjectType):
    name = graphene.String(required=True)
    items = graphene.List(graphene.NonNull(SurveyScaleItem), required=True)

    @staticmethod
    def resolve_items(root: Scale, info: Any) -> list[SurveyScaleItem]:
        return [SurveyScaleItem(key=i["key"], reverse=bool(i["reverse"])) for i in root.items]


@domain("surveys")
class SurveyAnswer(graphene.ObjectType):
    key = graphene.String(required=True, description="The question's key.")
    value = GenericScalar(required=True, description=(
        "A number (NPS, RATING), an option key (SINGLE_CHOICE), a list of option keys "
        "(MULTI_CHOICE) or text (TEXT)."))


@domain("surveys")
@node_type(Response)
class SurveyResponseNode(graphene.ObjectType):
    """One response. An anonymous survey's responses have no customer, ever."""

    class Meta:
        name = "SurveyResponse"
        interfaces = (relay.Node,)

    survey = graphene.Field(lambda: SurveyNode, required=True)
    customer = graphene.Field(CustomerType, description="Null for an anonymous survey.")
    submitted_at = graphene.DateTime(required=True)
    source = graphene.String()
    external_id = graphene.String()
    answers = graphene.List(graphene.NonNull(SurveyAnswer), required=True,
                            description="In the survey's question order.")

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(ResponseByIdLoader).load(int(id))

    @staticmethod
    def resolve_survey(root: Response, info: Any) -> Any:
        return ctx(info).loader(SurveyByIdLoader).load(root.survey_id)

    @staticmethod
    def resolve_customer(root: Response, info: Any) -> Any:
        if root.anonymous:
            return None
        return load_related(info, CustomerByIdLoader, root.customer_id)

    @staticmethod
    async def resolve_answers(root: Response, info: Any) -> list[SurveyAnswer]:
        questions = await ctx(info).loader(QuestionsBySurveyLoader).load(root.survey_id)
        given = {**(root.numbers or {}), **(root.choices or {}), **(root.texts or {})}
        return [SurveyAnswer(key=q.key, value=given[q.key]) for q in questions
                if q.key in given]


SurveyResponseConnection = connection(SurveyResponseNode, "SurveyResponse")


def _page_of(loader: type, count_loader: type, parent_id: int, first: int | None,
             after: str | None) -> Any:
    async def page(info: Any) -> Any:
        size = page_size(first)
        rows = await ctx(info).loader(loader, limit=size + 1,
                                      after=NEWEST_RESPONSES.decode(after)).load(parent_id)
        count = ctx(info).loader(count_loader)
        return NEWEST_RESPONSES.page(rows, size, after, lambda: count.load(parent_id))
    return page


@domain("surveys")
@node_type(Survey)
class SurveyNode(graphene.ObjectType):
    """A questionnaire: DRAFT (editable), OPEN (collecting), CLOSED."""

    class Meta:
        name = "Survey"
        interfaces = (relay.Node,)

    title = graphene.String(required=True)
    description = graphene.String()
    state = graphene.Field(SurveyStateEnum, required=True)
    anonymous = graphene.Boolean(required=True, description=(
        "Responses never record who answered (enforced by the database)."))
    collection_token = graphene.String(description=(
        "Anonymous surveys: the token submitSurveyResponse needs. Shown to surveys:write "
        "callers only; null otherwise."))
    overall_question_key = graphene.String(description="The overall-satisfaction question.")
    created_at = graphene.DateTime(required=True)
    opened_at = graphene.DateTime()
    closed_at = graphene.DateTime()
    questions = graphene.List(graphene.NonNull(SurveyQuestion), required=True)
    scales = graphene.List(graphene.NonNull(SurveyScale), required=True)
    response_count = graphene.Int(required=True)
    responses = graphene.Field(SurveyResponseConnection, required=True,
                               first=graphene.Int(description="At most 100."),
                               after=graphene.String(), description="Newest first.")
    analysis = analysis_field()
    report_link = graphene.Field(
        ReportLink, required=True, description=(
            "A short-lived signed link to the HTML report (GET /reports/surveys/<id>.html) "
            "with these parameters, for a browser: no API key needed until it expires."),
        city=graphene.List(graphene.NonNull(graphene.String)),
        country=graphene.List(graphene.NonNull(graphene.String)),
        tag=graphene.List(graphene.NonNull(graphene.String),
                          description="Customers with all of these tags."),
        submitted_after=graphene.DateTime(), submitted_before=graphene.DateTime(),
        rotation=Rotation(), factors=graphene.Int(), clusters=graphene.Int())

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(SurveyByIdLoader).load(int(id))

    @staticmethod
    def resolve_report_link(root: Survey, info: Any, **given: Any) -> ReportLink:
        args: dict[str, Any] = {name: given.get(name) or [] for name in ("city", "country",
                                                                         "tag")}
        for name, key in (("submitted_after", "after"), ("submitted_before", "before")):
            if given.get(name) is not None:
                args[key] = given[name].isoformat()
        if given.get("rotation") is not None:
            args["rotation"] = str(getattr(given["rotation"], "value", given["rotation"]))
        for name in ("factors", "clusters"):
            if given.get(name) is not None:
                args[name] = str(given[name])
        query = MultiDict([(k, v) for k, values in args.items()
                           for v in ([values] if isinstance(values, str) else values)])
        try:
            routes.checked_arguments(query)
        except UserError as exc:
            raise bad_input("; ".join(f"{e.field}: {e.message}" if e.field else e.message
                                      for e in exc.errors)) from None
        link = report_link(ctx(info).principal, routes.REPORT, routes.survey_path(root.id),
                           root.id, args)
        return ReportLink(url=link["url"], expires_at=link["expiresAt"])

    @staticmethod
    def resolve_collection_token(root: Survey, info: Any) -> str | None:
        return root.collection_token if ctx(info).principal.allows(WRITE) else None

    @staticmethod
    def resolve_questions(root: Survey, info: Any) -> Any:
        return ctx(info).loader(QuestionsBySurveyLoader).load(root.id)

    @staticmethod
    def resolve_scales(root: Survey, info: Any) -> Any:
        return ctx(info).loader(ScalesBySurveyLoader).load(root.id)

    @staticmethod
    def resolve_response_count(root: Survey, info: Any) -> Any:
        return ctx(info).loader(ResponseCountBySurveyLoader).load(root.id)

    @staticmethod
    async def resolve_responses(root: Survey, info: Any, first: int | None = None,
                                after: str | None = None) -> Any:
        return await _page_of(ResponsesBySurveyLoader, ResponseCountBySurveyLoader, root.id,
                              first, after)(info)


SurveyConnection = connection(SurveyNode, "Survey")


def resolve_surveys(root: Any, info: Any, first: int | None = None, after: str | None = None,
                    state: Any = None) -> Any:
    query = select(Survey)
    if state is not None:
        query = query.where(Survey.state == SurveyState(getattr(state, "value", state)))
    return keyset_page(query, [Survey.created_at, Survey.id], first, after,
                       kinds=(dt.datetime, int), descending=True)


def resolve_survey(root: Any, info: Any, id: str) -> Any:
    try:
        return ctx(info).loader(SurveyByIdLoader).load(decode_global_id(id, "Survey"))
    except ValueError as exc:
        raise bad_input(str(exc)) from None


async def resolve_customer_responses(root: Any, info: Any, first: int | None = None,
                                     after: str | None = None) -> Any:
    return await _page_of(ResponsesByCustomerLoader, ResponseCountByCustomerLoader, root.id,
                          first, after)(info)


# --- Mutations -----------------------------------------------------------------------------


class SurveyOptionInput(graphene.InputObjectType):
    key = graphene.String(required=True)
    label = graphene.String(required=True)


class SurveyScaleLabelInput(graphene.InputObjectType):
    value = graphene.Int(required=True)
    label = graphene.String(required=True)


class SurveyQuestionInput(graphene.InputObjectType):
    key = graphene.String(required=True, description="Lowercase, unique in the survey; "
                                                     "CSV columns and answers name it.")
    text = graphene.String(required=True)
    type = SurveyQuestionType(required=True)
    required = graphene.Boolean(description="Default false.")
    scale_min = graphene.Int(description="RATING (required).")
    scale_max = graphene.Int(description="RATING (required).")
    labels = graphene.List(graphene.NonNull(SurveyScaleLabelInput))
    options = graphene.List(graphene.NonNull(SurveyOptionInput),
                            description="Choice questions (at least two).")


class SurveyScaleItemInput(graphene.InputObjectType):
    key = graphene.String(required=True)
    reverse = graphene.Boolean(description="Default false.")


class SurveyScaleInput(graphene.InputObjectType):
    name = graphene.String(required=True)
    # ``items`` would shadow dict.items() of the input container: named in GraphQL only.
    scale_items = graphene.List(graphene.NonNull(SurveyScaleItemInput), required=True,
                                name="items")


class SurveyDefinitionFields:
    description = graphene.String()
    anonymous = graphene.Boolean(description="Default false; fixed once the survey opens.")
    overall_question_key = graphene.String()
    questions = graphene.List(graphene.NonNull(SurveyQuestionInput),
                              description="In display order; replaces all (DRAFT only).")
    scales = graphene.List(graphene.NonNull(SurveyScaleInput),
                           description="Replaces all (DRAFT only).")


class CreateSurveyInput(SurveyDefinitionFields, graphene.InputObjectType):
    title = graphene.String(required=True)


class UpdateSurveyInput(SurveyDefinitionFields, graphene.InputObjectType):
    id = graphene.ID(required=True)
    title = graphene.String()


class OpenSurveyInput(graphene.InputObjectType):
    id = graphene.ID(required=True)


class CloseSurveyInput(graphene.InputObjectType):
    id = graphene.ID(required=True)


class SurveyAnswerInput(graphene.InputObjectType):
    key = graphene.String(required=True, description="The question's key.")
    value = GenericScalar(description="See SurveyAnswer.value; null: not answered.")


class SubmitSurveyResponseInput(graphene.InputObjectType):
    survey_id = graphene.ID(required=True)
    customer_id = graphene.ID(description="Required for a named survey; refused for an "
                                          "anonymous one.")
    token = graphene.String(description="Anonymous surveys: the survey's collectionToken.")
    submitted_at = graphene.DateTime(description="Default now.")
    source = graphene.String(description="With externalId: a re-submission stores nothing.")
    external_id = graphene.String()
    answers = graphene.List(graphene.NonNull(SurveyAnswerInput), required=True)


def _definition(input: dict[str, Any]) -> dict[str, Any]:
    """The service's names for the input (see ``SurveyScaleInput``)."""
    if input.get("scales"):
        input["scales"] = [{("items" if k == "scale_items" else k): v for k, v in s.items()}
                           for s in input["scales"]]
    return input


class CreateSurvey(RapportMutation):
    class Arguments:
        input = CreateSurveyInput(required=True)

    survey = graphene.Field(SurveyNode)
    scope = WRITE
    error_type = SurveyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CreateSurvey:
        return cls(survey=service.create_survey(_definition(input)))


class UpdateSurvey(RapportMutation):
    class Arguments:
        input = UpdateSurveyInput(required=True)

    survey = graphene.Field(SurveyNode)
    scope = WRITE
    error_type = SurveyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> UpdateSurvey:
        survey_id = global_id(input, "id", "Survey")
        return cls(survey=service.update_survey(survey_id, _definition(input)))  # type: ignore[arg-type]


class _SurveyMove(RapportMutation):
    class Meta:
        abstract = True

    survey = graphene.Field(SurveyNode)
    scope = WRITE
    move: Any = None

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> _SurveyMove:
        return cls(survey=cls.move(global_id(input, "id", "Survey")))


class OpenSurvey(_SurveyMove):
    """DRAFT -> OPEN: collection starts; the questions are fixed from now on."""

    class Arguments:
        input = OpenSurveyInput(required=True)

    error_type = SurveyError  # RapportMutation adds ``errors`` for a class's own
    move = staticmethod(service.open_survey)


class CloseSurvey(_SurveyMove):
    """OPEN -> CLOSED: no more responses through the API."""

    class Arguments:
        input = CloseSurveyInput(required=True)

    error_type = SurveyError
    move = staticmethod(service.close_survey)


class SubmitSurveyResponse(RapportMutation):
    """Record a response; every answer is checked against its question, nothing is stored
    unless all are valid."""

    class Arguments:
        input = SubmitSurveyResponseInput(required=True)

    response = graphene.Field(SurveyResponseNode)
    scope = RESPOND
    error_type = SurveyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> SubmitSurveyResponse:
        input["survey_id"] = global_id(input, "survey_id", "Survey")
        if "customer_id" in input:
            input["customer_id"] = global_id(input, "customer_id", "Customer", required=False)
        return cls(response=service.submit_response(input))


# --- What the plugin contributes -------------------------------------------------------------


def customer_fields() -> dict[str, graphene.Field]:
    return {"surveyResponses": scoped(graphene.Field(
        SurveyResponseConnection, required=True, first=graphene.Int(description="At most 100."),
        after=graphene.String(), resolver=resolve_customer_responses,
        description="The customer's survey responses, newest first."), READ)}


def query_fields() -> dict[str, graphene.Field]:
    return {
        **loyalty_schema.query_fields(),
        "surveys": scoped(graphene.Field(
            SurveyConnection, required=True, first=graphene.Int(), after=graphene.String(),
            state=SurveyStateEnum(), resolver=resolve_surveys,
            description="Surveys, newest first, in keyset pages of at most 100."), READ),
        "survey": scoped(graphene.Field(SurveyNode, id=graphene.ID(required=True),
                                        resolver=resolve_survey), READ),
    }


MUTATIONS: dict[str, type[RapportMutation]] = {
    "createSurvey": CreateSurvey, "updateSurvey": UpdateSurvey, "openSurvey": OpenSurvey,
    "closeSurvey": CloseSurvey, "submitSurveyResponse": SubmitSurveyResponse,
    "saveSurveyClusters": SaveSurveyClusters,
}

NODE_TYPES = [SurveyNode, SurveyResponseNode]
