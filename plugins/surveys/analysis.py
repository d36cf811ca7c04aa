"""Survey analysis as a service: load the responses (all, a customer segment and/or a
submission period), map them to the statistics' inputs, analyse; save clusters as tags.

``analyse_survey`` is what GraphQL (``Survey.analysis``), the report (CLI and HTTP) and the
benchmark call. Options are validated here (typed errors on ``options.*``); problems of
the data (too few responses, constant items) are never errors: each part of the result
says whether it is ``available`` and why not (``plugins.surveys.stats``). See
docs/surveys.md "Analysis".
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from marshmallow import RAISE, ValidationError, fields, validate, validates_schema
from sqlalchemy import select

from core.db import MAX_ID, db
from core.errors import ErrorCode, UserError, errors_from_marshmallow
from core.lazy import lazy_module
from core.models import Customer
from core.schemas import InputSchema, UTCDateTimeField
from core.services import load, not_found, transaction
from core.services.segments import customer_conditions, validate_filter
from core.services.tags import add_tag, normalise_tag, remove_tags

from plugins.surveys.data import ResponseMatrix, load_matrix
from plugins.surveys.errors import SurveyErrorCode
from plugins.surveys.models import QuestionType, Survey
from plugins.surveys.stats import AnalysisOptions, Item, ScaleSpec, SurveyAnalysis, analyse

if TYPE_CHECKING:
    import numpy as np
else:  # imported on first use: the app starts without the statistics stack
    np = lazy_module("numpy")

#: Upper bound of k (requested or searched) and of requested factors.
MAX_CLUSTERS = 20
MAX_FACTORS = 50
#: Tags are ``<prefix>-<cluster number>``: the prefix leaves room for the number.
MAX_TAG_PREFIX = 60


class AnalysisOptionsSchema(InputSchema):
    """Options of ``analyse_survey`` (GraphQL ``SurveyAnalysisOptions``); all optional."""

    class Meta:
        unknown = RAISE

    n_factors = fields.Integer(allow_none=True, strict=True,
                               validate=validate.Range(1, MAX_FACTORS))
    rotation = fields.String(validate=validate.OneOf(["varimax", "oblimin", "promax"]))
    n_clusters = fields.Integer(allow_none=True, strict=True,
                                validate=validate.Range(2, MAX_CLUSTERS))
    cluster_k_min = fields.Integer(strict=True, validate=validate.Range(2, MAX_CLUSTERS))
    cluster_k_max = fields.Integer(strict=True, validate=validate.Range(2, MAX_CLUSTERS))
    missing = fields.String(validate=validate.OneOf(["auto", "listwise", "mean"]))
    seed = fields.Integer(strict=True, validate=validate.Range(0, 2**31 - 1))

    @validates_schema
    def _k_range(self, data: dict[str, Any], **kwargs: Any) -> None:
        low, high = data.get("cluster_k_min", 2), data.get("cluster_k_max", 8)
        if low > high:
            raise ValidationError(f"clusterKMin ({low}) is above clusterKMax ({high}).",
                                  "cluster_k_min")


class PeriodSchema(InputSchema):
    class Meta:
        unknown = RAISE

    submitted_after = UTCDateTimeField(allow_none=True)
    submitted_before = UTCDateTimeField(allow_none=True)

    @validates_schema
    def _order(self, data: dict[str, Any], **kwargs: Any) -> None:
        after, before = data.get("submitted_after"), data.get("submitted_before")
        if after is not None and before is not None and after > before:
            raise ValidationError("submittedAfter is later than submittedBefore.",
                                  "submitted_after")


def analysis_options(raw: Mapping[str, Any] | None) -> AnalysisOptions:
    """The statistics' options from the API's (snake_case) ones; ``UserError`` on
    ``options.*``."""
    try:
        data = AnalysisOptionsSchema().load(dict(raw or {}))
    except ValidationError as exc:
        raise UserError(errors_from_marshmallow(exc, "options")) from None
    defaults = AnalysisOptions()
    return AnalysisOptions(
        n_factors=data.get("n_factors"), rotation=data.get("rotation", defaults.rotation),
        n_clusters=data.get("n_clusters"),
        cluster_k_range=(data.get("cluster_k_min", defaults.cluster_k_range[0]),
                         data.get("cluster_k_max", defaults.cluster_k_range[1])),
        missing=data.get("missing", defaults.missing), seed=data.get("seed", defaults.seed))


def stats_inputs(matrix: ResponseMatrix) -> tuple[list[Item], list[ScaleSpec], str | None]:
    """The items, scales and overall key ``stats.analyse`` takes for ``matrix``."""
    items = [Item(q.key, "NPS" if q.type is QuestionType.NPS else "RATING", q.scale_min,
                  q.scale_max, q.text) for q in matrix.questions]
    scales = [ScaleSpec(s.name, tuple(k for k, _ in s.items),
                        tuple(k for k, reverse in s.items if reverse)) for s in matrix.scales]
    overall = matrix.overall_key if matrix.overall_key in matrix.keys else None
    return items, scales, overall


@dataclass
class AnalysisRun:
    """One analysis with what it ran on."""

    survey: Survey
    matrix: ResponseMatrix
    analysis: SurveyAnalysis
    options: AnalysisOptions
    segment: dict[str, Any] | None = None
    submitted_after: dt.datetime | None = None
    submitted_before: dt.datetime | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    """``load`` (database to matrix) and ``compute`` (the statistics)."""


def _survey(survey: Survey | int) -> Survey:
    if isinstance(survey, Survey):
        return survey
    found = db.session.get(Survey, survey) if 0 < survey <= MAX_ID else None
    if found is None:
        raise not_found("survey", survey, "surveyId", type_name="Survey")
    return found


def run_analysis(survey: Survey | int, *, segment: Mapping[str, Any] | None = None,
                 period: Mapping[str, Any] | None = None,
                 options: Mapping[str, Any] | None = None) -> AnalysisRun:
    """Analyse ``survey``'s responses.

    ``segment``: a customer filter already validated by ``core.services.segments``
    (``validate_filter``, or ``api.queries.customer_filter_spec``); an empty one means all
    responses; a non-empty one on an anonymous survey is a ``NOT_ALLOWED`` error on
    ``filter``. ``period``: ``submitted_after`` / ``submitted_before`` (ISO 8601 or
    datetimes). ``options``: see ``AnalysisOptionsSchema``. All checked before any
    query runs on the responses.
    """
    stats_options = analysis_options(options)
    bounds = load(PeriodSchema(), dict(period or {}))
    found = _survey(survey)
    spec = dict(segment) if segment else None
    customers = select(Customer.id).where(*customer_conditions(spec)) if spec else None
    started = time.perf_counter()
    matrix = load_matrix(found, customers, submitted_after=bounds.get("submitted_after"),
                         submitted_before=bounds.get("submitted_before"))
    loaded = time.perf_counter()
    items, scales, overall = stats_inputs(matrix)
    result = analyse(matrix.values, items, scales, overall, stats_options)
    done = time.perf_counter()
    return AnalysisRun(found, matrix, result, stats_options, spec,
                       bounds.get("submitted_after"), bounds.get("submitted_before"),
                       {"load": loaded - started, "compute": done - loaded})


def analyse_survey(survey_id: int, filter: Mapping[str, Any] | None = None,
                   options: Mapping[str, Any] | None = None,
                   period: Mapping[str, Any] | None = None) -> SurveyAnalysis:
    """Every analysis of the survey's responses (see ``run_analysis``)."""
    return run_analysis(survey_id, segment=filter, period=period, options=options).analysis


# --- The HTML report -------------------------------------------------------------------------


def describe_scope(run: AnalysisRun) -> str:
    """The subtitle of a report: responses, and the segment and period they come from."""
    parts = [f"{run.analysis.n_responses:,} responses"]
    if run.segment:
        conditions = "; ".join(
            f"{key.replace('_', ' ')} {', '.join(map(str, value))}"
            if isinstance(value, list) else f"{key.replace('_', ' ')} {value}"
            for key, value in run.segment.items())
        parts.append(f"customers with {conditions}")
    if run.submitted_after is not None:
        parts.append(f"submitted from {run.submitted_after:%Y-%m-%d %H:%M} UTC")
    if run.submitted_before is not None:
        parts.append(f"submitted until {run.submitted_before:%Y-%m-%d %H:%M} UTC")
    return ", ".join(parts)


def report_html(run: AnalysisRun, generated_at: dt.datetime | None = None) -> str:
    """The self-contained HTML page (``plugins.surveys.report``) of ``run``."""
    from plugins.surveys.report import render_report  # matplotlib: only when a page is made

    return render_report(run.survey.title, run.analysis, subtitle=describe_scope(run),
                         generated_at=generated_at, matrix=run.matrix)


def segment_from_options(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """A segment from the report's simple options (``city``, ``country``, ``tags_all``:
    lists), validated like any customer filter; None when none is given."""
    given = {key: list(values) for key, values in raw.items() if values}
    if not given:
        return None
    try:
        return validate_filter(given)
    except UserError as exc:
        raise UserError([e.prefixed("filter") for e in exc.errors]) from None


# --- Clusters as customer tags ----------------------------------------------------------------


@dataclass
class SavedClusters:
    run: AnalysisRun
    #: (tag, customers given it), cluster 1 first (the largest).
    tags: list[tuple[str, int]]
    removed: int
    """Tags of an earlier save with the same prefix taken away first."""


def cluster_tag(prefix: str, cluster: int) -> str:
    return f"{prefix}-{cluster + 1}"


def latest_cluster_by_customer(matrix: ResponseMatrix, labels: list[int | None]
                               ) -> dict[int, np.ndarray]:
    """Cluster -> the customers whose latest clustered response fell in it."""
    if matrix.customer_ids is None:
        return {}
    codes = np.array([-1 if label is None else label for label in labels], dtype=np.int64)
    keep = codes >= 0
    customers, codes = matrix.customer_ids[keep], codes[keep]
    # Rows are in response-id order: a customer's last row is its latest response.
    unique, last_reversed = np.unique(customers[::-1], return_index=True)
    latest = codes[len(codes) - 1 - last_reversed]
    return {int(c): unique[latest == c] for c in np.unique(latest)}


def save_clusters(survey_id: int, tag_prefix: str, *, segment: Mapping[str, Any] | None = None,
                  period: Mapping[str, Any] | None = None,
                  options: Mapping[str, Any] | None = None) -> SavedClusters:
    """Run the analysis and tag each customer with the cluster of their latest clustered
    response: ``<prefix>-1`` (the largest cluster) ... ``<prefix>-k``. Tags of an earlier
    save with this prefix (``<prefix>-1`` .. ``<prefix>-20``) are removed from every
    customer first, so the tags always describe the latest save. One statement per
    cluster (plus one DELETE), in one transaction. Anonymous surveys: ``ANONYMITY``."""
    prefix = normalise_tag(tag_prefix, "tagPrefix")
    if len(prefix) > MAX_TAG_PREFIX:
        raise UserError.single(f"Use a prefix of at most {MAX_TAG_PREFIX} characters.",
                               ErrorCode.INVALID, "tagPrefix")
    survey = _survey(survey_id)
    if survey.anonymous:
        raise UserError.single("An anonymous survey keeps no customers: its clusters "
                               "cannot be saved as customer tags.", SurveyErrorCode.ANONYMITY,
                               "surveyId")
    run = run_analysis(survey, segment=segment, period=period, options=options)
    clusters = run.analysis.clusters
    if not clusters.available:
        raise UserError.single(f"No clusters to save: {clusters.explanation}",
                               SurveyErrorCode.INSUFFICIENT_DATA, "surveyId")
    groups = latest_cluster_by_customer(run.matrix, clusters.labels)
    with transaction():
        removed = remove_tags([cluster_tag(prefix, c) for c in range(MAX_CLUSTERS)])
        tags = [(cluster_tag(prefix, c),
                 add_tag(groups[c].tolist(), cluster_tag(prefix, c)) if c in groups else 0)
                for c in range(clusters.k)]
    return SavedClusters(run, tags, removed)


__all__ = ["AnalysisOptionsSchema", "AnalysisRun", "SavedClusters", "analyse_survey",
           "analysis_options", "describe_scope", "report_html", "run_analysis",
           "save_clusters", "segment_from_options", "stats_inputs"]
