"""GraphQL of the loyalty matrix (Dick and Basu): the query ``loyaltyMatrix`` and the
customer filter field ``loyaltyQuadrant`` (``rapport_customer_filters``). The service is
``plugins.surveys.loyalty``; see docs/surveys.md "Loyalty matrix".

``loyaltyMatrix`` needs surveys:read, and customers:read as well when a ``filter`` is
given (the counts of a segment built on customer data would otherwise be an oracle for
that data); a plugin field of the filter needs its own scope too. Bad arguments are typed
errors (``errors``, every other field null).
"""

from __future__ import annotations

from typing import Any

import graphene
from graphql import GraphQLError

from api import ctx, domain, error_type, scoped
from api.limits import REPORT_COST, costly
from api.mutations import plain
from api.queries import CustomerFilterInput, charge_filter, customer_filter_spec
from api.types import decode_global_id
from core.errors import ErrorCode, FieldError, UserError
from core.services.segments import CustomerFilterField

from plugins.surveys import loyalty as service
from plugins.surveys.errors import CODES

READ = "surveys:read"
CUSTOMERS_READ = "customers:read"

SurveyError = error_type("Survey", CODES)  # the same class as schema.SurveyError

LoyaltyQuadrantEnum = graphene.Enum.from_enum(
    service.LoyaltyQuadrant, name="LoyaltyQuadrant", description=(
        "Dick and Basu's loyalty: TRUE (high attitude, repeat patronage), LATENT (high "
        "attitude, low patronage), SPURIOUS (low attitude, repeat patronage), NONE (low, "
        "low), UNKNOWN (no answer in the window: never guessed)."))


@domain("surveys")
class LoyaltyMatrixQuadrant(graphene.ObjectType):
    quadrant = graphene.Field(LoyaltyQuadrantEnum, required=True)
    customers = graphene.Int(required=True)
    share = graphene.Float(description="Of every customer counted (UNKNOWN included), 0-1; "
                                       "null when none is.")
    share_of_answered = graphene.Float(description=(
        "Of the customers with an answer, 0-1; null for UNKNOWN or when none answered."))
    mean_purchases = graphene.Float(description="Mean purchases in the window; null when "
                                                "the quadrant is empty.")
    mean_attitude = graphene.Float(description="Mean answer (the question's scale); null "
                                               "for UNKNOWN and an empty quadrant.")


@domain("surveys")
class LoyaltyMatrix(graphene.ObjectType):
    """Customers by attitude (their latest answer in the window) x behaviour (purchases in
    the window)."""

    errors = graphene.List(graphene.NonNull(SurveyError), required=True,
                           description="Bad arguments: every other field is null.")
    question_key = graphene.String(description="The question attitude comes from.")
    high_attitude_from = graphene.Int(description=(
        "An answer at or above it is a high attitude: 9 (NPS promoters) or the top two "
        "points of the rating scale."))
    min_purchases = graphene.Int(description="Purchases at or above it are repeat "
                                             "patronage.")
    customers = graphene.Int(description="Customers counted (not erased; in the filter).")
    answered = graphene.Int(description="Customers with an answer in the window.")
    quadrants = graphene.List(graphene.NonNull(LoyaltyMatrixQuadrant), description=(
        "TRUE, LATENT, SPURIOUS, NONE, UNKNOWN, in this order, empty ones included."))


def _error(error: FieldError) -> Any:
    return SurveyError(field=error.field, message=error.message, code=error.code)


def resolve_loyalty_matrix(root: Any, info: Any, **args: Any) -> LoyaltyMatrix:
    data = plain(args)
    principal = ctx(info).principal
    if data.get("filter") and not principal.allows(CUSTOMERS_READ):
        raise GraphQLError("Filtering loyaltyMatrix by customers needs the customers:read "
                           "scope, which this API key lacks.",
                           extensions={"code": "FORBIDDEN"})
    try:
        segment = None
        if data.get("filter"):
            try:
                segment = customer_filter_spec(data["filter"], principal)
            except UserError as exc:
                raise UserError([e.prefixed("filter") for e in exc.errors]) from None
            charge_filter(info, segment)
        raw = {key: data[key] for key in ("question_key", "min_purchases")
               if data.get(key) is not None}
        for key, name in (("period_from", "from"), ("period_to", "to")):
            if data.get(key) is not None:
                raw[name] = data[key]
        try:
            raw["survey_id"] = decode_global_id(data["survey_id"], "Survey")
        except ValueError as exc:
            raise UserError.single(str(exc), ErrorCode.INVALID, "surveyId") from None
        matrix = service.loyalty_matrix(raw, segment)
    except UserError as exc:
        return LoyaltyMatrix(errors=[_error(e) for e in exc.errors])
    window = matrix.window
    return LoyaltyMatrix(
        errors=[], question_key=window.question_key, high_attitude_from=window.high_from,
        min_purchases=window.min_purchases, customers=matrix.customers,
        answered=matrix.answered,
        quadrants=[LoyaltyMatrixQuadrant(
            quadrant=f.quadrant, customers=f.customers, share=f.share,
            share_of_answered=f.share_of_answered, mean_purchases=f.mean_purchases,
            mean_attitude=f.mean_attitude) for f in matrix.quadrants])


def query_fields() -> dict[str, graphene.Field]:
    # One GROUP BY over the period's purchases and the survey's responses: a report.
    return {"loyaltyMatrix": costly(scoped(graphene.Field(
        LoyaltyMatrix, required=True, resolver=resolve_loyalty_matrix,
        survey_id=graphene.ID(required=True),
        question_key=graphene.String(description=(
            "An NPS or RATING question of the survey; default: its overall-satisfaction "
            "question.")),
        period_from=graphene.Date(required=True, name="from",
                                  description="From 00:00 of this day (RAPPORT_TIMEZONE)."),
        period_to=graphene.Date(required=True, name="to",
                                description="Up to the end of this day, included."),
        min_purchases=graphene.Int(description=(
            f"Repeat patronage from this many purchases in the window (default "
            f"{service.DEFAULT_MIN_PURCHASES}).")),
        filter=CustomerFilterInput(description="Only these customers (needs customers:read)."),
        description=(
            "Loyalty as attitude x behaviour (Dick and Basu): customers per quadrant over a "
            "window (surveys:read).")), READ), REPORT_COST)}


# --- The customer filter field ---------------------------------------------------------------


class LoyaltyQuadrantCondition(graphene.InputObjectType):
    """Customers in one quadrant of the loyalty matrix (``loyaltyMatrix``'s arguments)."""

    quadrant = LoyaltyQuadrantEnum(required=True)
    survey_id = graphene.ID(required=True)
    question_key = graphene.String(description="Default: the survey's overall question.")
    period_from = graphene.Date(required=True, name="from")
    period_to = graphene.Date(required=True, name="to")
    min_purchases = graphene.Int(description=f"Default {service.DEFAULT_MIN_PURCHASES}.")


FILTER_FIELDS = [
    CustomerFilterField(
        name="loyalty_quadrant", field=service.QuadrantField(), scope=READ,
        condition=service.quadrant_filter_condition, cost=service.FILTER_COST,
        graphql_type=LoyaltyQuadrantCondition(description=(
            "Customers in this quadrant of the loyalty matrix (e.g. SPURIOUS loyals for "
            "win-back). Needs surveys:read."))),
]

__all__ = ["FILTER_FIELDS", "LoyaltyMatrix", "LoyaltyMatrixQuadrant", "query_fields"]
