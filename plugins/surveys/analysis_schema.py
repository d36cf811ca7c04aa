"""GraphQL of the survey analyses: ``Survey.analysis(filter, submittedAfter,
submittedBefore, options)`` and the mutation ``saveSurveyClusters``.

Every part (``descriptive``, ``nps``, ``csat``, ``correlations``, ``drivers``, ``factors``,
``reliability``, ``clusters``) has ``available`` and ``explanation``. Matrices are lists
of rows in the order of the part's ``items`` (``pearson[i][j]`` is items[i] x items[j]):
the shape heatmap components of charting libraries take; null where no coefficient
exists. Bad options are typed errors (``errors``, all parts null), too few responses are
explanations. The resolvers read the result dataclasses of ``plugins.surveys.stats``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import graphene
from graphql import GraphQLError

from api import RapportMutation, ctx, domain, error_type, global_id
from api.limits import ANALYSIS_COST, costly
from api.mutations import plain
from api.queries import CustomerFilterInput, charge_filter, customer_filter_spec
from core.errors import FieldError, UserError

from plugins.surveys import analysis as service
from plugins.surveys.errors import CODES
from plugins.surveys.stats import SurveyAnalysis
from plugins.surveys.stats.types import ClusterResult

WRITE = "surveys:write"


SurveyError = error_type("Survey", CODES)  # the same class as schema.SurveyError

Rotation = graphene.Enum("SurveyFactorRotation", [
    ("VARIMAX", "varimax"), ("OBLIMIN", "oblimin"), ("PROMAX", "promax")],
    description="VARIMAX: orthogonal; OBLIMIN, PROMAX: oblique (factors may correlate).")
MissingRule = graphene.Enum("SurveyMissingDataRule", [
    ("AUTO", "auto"), ("LISTWISE", "listwise"), ("MEAN", "mean")], description=(
    "For drivers, factor and cluster analysis (correlations are always pairwise): LISTWISE "
    "uses complete responses only, MEAN replaces a missing answer by the item mean, AUTO "
    "is listwise unless that leaves fewer than max(50, 5 per item) responses and mean "
    "imputation keeps more."))


class SurveyAnalysisOptions(graphene.InputObjectType):
    n_factors = graphene.Int(description="Extract this many factors (1-50); default: the "
                                         "parallel-analysis suggestion.")
    rotation = Rotation(description="Default VARIMAX.")
    n_clusters = graphene.Int(description="k of k-means (2-20); default: the best mean "
                                          "silhouette in clusterKMin..clusterKMax.")
    cluster_k_min = graphene.Int(name="clusterKMin", description="Default 2.")
    cluster_k_max = graphene.Int(name="clusterKMax", description="Default 8 (at most 20).")
    missing = MissingRule(description="Default AUTO.")
    seed = graphene.Int(description="Parallel analysis, sampling and k-means repeat with "
                                    "it; default 0.")


# --- Result types ---------------------------------------------------------------------------


@domain("surveys")
class SurveyFrequency(graphene.ObjectType):
    value = graphene.Int(required=True)
    count = graphene.Int(required=True)
    percent = graphene.Float(required=True, description="Of the item's answers, 0-100.")


@domain("surveys")
class SurveyItemStatistics(graphene.ObjectType):
    key = graphene.String(required=True)
    label = graphene.String(required=True)
    kind = graphene.String(required=True, description="NPS or RATING.")
    scale_min = graphene.Int(required=True)
    scale_max = graphene.Int(required=True)
    n = graphene.Int(required=True, description="Answers.")
    missing = graphene.Int(required=True)
    mean = graphene.Float()
    sd = graphene.Float(description="Sample standard deviation (n-1).")
    median = graphene.Float()
    mean_ci_low = graphene.Float(description="95% confidence interval of the mean (t).")
    mean_ci_high = graphene.Float()
    frequencies = graphene.List(graphene.NonNull(SurveyFrequency), required=True,
                                description="Every point of the scale, zeros included.")


@domain("surveys")
class SurveyOptionCount(graphene.ObjectType):
    key = graphene.String(required=True)
    label = graphene.String(required=True)
    count = graphene.Int(required=True)
    percent = graphene.Float(description="Of the responses that answered the question.")


@domain("surveys")
class SurveyChoiceStatistics(graphene.ObjectType):
    key = graphene.String(required=True)
    text = graphene.String(required=True)
    answered = graphene.Int(required=True)
    options = graphene.List(graphene.NonNull(SurveyOptionCount), required=True)


class SurveyAnalysisPart(graphene.Interface):
    available = graphene.Boolean(required=True)
    explanation = graphene.String(required=True, description=(
        "What was computed, or why it could not be (e.g. too few responses)."))


@domain("surveys")
class SurveyDescriptive(graphene.ObjectType):
    class Meta:
        interfaces = (SurveyAnalysisPart,)

    items = graphene.List(graphene.NonNull(SurveyItemStatistics), required=True,
                          description="NPS and RATING questions.")
    choices = graphene.List(graphene.NonNull(SurveyChoiceStatistics), required=True,
                            description="Choice questions: answers per option.")


@domain("surveys")
class SurveyNps(graphene.ObjectType):
    key = graphene.String(required=True)
    n = graphene.Int(required=True)
    promoters = graphene.Int(required=True)
    passives = graphene.Int(required=True)
    detractors = graphene.Int(required=True)
    promoters_pct = graphene.Float()
    passives_pct = graphene.Float()
    detractors_pct = graphene.Float()
    score = graphene.Float(description="Promoters % minus detractors %, -100..100.")
    ci_low = graphene.Float(description="95% confidence interval of the score.")
    ci_high = graphene.Float()
    method = graphene.String(required=True)


@domain("surveys")
class SurveyNpsPart(graphene.ObjectType):
    class Meta:
        interfaces = (SurveyAnalysisPart,)

    items = graphene.List(graphene.NonNull(SurveyNps), required=True)


@domain("surveys")
class SurveyCsat(graphene.ObjectType):
    key = graphene.String(required=True)
    n = graphene.Int(required=True)
    top_values = graphene.List(graphene.NonNull(graphene.Int), required=True)
    satisfied = graphene.Int(required=True)
    csat_pct = graphene.Float(description="Top-two-box share, 0-100.")


@domain("surveys")
class SurveyCsatPart(graphene.ObjectType):
    class Meta:
        interfaces = (SurveyAnalysisPart,)

    items = graphene.List(graphene.NonNull(SurveyCsat), required=True)


Matrix = graphene.List(graphene.NonNull(graphene.List(graphene.Float)), required=True)


@domain("surveys")
class SurveyCorrelations(graphene.ObjectType):
    class Meta:
        interfaces = (SurveyAnalysisPart,)

    missing_rule = graphene.String(required=True)
    items = graphene.List(graphene.NonNull(graphene.String), required=True,
                          source="keys", description="Row and column order of the matrices.")
    pearson = Matrix
    pearson_p = Matrix
    spearman = Matrix
    spearman_p = Matrix
    pair_counts = graphene.List(graphene.NonNull(graphene.List(graphene.NonNull(graphene.Int))),
                                required=True, source="n",
                                description="Responses that answered both items.")

    @staticmethod
    def resolve_explanation(root: Any, info: Any) -> str:
        return root.explanation or (f"Pearson and Spearman correlations of {len(root.keys)} "
                                    f"items; every pair has a coefficient.")


@domain("surveys")
class SurveyDriver(graphene.ObjectType):
    key = graphene.String(required=True)
    label = graphene.String(required=True)
    rank = graphene.Int(required=True)
    n = graphene.Int(required=True)
    pearson = graphene.Float()
    pearson_p = graphene.Float()
    spearman = graphene.Float()
    beta = graphene.Float(description="Standardised regression weight.")
    relative_weight = graphene.Float(description="Johnson's relative weight (share of R2).")


@domain("surveys")
class SurveyDrivers(graphene.ObjectType):
    class Meta:
        interfaces = (SurveyAnalysisPart,)

    overall_key = graphene.String()
    missing_rule = graphene.String(required=True)
    responses_used = graphene.Int(required=True, source="n_used")
    r_squared = graphene.Float()
    drivers = graphene.List(graphene.NonNull(SurveyDriver), required=True)
    warnings = graphene.List(graphene.NonNull(graphene.String), required=True)


@domain("surveys")
class SurveyItemAdequacy(graphene.ObjectType):
    key = graphene.String(required=True)
    kmo = graphene.Float()
    communality = graphene.Float()


@domain("surveys")
class SurveyFactors(graphene.ObjectType):
    class Meta:
        interfaces = (SurveyAnalysisPart,)

    missing_rule = graphene.String(required=True)
    responses_used = graphene.Int(required=True, source="n_used")
    items = graphene.List(graphene.NonNull(graphene.String), required=True, source="keys",
                          description="Row order of loadings and structure.")
    extraction = graphene.String(required=True)
    rotation = graphene.String(required=True, description="varimax, oblimin, promax or "
                                                           "none (one factor).")
    factor_count = graphene.Int(required=True, source="n_factors")
    factor_count_requested = graphene.Int(source="n_factors_requested")
    suggested_kaiser = graphene.Int(required=True)
    suggested_parallel = graphene.Int(required=True)
    eigenvalues = graphene.List(graphene.NonNull(graphene.Float), required=True)
    parallel_thresholds = graphene.List(graphene.NonNull(graphene.Float), required=True)
    loadings = Matrix
    structure = Matrix
    factor_correlations = Matrix
    variance_explained = graphene.List(graphene.NonNull(graphene.Float), required=True)
    communalities = graphene.List(graphene.NonNull(graphene.Float), required=True)
    kmo = graphene.Float()
    item_adequacy = graphene.List(graphene.NonNull(SurveyItemAdequacy), required=True,
                                  source="items")
    bartlett_chi2 = graphene.Float(name="bartlettChi2")
    bartlett_df = graphene.Int()
    bartlett_p = graphene.Float()
    converged = graphene.Boolean(required=True)
    warnings = graphene.List(graphene.NonNull(graphene.String), required=True)


@domain("surveys")
class SurveyAlphaIfDeleted(graphene.ObjectType):
    key = graphene.String(required=True)
    alpha = graphene.Float()
    item_total_correlation = graphene.Float()


@domain("surveys")
class SurveyScaleReliability(graphene.ObjectType):
    class Meta:
        interfaces = (SurveyAnalysisPart,)

    name = graphene.String(required=True)
    missing_rule = graphene.String(required=True)
    items = graphene.List(graphene.NonNull(graphene.String), required=True)
    reversed_items = graphene.List(graphene.NonNull(graphene.String), required=True)
    responses_used = graphene.Int(required=True, source="n_used")
    cronbach_alpha = graphene.Float()
    alpha_if_deleted = graphene.List(graphene.NonNull(SurveyAlphaIfDeleted), required=True)
    score_mean = graphene.Float()
    score_sd = graphene.Float()
    warnings = graphene.List(graphene.NonNull(graphene.String), required=True)


@domain("surveys")
class SurveyReliability(graphene.ObjectType):
    class Meta:
        interfaces = (SurveyAnalysisPart,)

    scales = graphene.List(graphene.NonNull(SurveyScaleReliability), required=True)


@domain("surveys")
class SurveySilhouette(graphene.ObjectType):
    k = graphene.Int(required=True)
    silhouette = graphene.Float(required=True)


@domain("surveys")
class SurveyClusterProfile(graphene.ObjectType):
    cluster = graphene.Int(required=True, description="1 = the largest cluster.")
    size = graphene.Int(required=True)
    share = graphene.Float(required=True, description="0-1 of the responses clustered.")
    means = graphene.List(graphene.NonNull(graphene.Float), required=True,
                          description="Mean answer per item (SurveyClusters.items order).")

    @staticmethod
    def resolve_cluster(root: Any, info: Any) -> int:
        return int(root.cluster) + 1


@domain("surveys")
class SurveyClusters(graphene.ObjectType):
    class Meta:
        interfaces = (SurveyAnalysisPart,)

    missing_rule = graphene.String(required=True)
    responses_used = graphene.Int(required=True, source="n_used")
    items = graphene.List(graphene.NonNull(graphene.String), required=True, source="keys")
    k = graphene.Int(required=True)
    k_requested = graphene.Int()
    silhouette = graphene.Float()
    silhouette_by_k = graphene.List(graphene.NonNull(SurveySilhouette), required=True)
    selection = graphene.String(required=True, description=(
        "How k was chosen and on how many responses (sampling is stated here)."))
    profiles = graphene.List(graphene.NonNull(SurveyClusterProfile), required=True)
    warnings = graphene.List(graphene.NonNull(graphene.String), required=True)

    @staticmethod
    def resolve_silhouette_by_k(root: ClusterResult, info: Any) -> list[SurveySilhouette]:
        return [SurveySilhouette(k=k, silhouette=v) for k, v in root.silhouette_by_k.items()]


@domain("surveys")
class SurveyAnalysisRule(graphene.ObjectType):
    analysis = graphene.String(required=True)
    missing_rule = graphene.String(required=True)
    responses_used = graphene.Int(required=True)


# --- The result's parts, from the stats dataclasses ------------------------------------------


@dataclass
class Part:
    available: bool
    explanation: str
    items: list[Any] = field(default_factory=list)
    choices: list[Any] = field(default_factory=list)
    scales: list[Any] = field(default_factory=list)


def descriptive_part(run: service.AnalysisRun) -> Part:
    analysis, matrix = run.analysis, run.matrix
    choices = [SurveyChoiceStatistics(
        key=q.key, text=q.text, answered=matrix.choice_answered.get(q.key, 0),
        options=[SurveyOptionCount(
            key=key, label=label, count=matrix.choice_counts.get(q.key, {}).get(key, 0),
            percent=(100.0 * matrix.choice_counts.get(q.key, {}).get(key, 0)
                     / matrix.choice_answered[q.key])
            if matrix.choice_answered.get(q.key) else None) for key, label in q.options])
        for q in matrix.choice_questions]
    if analysis.n_responses == 0:
        return Part(False, "No responses match: nothing to describe.", analysis.items, choices)
    return Part(True, f"{analysis.n_responses} responses; each item over its own answers "
                      "(unanswered left out).", analysis.items, choices)


def nps_part(analysis: SurveyAnalysis) -> Part:
    if not analysis.nps:
        return Part(False, "The survey has no NPS question.")
    if not any(r.n for r in analysis.nps):
        return Part(False, "No NPS answers among the responses analysed.", analysis.nps)
    return Part(True, analysis.nps[0].method, analysis.nps)


def csat_part(analysis: SurveyAnalysis) -> Part:
    if not analysis.csat:
        return Part(False, "The survey has no RATING question.")
    if not any(r.n for r in analysis.csat):
        return Part(False, "No RATING answers among the responses analysed.", analysis.csat)
    return Part(True, "CSAT: share of answers in the top two points of each rating scale.",
                analysis.csat)


def reliability_part(analysis: SurveyAnalysis) -> Part:
    scales = analysis.reliability
    if not scales:
        return Part(False, "The survey defines no scales.")
    usable = [s for s in scales if s.available]
    if not usable:
        return Part(False, "No scale could be assessed: see each scale's explanation.",
                    scales=scales)
    return Part(True, f"Cronbach's alpha for {len(usable)} of {len(scales)} scale(s); "
                      "reverse-keyed items recoded (min + max - answer).", scales=scales)


def rules_of(analysis: SurveyAnalysis) -> list[SurveyAnalysisRule]:
    rules = [SurveyAnalysisRule(analysis="descriptive", missing_rule="per item: unanswered "
                                "left out", responses_used=analysis.n_responses),
             SurveyAnalysisRule(analysis="correlations",
                                missing_rule=analysis.correlations.missing_rule,
                                responses_used=analysis.n_responses)]
    for name, part in (("drivers", analysis.drivers), ("factors", analysis.factors),
                       ("clusters", analysis.clusters)):
        rules.append(SurveyAnalysisRule(analysis=name, missing_rule=part.missing_rule,
                                        responses_used=part.n_used))
    rules += [SurveyAnalysisRule(analysis=f"reliability: {s.name}", missing_rule=s.missing_rule,
                                 responses_used=s.n_used) for s in analysis.reliability]
    return rules


@domain("surveys")
class SurveyAnalysisResult(graphene.ObjectType):
    """The analyses of a survey's responses (all, a segment and/or a period)."""

    class Meta:
        name = "SurveyAnalysis"

    errors = graphene.List(graphene.NonNull(SurveyError), required=True,
                           description="Bad filter or options: every other field is null.")
    responses_used = graphene.Int(description="Responses that matched the filter.")
    rules = graphene.List(graphene.NonNull(SurveyAnalysisRule),
                          description="Missing-data rule and responses used per analysis.")
    warnings = graphene.List(graphene.NonNull(graphene.String),
                             description="Problems with the data as a whole.")
    descriptive = graphene.Field(SurveyDescriptive)
    nps = graphene.Field(SurveyNpsPart)
    csat = graphene.Field(SurveyCsatPart)
    correlations = graphene.Field(SurveyCorrelations)
    drivers = graphene.Field(SurveyDrivers)
    factors = graphene.Field(SurveyFactors)
    reliability = graphene.Field(SurveyReliability)
    clusters = graphene.Field(SurveyClusters)


def _error(error: FieldError) -> Any:
    return SurveyError(field=error.field, message=error.message, code=error.code)


def result_of(run: service.AnalysisRun) -> SurveyAnalysisResult:
    a = run.analysis
    return SurveyAnalysisResult(
        errors=[], responses_used=a.n_responses, rules=rules_of(a), warnings=a.warnings,
        descriptive=descriptive_part(run), nps=nps_part(a), csat=csat_part(a),
        correlations=a.correlations, drivers=a.drivers, factors=a.factors,
        reliability=reliability_part(a), clusters=a.clusters)


def analysis_arguments(args: dict[str, Any], info: Any) -> dict[str, Any]:
    """The service's keyword arguments from GraphQL's (``UserError`` for a bad filter; a
    plugin's filter field the caller may not use is FORBIDDEN)."""
    data = plain(args)
    segment = None
    if data.get("filter"):
        # Figures over the customers a filter picks are customer data (a filter on birth
        # dates or attributes is an oracle otherwise): customers:read, as loyaltyMatrix.
        if not ctx(info).principal.allows("customers:read"):
            raise GraphQLError(f"Filtering {info.field_name} by customers needs the "
                               f"customers:read scope, which this API key lacks.",
                               extensions={"code": "FORBIDDEN"})
        try:
            segment = customer_filter_spec(data["filter"], ctx(info).principal)
        except UserError as exc:
            raise UserError([e.prefixed("filter") for e in exc.errors]) from None
        charge_filter(info, segment)  # a saved segment's stored search (api/limits.py)
    period = {key: data[key].isoformat() for key in ("submitted_after", "submitted_before")
              if data.get(key) is not None}
    return {"segment": segment, "period": period, "options": data.get("options")}


def resolve_analysis(root: Any, info: Any, **args: Any) -> SurveyAnalysisResult:
    try:
        return result_of(service.run_analysis(root, **analysis_arguments(args, info)))
    except UserError as exc:
        return SurveyAnalysisResult(errors=[_error(e) for e in exc.errors])


def _scope_arguments() -> dict[str, Any]:
    return {
        "filter": CustomerFilterInput(description=(
            "Only the responses of the customers in this segment (not for anonymous "
            "surveys).")),
        "submitted_after": graphene.DateTime(description="Responses submitted at or after."),
        "submitted_before": graphene.DateTime(description="Responses submitted at or "
                                                          "before."),
        "options": SurveyAnalysisOptions(),
    }


def analysis_field() -> graphene.Field:
    # Loads the responses and runs every analysis in Python, once per survey selected.
    return costly(graphene.Field(SurveyAnalysisResult, required=True, resolver=resolve_analysis,
                                 description=(
        "Every analysis of the responses (surveys:read). Computed on request; parts that "
        "need more responses say so in their explanation."), **_scope_arguments()),
        ANALYSIS_COST)


# --- saveSurveyClusters ----------------------------------------------------------------------


@domain("surveys")
class SurveyClusterTag(graphene.ObjectType):
    cluster = graphene.Int(required=True, description="1 = the largest cluster.")
    tag = graphene.String(required=True)
    customers = graphene.Int(required=True, description="Customers newly given the tag.")


class SaveSurveyClustersInput(graphene.InputObjectType):
    survey_id = graphene.ID(required=True)
    filter = CustomerFilterInput()
    submitted_after = graphene.DateTime()
    submitted_before = graphene.DateTime()
    options = SurveyAnalysisOptions()
    tag_prefix = graphene.String(required=True, description=(
        "Tags are <prefix>-1 (largest cluster) .. <prefix>-k; an earlier save's tags with "
        "this prefix are removed first."))


class SaveSurveyClusters(RapportMutation):
    """Tag each customer with the cluster of their latest clustered response (named
    surveys only; one statement per cluster)."""

    class Arguments:
        input = SaveSurveyClustersInput(required=True)

    clusters = graphene.Field(SurveyClusters)
    tags = graphene.List(graphene.NonNull(SurveyClusterTag))
    removed_tags = graphene.Int(description="Tags of an earlier save taken away.")
    scope = WRITE
    error_type = SurveyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> SaveSurveyClusters:
        survey_id = global_id(input, "survey_id", "Survey")
        arguments = analysis_arguments(input, info)
        saved = service.save_clusters(survey_id, input.get("tag_prefix", ""),  # type: ignore[arg-type]
                                      **arguments)
        return cls(clusters=saved.run.analysis.clusters, removed_tags=saved.removed,
                   tags=[SurveyClusterTag(cluster=i + 1, tag=tag, customers=count)
                         for i, (tag, count) in enumerate(saved.tags)])


__all__ = ["SaveSurveyClusters", "SurveyAnalysisResult", "analysis_field"]
