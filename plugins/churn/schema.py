"""GraphQL: ``Customer.churnRecords``, ``Customer.winbackAttempts``, ``Customer.churn``,
``churnModel``, ``churnWarnings``, ``churnReport``, ``winbackCampaigns``, ``winbackStats``
and the churn and win-back mutations.

``markCustomersChurned`` works like core's ``recordInteractions``: all or nothing by
default, ``partial: true`` keeps the valid items; per-item errors carry the item index
(``input.marks.3.churnedAt``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import graphene
from graphene import relay
from sqlalchemy import select
from sqlalchemy.orm import defer

from api import (
    CustomerType, RapportMutation, connection, ctx, domain, error_type, global_id,
    load_related, node_type, page_size, scoped,
)
from api.loaders import AgentByIdLoader, CustomerByIdLoader
from api.limits import REPORT_COST, costly
from api.mutations import MAX_BATCH
from api.pagination import bad_input, keyset_page
from api.report_links import ReportLink
from api.types import Agent
from core.db import db, utcnow
from core.errors import ErrorCode, FieldError, UserError
from core.report_links import report_link
from core.services import load
from core.services.interactions import BatchRejected

from plugins.churn import modeling, owners, report, routes, service
from plugins.churn.errors import CODES
from plugins.churn.loaders import (
    ChurnModelVersionByIdLoader, ChurnRecordByIdLoader, ChurnRecordsByCustomerLoader,
    ChurnScoreByCustomerLoader, WinbackAttemptByIdLoader,
    WinbackAttemptsByCustomerLoader, WinbackCampaignByIdLoader, WinbackOutcomesByCampaignLoader,
)
from plugins.churn.models import (
    ChurnModelVersion, ChurnReason, ChurnRecord, ChurnScore, ChurnType, TimeUnit,
    WinbackAttempt, WinbackCampaign, WinbackOutcome,
    WinbackStrategy,
)
from plugins.churn.schemas import PeriodSchema

READ, WRITE = "churn:read", "churn:write"

ChurnError = error_type("Churn", CODES)
ChurnTypeEnum = graphene.Enum.from_enum(ChurnType, name="ChurnType", description=(
    "Kind of churn by cause: NATURAL (moved away, died, business closed), MALICIOUS (left "
    "to escape obligations), COMPETITIVE (taken by a competitor), NEGLIGENCE (driven away "
    "by our own failures)."))
ChurnReasonEnum = graphene.Enum.from_enum(ChurnReason, name="ChurnReason", description=(
    "Why the customer left (Keaveney's eight reasons, and OTHER)."))
WinbackStrategyEnum = graphene.Enum.from_enum(WinbackStrategy, name="WinbackStrategy")
WinbackOutcomeEnum = graphene.Enum.from_enum(WinbackOutcome, name="WinbackOutcome")


@domain("churn")
@node_type(ChurnRecord)
class ChurnRecordNode(graphene.ObjectType):
    """A customer's departure: when, of which type, why; closed by a reactivation."""

    class Meta:
        name = "ChurnRecord"
        interfaces = (relay.Node,)

    customer = graphene.Field(CustomerType)
    type = graphene.Field(ChurnTypeEnum, required=True)
    reason = graphene.Field(ChurnReasonEnum, required=True)
    churned_at = graphene.DateTime(required=True)
    note = graphene.String()
    recorded_by = graphene.Field(Agent)
    recorded_at = graphene.DateTime(required=True)
    reactivated_at = graphene.DateTime(description="When the customer came back, if it did.")
    reactivation_reason = graphene.String(description=(
        "purchase, won back by campaign <name>, merged into customer <id>, or the reason "
        "given to reactivateCustomer."))
    open = graphene.Boolean(required=True, description="Not reactivated (yet).")

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(ChurnRecordByIdLoader).load(int(id))

    @staticmethod
    def resolve_customer(root: ChurnRecord, info: Any) -> Any:
        return ctx(info).loader(CustomerByIdLoader).load(root.customer_id)

    @staticmethod
    def resolve_recorded_by(root: ChurnRecord, info: Any) -> Any:
        return load_related(info, AgentByIdLoader, root.recorded_by_id)

    @staticmethod
    def resolve_open(root: ChurnRecord, info: Any) -> bool:
        return root.reactivated_at is None


@domain("churn")
class WinbackOutcomeCounts(graphene.ObjectType):
    pending = graphene.Int(required=True)
    won_back = graphene.Int(required=True)
    lost = graphene.Int(required=True)


@domain("churn")
@node_type(WinbackCampaign)
class WinbackCampaignNode(graphene.ObjectType):
    class Meta:
        name = "WinbackCampaign"
        interfaces = (relay.Node,)

    name = graphene.String(required=True)
    strategy = graphene.Field(WinbackStrategyEnum, required=True)
    description = graphene.String()
    started_at = graphene.DateTime(required=True)
    ended_at = graphene.DateTime()
    outcomes = graphene.Field(WinbackOutcomeCounts, required=True,
                              description="The campaign's attempts by outcome.")

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(WinbackCampaignByIdLoader).load(int(id))

    @staticmethod
    async def resolve_outcomes(root: WinbackCampaign, info: Any) -> WinbackOutcomeCounts:
        counts = await ctx(info).loader(WinbackOutcomesByCampaignLoader).load(root.id)
        return WinbackOutcomeCounts(pending=counts[WinbackOutcome.PENDING],
                                    won_back=counts[WinbackOutcome.WON_BACK],
                                    lost=counts[WinbackOutcome.LOST])


@domain("churn")
@node_type(WinbackAttempt)
class WinbackAttemptNode(graphene.ObjectType):
    class Meta:
        name = "WinbackAttempt"
        interfaces = (relay.Node,)

    campaign = graphene.Field(WinbackCampaignNode, required=True)
    customer = graphene.Field(CustomerType)
    agent = graphene.Field(Agent)
    outcome = graphene.Field(WinbackOutcomeEnum, required=True)
    note = graphene.String()
    attempted_at = graphene.DateTime(required=True)
    resolved_at = graphene.DateTime()

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(WinbackAttemptByIdLoader).load(int(id))

    @staticmethod
    def resolve_campaign(root: WinbackAttempt, info: Any) -> Any:
        return ctx(info).loader(WinbackCampaignByIdLoader).load(root.campaign_id)

    @staticmethod
    def resolve_customer(root: WinbackAttempt, info: Any) -> Any:
        return ctx(info).loader(CustomerByIdLoader).load(root.customer_id)

    @staticmethod
    def resolve_agent(root: WinbackAttempt, info: Any) -> Any:
        return load_related(info, AgentByIdLoader, root.agent_id)


WinbackCampaignConnection = connection(WinbackCampaignNode, "WinbackCampaign")


# --- Report and statistics -------------------------------------------------------------------


@domain("churn")
class ChurnCount(graphene.ObjectType):
    key = graphene.String(required=True, description="A ChurnType or ChurnReason name.")
    count = graphene.Int(required=True)


def _counts(mapping: dict[str, int]) -> list[ChurnCount]:
    return [ChurnCount(key=k.upper(), count=v) for k, v in sorted(mapping.items())]


def _by_type(root: report.MonthFigures | report.ChurnReport, info: Any) -> list[ChurnCount]:
    return _counts(root.by_type)


def _by_reason(root: report.MonthFigures | report.ChurnReport, info: Any) -> list[ChurnCount]:
    return _counts(root.by_reason)


@domain("churn")
class ChurnReportMonth(graphene.ObjectType):
    month = graphene.String(required=True, description="YYYY-MM in RAPPORT_TIMEZONE.")
    active_at_start = graphene.Int(required=True, description=(
        "Customers existing before the month and not churned at its start."))
    churned = graphene.Int(required=True, description=(
        "Customers with a churn record dated in the month (one who left twice in the "
        "month counts once)."))
    reactivated = graphene.Int(required=True)
    churn_rate = graphene.Float(description="churned / activeAtStart.")
    retention_rate = graphene.Float(description=(
        "Share of the customers active at the start not churned at the month's end."))
    by_type = graphene.List(graphene.NonNull(ChurnCount), required=True)
    by_reason = graphene.List(graphene.NonNull(ChurnCount), required=True)
    resolve_by_type = staticmethod(_by_type)
    resolve_by_reason = staticmethod(_by_reason)


@domain("churn")
class ChurnCohort(graphene.ObjectType):
    month = graphene.String(required=True, description="The month the customers started.")
    size = graphene.Int(required=True)
    retention = graphene.List(graphene.NonNull(graphene.Float), required=True, description=(
        "retention[k]: share of the cohort not churned at the end of the k-th month after "
        "its own (0: the cohort's month)."))


@domain("churn")
class ChurnReport(graphene.ObjectType):
    period_from = graphene.Date(required=True, name="from")
    period_to = graphene.Date(required=True, name="to")
    churned = graphene.Int(required=True, description="The months' churned customers, summed.")
    months = graphene.List(graphene.NonNull(ChurnReportMonth), required=True)
    cohorts = graphene.List(graphene.NonNull(ChurnCohort), required=True)
    by_type = graphene.List(graphene.NonNull(ChurnCount), required=True)
    by_reason = graphene.List(graphene.NonNull(ChurnCount), required=True)
    resolve_by_type = staticmethod(_by_type)
    resolve_by_reason = staticmethod(_by_reason)


@domain("churn")
class WinbackStrategyStats(graphene.ObjectType):
    strategy = graphene.String(required=True, description="A WinbackStrategy name, or TOTAL.")
    attempts = graphene.Int(required=True)
    won_back = graphene.Int(required=True)
    lost = graphene.Int(required=True)
    pending = graphene.Int(required=True)
    resolved = graphene.Int(required=True)
    win_rate = graphene.Float(description="wonBack / resolved (pending attempts excluded).")
    win_rate_of_all = graphene.Float(description="wonBack / attempts (pending as not won).")

    @staticmethod
    def resolve_strategy(root: service.StrategyStats, info: Any) -> str:
        return root.strategy.upper()


@domain("churn")
class WinbackStats(graphene.ObjectType):
    period_from = graphene.Date(required=True, name="from")
    period_to = graphene.Date(required=True, name="to")
    strategies = graphene.List(graphene.NonNull(WinbackStrategyStats), required=True)
    total = graphene.Field(WinbackStrategyStats, required=True)


# --- Churn per owner and per team (plugins/churn/owners.py) ---------------------------------


@domain("churn")
class ChurnGroupMonth(graphene.ObjectType):
    """A month of one team (or owner): the figures of churnReport's months, counting only
    the customers of the group (by their current owner)."""

    month = graphene.String(required=True, description="YYYY-MM in RAPPORT_TIMEZONE.")
    active_at_start = graphene.Int(required=True, description=(
        "The group's customers existing before the month and not churned at its start."))
    churned = graphene.Int(required=True, description=(
        "The group's customers with a churn record dated in the month."))
    churn_rate = graphene.Float(description="churned / activeAtStart.")


@domain("churn")
class ChurnOwnerMonth(ChurnGroupMonth):
    at_bottom = graphene.Boolean(required=True, description=(
        "The owner had the month's highest churn rate among the owners with at least "
        "minActive customers active at its start (complete months only; ties: each)."))


_TOTALS = {
    "active_at_start": "Customers active at the start of the period's first month.",
    "churned": "The months' churned customers, summed.",
    "customer_months": "The months' activeAtStart, summed.",
    "churn_rate": ("The period's monthly churn rate: churned / customerMonths (the months' "
                   "rates averaged, weighted by their active customers)."),
}


@domain("churn")
class ChurnOwnerFigures(graphene.ObjectType):
    """One owner's book (the customers it owns NOW: there is no ownership history), or the
    customers without an owner (owner null), month by month and over the period."""

    owner = scoped(graphene.Field(Agent, description=(
        "The owner; null for the customers without one.")), "agents:read")
    months = graphene.List(graphene.NonNull(ChurnOwnerMonth), required=True)
    active_at_start = graphene.Int(required=True, description=_TOTALS["active_at_start"])
    churned = graphene.Int(required=True, description=_TOTALS["churned"])
    customer_months = graphene.Int(required=True, description=_TOTALS["customer_months"])
    churn_rate = graphene.Float(description=_TOTALS["churn_rate"])
    bottom_months = graphene.List(graphene.NonNull(graphene.String), required=True,
                                  description="The months (YYYY-MM) the owner was at the "
                                              "bottom.")
    bottom_months_running = graphene.Int(required=True, description=(
        "Consecutive months at the bottom ending with the period's last complete month."))
    at_bottom_three_months = graphene.Boolean(required=True, description=(
        "bottomMonthsRunning >= 3: by the house rule, the accounts go to a colleague."))

    @staticmethod
    def resolve_owner(root: owners.GroupFigures, info: Any) -> Any:
        return load_related(info, AgentByIdLoader, root.owner_id)


@domain("churn")
class ChurnTeamFigures(graphene.ObjectType):
    """The customers whose current owner is in the team (team null: owners without a team
    and customers without an owner)."""

    months = graphene.List(graphene.NonNull(ChurnGroupMonth), required=True)
    active_at_start = graphene.Int(required=True, description=_TOTALS["active_at_start"])
    churned = graphene.Int(required=True, description=_TOTALS["churned"])
    customer_months = graphene.Int(required=True, description=_TOTALS["customer_months"])
    churn_rate = graphene.Float(description=_TOTALS["churn_rate"])
    team = scoped(graphene.Field(graphene.String, description=(
        "The team's name (Agent.team; needs agents:read as well); null: no team.")),
        "agents:read")


@domain("churn")
class ChurnMonthBottom(graphene.ObjectType):
    month = graphene.String(required=True)
    complete = graphene.Boolean(required=True, description=(
        "The month is over (only complete months have a bottom)."))
    ranked_owners = graphene.Int(required=True, description=(
        "Owners with at least minActive customers active at the month's start."))
    bottom_churn_rate = graphene.Float(description=(
        "The highest churn rate among them; null when the month has no bottom (not "
        "complete, fewer than two owners ranked, or no churn)."))


@domain("churn")
class ChurnByOwnerReport(graphene.ObjectType):
    period_from = graphene.Date(required=True, name="from")
    period_to = graphene.Date(required=True, name="to")
    min_active = graphene.Int(required=True)
    last_complete_month = graphene.String(description=(
        "The month bottomMonthsRunning ends with; null when no month of the period is over."))
    months = graphene.List(graphene.NonNull(ChurnMonthBottom), required=True)
    by_owner = graphene.List(graphene.NonNull(ChurnOwnerFigures), required=True, description=(
        "Every owner of a customer counted in the period, by name; the customers without "
        "an owner last."))
    by_team = graphene.List(graphene.NonNull(ChurnTeamFigures), required=True, description=(
        "By team name; no team last."))


def resolve_churn_by_owner(root: Any, info: Any, **args: Any) -> owners.OwnerReport:
    try:
        return owners.owner_report({**_period(args), "minActive": args["min_active"]})
    except UserError as exc:
        raise _bad_period(exc) from None


def _period(args: dict[str, Any]) -> dict[str, Any]:
    return {"from": args["from_"].isoformat(), "to": args["to"].isoformat()}


def _bad_period(exc: UserError) -> Exception:
    return bad_input("; ".join(f"{e.field}: {e.message}" for e in exc.errors))


def resolve_churn_report(root: Any, info: Any, **args: Any) -> report.ChurnReport:
    try:
        return report.churn_report(_period(args))
    except UserError as exc:
        raise _bad_period(exc) from None


def resolve_churn_report_link(root: Any, info: Any, **args: Any) -> ReportLink:
    # The default period is fixed now: the link shows what was asked for, whenever opened.
    since, until = routes.default_period(utcnow())
    period = {"from": args["from_"].isoformat() if args.get("from_") else since,
              "to": args["to"].isoformat() if args.get("to") else until}
    try:
        load(PeriodSchema(), dict(period))
    except UserError as exc:
        raise _bad_period(exc) from None
    link = report_link(ctx(info).principal, routes.REPORT, routes.PATH, None, period)
    return ReportLink(url=link["url"], expires_at=link["expiresAt"])


def resolve_winback_stats(root: Any, info: Any, **args: Any) -> service.WinbackStatistics:
    try:
        return service.winback_stats(_period(args))
    except UserError as exc:
        raise _bad_period(exc) from None


def resolve_winback_campaigns(root: Any, info: Any, first: int | None = None,
                              after: str | None = None) -> Any:
    return keyset_page(select(WinbackCampaign), [WinbackCampaign.started_at, WinbackCampaign.id],
                       first, after, kinds=(dt.datetime, int), descending=True)


# --- Scores and models -----------------------------------------------------------------------


ChurnTimeUnitEnum = graphene.Enum.from_enum(TimeUnit, name="ChurnTimeUnit")
#: ``expectedPurchases(days)`` accepts up to ten years.
MAX_PREDICTION_DAYS = 3650


@domain("churn")
class ChurnFactor(graphene.ObjectType):
    feature = graphene.String(required=True, description=(
        "The factor: an attribute's label with the customer's value for a category "
        "(\"Contract: Month-to-month\"), an attribute's label, or a feature name "
        "(docs/churn-models.md, \"Which features the classifier learns from\")."))
    contribution = graphene.Float(required=True, description=(
        "Signed, in log-odds of churn: above 0 the feature raises this customer's risk."))


@domain("churn")
class CustomerChurn(graphene.ObjectType):
    """The customer's latest score (``rapport churn score``)."""

    risk = graphene.Float(required=True, description=(
        "Probability of churn: the classifier's when the model has one, else 1 - P(alive)."))
    probability_alive = graphene.Float(description=(
        "BG/NBD P(alive) at scoring time; null for a customer without a purchase."))
    expected_purchases = graphene.Float(
        days=graphene.Int(required=True), description=(
            "Expected purchases in the next `days` days (BG/NBD, from the summary at scoring "
            "time); null for a customer without a purchase."))
    clv = graphene.Float(description=(
        "Discounted expected spend over RAPPORT_CHURN_CLV_HORIZON_MONTHS, in the base "
        "currency; null without a purchase or without a Gamma-Gamma model. For an sBG "
        "subscriber: discounted expected residual lifetime x the margin per period of the "
        "attribute RAPPORT_CHURN_MARGIN_ATTRIBUTE; null without it (churnModel.notes says "
        "why)."))
    expected_order_value = graphene.Float(description="Gamma-Gamma expected order value.")
    priority = graphene.Float(required=True, description=(
        "risk x clv; 0 for a customer without a purchase; the risk itself when the model "
        "has no Gamma-Gamma part (no CLV for anyone)."))
    top_factors = graphene.List(graphene.NonNull(ChurnFactor), required=True, description=(
        "Up to 5 features with the largest contributions, largest first (empty without a "
        "classifier)."))
    scored_at = graphene.DateTime(required=True)
    model_version = graphene.Int(required=True)

    @staticmethod
    def resolve_probability_alive(root: ChurnScore, info: Any) -> float | None:
        return root.p_alive

    @staticmethod
    def resolve_expected_order_value(root: ChurnScore, info: Any) -> float | None:
        return root.expected_aov

    @staticmethod
    def resolve_model_version(root: ChurnScore, info: Any) -> int:
        return root.model_version_id

    @staticmethod
    async def resolve_expected_purchases(root: ChurnScore, info: Any, days: int
                                         ) -> float | None:
        if not 0 <= days <= MAX_PREDICTION_DAYS:
            raise bad_input(f"days must be from 0 to {MAX_PREDICTION_DAYS} (got {days}).")
        version = await ctx(info).loader(ChurnModelVersionByIdLoader).load(
            root.model_version_id)
        return None if version is None else modeling.expected_purchases(version, root, days)


@domain("churn")
class BgnbdParameters(graphene.ObjectType):
    r = graphene.Float(required=True)
    alpha = graphene.Float(required=True, description="In the model's time unit.")
    a = graphene.Float(required=True)
    b = graphene.Float(required=True)
    log_likelihood = graphene.Float(required=True)
    time_unit = graphene.Field(ChurnTimeUnitEnum, required=True)
    customers = graphene.Int(required=True)
    repeat_buyers = graphene.Int(required=True)


@domain("churn")
class ValidationByFrequency(graphene.ObjectType):
    frequency = graphene.Int(required=True, description="Calibration repeat purchase days.")
    or_more = graphene.Boolean(required=True, description="The last group: this many or more.")
    customers = graphene.Int(required=True)
    predicted = graphene.Float(required=True, description="Mean predicted holdout purchases.")
    actual = graphene.Float(required=True, description="Mean actual holdout purchases.")


@domain("churn")
class ValidationTrackingPoint(graphene.ObjectType):
    week = graphene.Int(required=True)
    predicted = graphene.Float(required=True, description="Cumulative predicted purchases.")
    actual = graphene.Float(required=True, description="Cumulative actual purchases.")


@domain("churn")
class ChurnModelValidation(graphene.ObjectType):
    """Calibration/holdout backtest: BG/NBD fitted at the training date, compared with the
    purchase days of the horizon that followed (docs/churn-models.md, "Validation")."""

    horizon_days = graphene.Float(required=True)
    customers = graphene.Int(required=True)
    predicted_total = graphene.Float(required=True)
    actual_total = graphene.Float(required=True)
    correlation = graphene.Float()
    mean_absolute_error = graphene.Float()
    by_frequency = graphene.List(graphene.NonNull(ValidationByFrequency), required=True)
    tracking = graphene.List(graphene.NonNull(ValidationTrackingPoint), required=True)


def _validation(found: dict[str, Any]) -> ChurnModelValidation:
    return ChurnModelValidation(
        horizon_days=found["horizonDays"], customers=found["customers"],
        predicted_total=found["predictedTotal"], actual_total=found["actualTotal"],
        correlation=found["correlation"], mean_absolute_error=found["meanAbsoluteError"],
        by_frequency=[ValidationByFrequency(frequency=g["frequency"], or_more=g["orMore"],
                                            customers=g["customers"],
                                            predicted=g["predicted"], actual=g["actual"])
                      for g in found["byFrequency"]],
        tracking=[ValidationTrackingPoint(week=t["week"], predicted=t["predicted"],
                                          actual=t["actual"]) for t in found["tracking"]])


@domain("churn")
class SbgParameters(graphene.ObjectType):
    """A shifted-beta-geometric fit (contractual retention) for one renewal period length."""

    period = graphene.String(required=True, description="month or year.")
    alpha = graphene.Float()
    beta = graphene.Float()
    log_likelihood = graphene.Float()
    customers = graphene.Int()
    churned = graphene.Int()
    max_tenure = graphene.Int(description="Longest tenure observed, in periods.")
    retention = graphene.List(graphene.NonNull(graphene.Float), required=True, description=(
        "Projected retention rate r(t), t = 1..12 periods: the share of period t-1's "
        "subscribers who renew for period t (empty when not fitted)."))
    expected_remaining_periods = graphene.Float(description=(
        "Discounted expected residual lifetime (DERL) of a subscriber at 1 completed period, "
        "at the yearly discount rate converted to the period; CLV = DERL x margin."))
    error = graphene.String(description="Why this period could not be fitted.")


def _sbg_parameters(period: str, fit: Any) -> SbgParameters:
    if not isinstance(fit, dict):
        return SbgParameters(period=period, retention=[], error=str(fit))
    from plugins.churn import sbg
    from plugins.churn.modeling import churn_settings

    pair = (fit["alpha"], fit["beta"])
    yearly = churn_settings().discount_rate
    rate = yearly if period == "year" else (1.0 + yearly) ** (1.0 / 12.0) - 1.0
    derl = (float(sbg.discounted_expected_residual_lifetime(pair, 1, rate))
            if rate > 0 else None)
    return SbgParameters(
        period=period, alpha=fit["alpha"], beta=fit["beta"],
        log_likelihood=fit["log_likelihood"], customers=fit["n_customers"],
        churned=fit["n_churned"], max_tenure=fit["max_tenure"],
        retention=[float(v) for v in sbg.retention_curve(pair, 12)],
        expected_remaining_periods=derl)


@domain("churn")
class GammaGammaParameters(graphene.ObjectType):
    p = graphene.Float(required=True)
    q = graphene.Float(required=True)
    gamma = graphene.Float(required=True)
    log_likelihood = graphene.Float(required=True)
    buyers = graphene.Int(required=True)


@domain("churn")
class ChurnClassifierInfo(graphene.ObjectType):
    kind = graphene.String(required=True, description="logistic, knn or gradient_boosting.")
    roc_auc = graphene.Float(required=True, description="Stratified cross-validation.")
    pr_auc = graphene.Float(required=True, description="Stratified cross-validation.")
    base_rate = graphene.Float(required=True, description="The PR-AUC of a random ranking.")
    time_aware_roc_auc = graphene.Float(description=(
        "Trained on older customers, tested on newer ones; null when it could not be done."))
    trained_at = graphene.DateTime(required=True)
    training_as_of = graphene.DateTime(required=True, description=(
        "Features as of this date, labels: churned within horizonDays after it."))
    horizon_days = graphene.Int(required=True)
    features = graphene.List(graphene.NonNull(graphene.String), required=True)


@domain("churn")
class ChurnModel(graphene.ObjectType):
    """The active model version (``rapport churn fit``)."""

    version = graphene.Int(required=True)
    as_of = graphene.DateTime(required=True, description="The calibration date.")
    created_at = graphene.DateTime(required=True)
    kind = graphene.String(required=True)
    model = graphene.String(required=True, description=(
        "The model family RAPPORT_CHURN_MODEL chose: bgnbd (non-contractual) or sbg "
        "(contractual renewals)."))
    bgnbd = graphene.Field(BgnbdParameters, description=(
        "Null when there were no purchases to fit it on (see notes)."))
    sbg = graphene.List(graphene.NonNull(SbgParameters), required=True, description=(
        "One shifted-beta-geometric fit per renewal period length (sbg models)."))
    gamma_gamma = graphene.Field(GammaGammaParameters)
    validation = graphene.Field(ChurnModelValidation, description=(
        "Calibration/holdout backtest of BG/NBD (null without purchases)."))
    classifier = graphene.Field(ChurnClassifierInfo)
    notes = graphene.List(graphene.NonNull(graphene.String), required=True, description=(
        "Why a part is missing (no Gamma-Gamma, no classifier) and fit warnings."))

    @staticmethod
    def resolve_version(root: ChurnModelVersion, info: Any) -> int:
        return root.id

    @staticmethod
    def resolve_validation(root: ChurnModelVersion, info: Any
                           ) -> ChurnModelValidation | None:
        found = (root.metrics or {}).get("validation")
        return _validation(found) if found else None

    @staticmethod
    def resolve_model(root: ChurnModelVersion, info: Any) -> str:
        return str(root.params.get("model") or "bgnbd")

    @staticmethod
    def resolve_sbg(root: ChurnModelVersion, info: Any) -> list[SbgParameters]:
        return [_sbg_parameters(period, fit)
                for period, fit in sorted((root.params.get("sbg") or {}).items())]

    @staticmethod
    def resolve_bgnbd(root: ChurnModelVersion, info: Any) -> BgnbdParameters | None:
        g = root.params.get("bgnbd")
        if not g:
            return None
        return BgnbdParameters(r=g["r"], alpha=g["alpha"], a=g["a"], b=g["b"],
                               log_likelihood=g["log_likelihood"], time_unit=root.time_unit,
                               customers=g["n_customers"], repeat_buyers=g["n_repeat_buyers"])

    @staticmethod
    def resolve_gamma_gamma(root: ChurnModelVersion, info: Any) -> GammaGammaParameters | None:
        g = root.params.get("gamma_gamma")
        return None if not g else GammaGammaParameters(
            p=g["p"], q=g["q"], gamma=g["gamma"], log_likelihood=g["log_likelihood"],
            buyers=g["n_customers"])

    @staticmethod
    def resolve_classifier(root: ChurnModelVersion, info: Any) -> ChurnClassifierInfo | None:
        found = root.metrics.get("classifier")
        if not found:
            return None
        cv, timed = found["cross_validation"], found.get("time_validation")
        training = root.metrics["training"]
        return ChurnClassifierInfo(
            kind=found["kind"], roc_auc=cv["roc_auc"], pr_auc=cv["pr_auc"],
            base_rate=cv["base_rate"], time_aware_roc_auc=timed["roc_auc"] if timed else None,
            trained_at=dt.datetime.fromisoformat(found["trained_at"]),
            training_as_of=dt.datetime.fromisoformat(training["as_of"]),
            horizon_days=training["horizon_days"], features=root.feature_names)

    @staticmethod
    def resolve_notes(root: ChurnModelVersion, info: Any) -> list[str]:
        classifier = root.metrics.get("classifier") or {}
        return [*root.metrics.get("notes", []), *classifier.get("notes", [])]


def resolve_churn_model(root: Any, info: Any) -> ChurnModelVersion | None:
    return db.session.scalars(select(ChurnModelVersion).options(
        defer(ChurnModelVersion.artifact)).where(ChurnModelVersion.active.is_(True))
        .order_by(ChurnModelVersion.id.desc()).limit(1)).first()


@domain("churn")
class ChurnWarning(CustomerChurn):
    """A scored customer in the warning list."""

    customer = graphene.Field(CustomerType, required=True)

    @staticmethod
    def resolve_customer(root: ChurnScore, info: Any) -> Any:
        return ctx(info).loader(CustomerByIdLoader).load(root.customer_id)


ChurnWarningConnection = connection(ChurnWarning, "ChurnWarning")


def resolve_churn_warnings(root: Any, info: Any, first: int | None = None,
                           after: str | None = None, min_risk: float | None = 0.0) -> Any:
    page_size(first)  # a bad size is reported before a bad minRisk
    min_risk = 0.0 if min_risk is None else min_risk  # an explicit null: no threshold
    if not 0.0 <= min_risk <= 1.0:
        raise bad_input(f"minRisk must be from 0 to 1 (got {min_risk}).")
    return modeling.WARNING_ORDER.query_page(
        modeling.warnings_query(min_risk).order_by(None), first, after)


# --- Mutations -----------------------------------------------------------------------------


def _actor(info: Any) -> int | None:
    return ctx(info).principal.agent_id  # type: ignore[no-any-return]


def _datetimes(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        if data.get(key) is not None:
            data[key] = data[key].isoformat()
    return data


class MarkCustomerChurnedInput(graphene.InputObjectType):
    customer_id = graphene.ID(required=True)
    type = ChurnTypeEnum(required=True)
    reason = ChurnReasonEnum(required=True)
    churned_at = graphene.DateTime(description="Default now; not before the customer existed.")
    note = graphene.String()


def _mark_data(item: dict[str, Any]) -> dict[str, Any]:
    data = _datetimes(dict(item), "churned_at")
    data["customer_id"] = global_id(data, "customer_id", "Customer")
    return data


class MarkCustomerChurned(RapportMutation):
    class Arguments:
        input = MarkCustomerChurnedInput(required=True)

    churn_record = graphene.Field(ChurnRecordNode)
    customer = graphene.Field(CustomerType)
    scope = WRITE
    error_type = ChurnError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> MarkCustomerChurned:
        record = service.mark_churned(_mark_data(input), actor_id=_actor(info))
        return cls(churn_record=record,
                   customer=ctx(info).loader(CustomerByIdLoader).load(record.customer_id))


class MarkCustomersChurnedInput(graphene.InputObjectType):
    marks = graphene.List(graphene.NonNull(MarkCustomerChurnedInput), required=True,
                          description=f"At most {MAX_BATCH} items.")
    partial = graphene.Boolean(
        default_value=False,
        description="Keep the valid items when some are invalid (default: all or nothing).")


class MarkCustomersChurned(RapportMutation):
    """Mark a batch churned: per-item errors carry the item index (``input.marks.3.type``)."""

    class Arguments:
        input = MarkCustomersChurnedInput(required=True)

    churn_records = graphene.List(ChurnRecordNode, required=True, description=(
        "One entry per input item, in order: the recorded (or already known) record, or "
        "null for a rejected item."))
    recorded_count = graphene.Int(required=True)
    scope = WRITE
    error_type = ChurnError

    @staticmethod
    def resolve_churn_records(root: MarkCustomersChurned, info: Any) -> list[Any]:
        return root.churn_records or []  # type: ignore[return-value]

    @staticmethod
    def resolve_recorded_count(root: MarkCustomersChurned, info: Any) -> int:
        return root.recorded_count or 0  # type: ignore[return-value]

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> MarkCustomersChurned:
        items = input.get("marks", [])
        if len(items) > MAX_BATCH:
            raise UserError.single(f"At most {MAX_BATCH} marks per call; split the batch.",
                                   ErrorCode.TOO_MANY, "marks")
        rows: list[dict[str, Any]] = []
        rejected: dict[int, list[FieldError]] = {}
        for index, item in enumerate(items):
            try:
                rows.append(_mark_data(item))
            except UserError as exc:
                rows.append({})
                rejected[index] = exc.errors
        try:
            result = service.mark_customers_churned(
                rows, partial=bool(input.get("partial")), actor_id=_actor(info),
                rejected=rejected)
        except BatchRejected as exc:
            raise UserError([e.prefixed("marks") for e in exc.errors]) from None
        stored = {**result.recorded_ids, **result.existing_ids}
        loader = ctx(info).loader(ChurnRecordByIdLoader)
        return cls(churn_records=[loader.load(stored[i]) if i in stored else None
                                  for i in range(len(items))],
                   recorded_count=result.recorded,
                   errors=[cls.error(e.prefixed("input.marks")) for e in result.errors])


class ReactivateCustomerInput(graphene.InputObjectType):
    customer_id = graphene.ID(required=True)
    reactivated_at = graphene.DateTime(description="Default now; not before the churn date.")
    reason = graphene.String(description="Why the customer came back.")


class ReactivateCustomer(RapportMutation):
    """Close the customer's open churn record and make it active again."""

    class Arguments:
        input = ReactivateCustomerInput(required=True)

    churn_record = graphene.Field(ChurnRecordNode)
    customer = graphene.Field(CustomerType)
    scope = WRITE
    error_type = ChurnError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> ReactivateCustomer:
        data = _datetimes(dict(input), "reactivated_at")
        data["customer_id"] = global_id(data, "customer_id", "Customer")
        record = service.reactivate_customer(data)
        return cls(churn_record=record,
                   customer=ctx(info).loader(CustomerByIdLoader).load(record.customer_id))


class CreateWinbackCampaignInput(graphene.InputObjectType):
    name = graphene.String(required=True)
    strategy = WinbackStrategyEnum(required=True)
    description = graphene.String()
    started_at = graphene.DateTime(description="Default now.")
    ended_at = graphene.DateTime()


class CreateWinbackCampaign(RapportMutation):
    class Arguments:
        input = CreateWinbackCampaignInput(required=True)

    campaign = graphene.Field(WinbackCampaignNode)
    scope = WRITE
    error_type = ChurnError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CreateWinbackCampaign:
        return cls(campaign=service.create_campaign(
            _datetimes(dict(input), "started_at", "ended_at")))


class RecordWinbackAttemptInput(graphene.InputObjectType):
    campaign_id = graphene.ID(required=True)
    customer_id = graphene.ID(required=True, description="A churned customer.")
    attempted_at = graphene.DateTime(description="Default now.")
    note = graphene.String()
    outcome = WinbackOutcomeEnum(description="Default PENDING; WON_BACK reactivates.")
    resolved_at = graphene.DateTime(description="With an outcome: default attemptedAt.")


class RecordWinbackAttempt(RapportMutation):
    class Arguments:
        input = RecordWinbackAttemptInput(required=True)

    attempt = graphene.Field(WinbackAttemptNode)
    scope = WRITE
    error_type = ChurnError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> RecordWinbackAttempt:
        data = _datetimes(dict(input), "attempted_at", "resolved_at")
        data["campaign_id"] = global_id(data, "campaign_id", "WinbackCampaign")
        data["customer_id"] = global_id(data, "customer_id", "Customer")
        return cls(attempt=service.record_attempt(data, actor_id=_actor(info)))


class ResolveWinbackAttemptInput(graphene.InputObjectType):
    id = graphene.ID(required=True)
    outcome = WinbackOutcomeEnum(required=True, description="WON_BACK (reactivates) or LOST.")
    resolved_at = graphene.DateTime(description="Default now.")
    note = graphene.String()


class ResolveWinbackAttempt(RapportMutation):
    """Set a pending attempt's outcome."""

    class Arguments:
        input = ResolveWinbackAttemptInput(required=True)

    attempt = graphene.Field(WinbackAttemptNode)
    scope = WRITE
    error_type = ChurnError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> ResolveWinbackAttempt:
        data = _datetimes(dict(input), "resolved_at")
        data["id"] = global_id(data, "id", "WinbackAttempt")
        return cls(attempt=service.resolve_attempt(data))


# --- What the plugin contributes -------------------------------------------------------------


def customer_fields() -> dict[str, graphene.Field]:
    return {
        "churnRecords": scoped(graphene.Field(
            graphene.List(graphene.NonNull(ChurnRecordNode)), required=True,
            resolver=lambda root, info: ctx(info).loader(ChurnRecordsByCustomerLoader)
            .load(root.id),
            description="The customer's churn history, newest first."), READ),
        "winbackAttempts": scoped(graphene.Field(
            graphene.List(graphene.NonNull(WinbackAttemptNode)), required=True,
            resolver=lambda root, info: ctx(info).loader(WinbackAttemptsByCustomerLoader)
            .load(root.id),
            description="Attempts to win the customer back, newest first."), READ),
        "churn": scoped(graphene.Field(
            CustomerChurn,
            resolver=lambda root, info: ctx(info).loader(ChurnScoreByCustomerLoader)
            .load(root.id),
            description="Churn risk, P(alive), CLV and top factors; null when unscored."),
            READ),
    }


_PERIOD = {"from_": graphene.Date(required=True, name="from"),
           "to": graphene.Date(required=True)}


def query_fields() -> dict[str, graphene.Field]:
    return {
        "churnReport": costly(scoped(graphene.Field(
            ChurnReport, required=True, resolver=resolve_churn_report, args=dict(_PERIOD),
            description="Monthly churn from..to (calendar months of RAPPORT_TIMEZONE)."),
            READ), REPORT_COST),
        "churnByOwner": costly(scoped(graphene.Field(
            ChurnByOwnerReport, required=True, resolver=resolve_churn_by_owner,
            args={**_PERIOD, "min_active": graphene.Int(
                default_value=owners.DEFAULT_MIN_ACTIVE, name="minActive", description=(
                    "Owners with fewer customers active at a month's start are not ranked "
                    "that month (tiny books are noise)."))},
            description=("Monthly churn from..to per owner (the customers' current owner) "
                         "and per team, with the owners at the bottom.")), READ), REPORT_COST),
        "churnReportLink": scoped(graphene.Field(
            ReportLink, required=True, resolver=resolve_churn_report_link,
            from_=graphene.Date(name="from"), to=graphene.Date(), description=(
                "A short-lived signed link to the HTML churn report (GET /reports/churn.html) "
                "of from..to (default: the twelve months up to today), for a browser: no API "
                "key needed until it expires.")), READ),
        "winbackCampaigns": scoped(graphene.Field(
            WinbackCampaignConnection, required=True, first=graphene.Int(),
            after=graphene.String(), resolver=resolve_winback_campaigns,
            description="Win-back campaigns, newest first."), READ),
        "churnModel": scoped(graphene.Field(
            ChurnModel, resolver=resolve_churn_model,
            description="The active churn model; null when none was fitted."), READ),
        "churnWarnings": scoped(graphene.Field(
            ChurnWarningConnection, required=True, first=graphene.Int(),
            after=graphene.String(), min_risk=graphene.Float(default_value=0.0),
            resolver=resolve_churn_warnings, description=(
                "Scored customers with risk >= minRisk who are not already marked churned "
                "(an open churn record), biggest priority (risk x CLV) first (ties: customer "
                "id, descending).")), READ),
        "winbackStats": costly(scoped(graphene.Field(
            WinbackStats, required=True, resolver=resolve_winback_stats, args=dict(_PERIOD),
            description="Attempts made from..to by strategy and outcome."), READ), REPORT_COST),
    }


MUTATIONS: dict[str, type[RapportMutation]] = {
    "markCustomerChurned": MarkCustomerChurned,
    "markCustomersChurned": MarkCustomersChurned,
    "reactivateCustomer": ReactivateCustomer,
    "createWinbackCampaign": CreateWinbackCampaign,
    "recordWinbackAttempt": RecordWinbackAttempt,
    "resolveWinbackAttempt": ResolveWinbackAttempt,
}

NODE_TYPES = [ChurnRecordNode, WinbackCampaignNode, WinbackAttemptNode]
