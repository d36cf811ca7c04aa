"""The churn jobs: fitting the models, scoring every customer, the HTML report and the
churn-rate check (``rapport churn fit | score | report --out | check`` run the same
functions).

``churn.score`` fans out: it opens a scoring run, splits the customers into ``chunks`` id
ranges and returns one ``churn.score_chunk`` child job per range, run by whichever workers
are free (several machines, one PostgreSQL); the child that ends last publishes the run
(docs/churn.md, "Scoring across workers").
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from core.app import rapport
from core.dates import DateError, parse_moment
from core.db import utcnow
from core.ids import global_id
from core.jobs import FanOut, JobKind, Progress
from core.services import transaction

from plugins.churn import modeling, report
from plugins.churn.schemas import PeriodSchema

REPORT_FILE = "churn-report.html"


class PeriodEnd(fields.Field):
    """A date that ends a period (CONTRACTS "Dates"): ``YYYY-MM-DD`` means up to 00:00 of
    the next day in RAPPORT_TIMEZONE; a datetime is exact (without a zone: UTC); dates
    before 1900-01-01 or after 9998-12-31 are refused."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any
                   ) -> str | None:
        # Stored with the job as the exact instant, which loads back to itself.
        return None if value is None else value.isoformat()

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any
                     ) -> dt.datetime:
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        if not isinstance(value, str):
            raise ValidationError("Give a date (YYYY-MM-DD) or an ISO 8601 datetime.")
        try:
            return parse_moment(value, rapport().settings.tz, ends=True)
        except DateError as exc:
            raise ValidationError(exc.errors[0].message) from None


def _as_of_field(description: str = "default: when the job runs") -> PeriodEnd:
    return PeriodEnd(data_key="asOf", load_default=None, allow_none=True, metadata={
        "description": f"{description}; a date means up to the end of that day in "
                       f"RAPPORT_TIMEZONE, a datetime is exact (no zone: UTC)"})


def _aware_as_of() -> PeriodEnd:
    return _as_of_field()


class FitParameters(Schema):
    as_of = _aware_as_of()
    time_unit = fields.String(data_key="timeUnit", load_default="day",
                              validate=validate.OneOf(["day", "week"]))
    classifier = fields.String(load_default="logistic", validate=validate.OneOf(
        ["logistic", "knn", "gradient_boosting"]))
    horizon_days = fields.Integer(data_key="horizonDays", load_default=90,
                                  validate=validate.Range(1, modeling.MAX_HORIZON_DAYS))


#: Chunk jobs of a churn.score job: a few per worker keeps them busy to the end.
DEFAULT_SCORE_CHUNKS = 8


class ScoreParameters(Schema):
    as_of = _as_of_field("the scoring date (default: when the job runs)")
    chunk_size = fields.Integer(data_key="chunkSize", load_default=modeling.DEFAULT_SCORE_CHUNK,
                                validate=validate.Range(100, 200_000),
                                metadata={"description": "customers per query batch"})
    chunks = fields.Integer(load_default=DEFAULT_SCORE_CHUNKS,
                            validate=validate.Range(1, modeling.MAX_SCORE_PARTS),
                            metadata={"description": "child jobs the run is split into"})


class ScoreChunkParameters(Schema):
    run = fields.Integer(required=True, validate=validate.Range(1))
    after = fields.Integer(required=True)
    up_to = fields.Integer(data_key="upTo", required=True)
    customers = fields.Integer(required=True, validate=validate.Range(0))
    chunk_size = fields.Integer(data_key="chunkSize", load_default=modeling.DEFAULT_SCORE_CHUNK,
                                validate=validate.Range(100, 200_000))


class CheckParameters(Schema):
    as_of = _aware_as_of()


def _steps(progress: Progress, label: str) -> modeling.Progress:
    def report_step(done: int, total: int) -> None:
        progress(done / max(total, 1), f"{label}: {done} of {total}")

    return report_step


def fit(parameters: dict[str, Any], progress: Progress) -> dict[str, Any]:
    version = modeling.fit_models(parameters.get("as_of") or utcnow(),
                                  parameters["time_unit"], parameters["classifier"],
                                  parameters["horizon_days"],
                                  progress=_steps(progress, "training features"))
    return {"modelVersion": version.id, "kind": version.kind,
            "asOf": version.as_of.isoformat(), "timeUnit": version.time_unit.value,
            "params": version.params, "metrics": version.metrics}


def score(parameters: dict[str, Any], progress: Progress) -> FanOut:
    progress(0.0, "planning the scoring run")
    plan = modeling.plan_scoring(parameters["chunks"], job_id=progress.job_id,
                                 chunk_size=parameters["chunk_size"],
                                 as_of=parameters.get("as_of"))
    return FanOut("churn.score_chunk", [
        {"run": plan.run_id, "after": after, "upTo": up_to, "customers": size,
         "chunkSize": parameters["chunk_size"]}
        for (after, up_to), size in zip(plan.ranges, plan.sizes)], {"run": plan.run_id})


def score_chunk(parameters: dict[str, Any], progress: Progress) -> dict[str, Any]:
    totals = modeling.score_range(parameters["run"], (parameters["after"], parameters["up_to"]),
                                  parameters["chunk_size"],
                                  _steps(progress, "customers scored"),
                                  parameters["customers"])
    return totals.to_json()


def publish_scores(parameters: dict[str, Any], state: dict[str, Any],
                   results: list[dict[str, Any]], progress: Progress) -> dict[str, Any]:
    progress(0.99, "publishing the scores")
    summary = modeling.publish_run(state["run"],
                                   [modeling.RangeTotals.from_json(r) for r in results])
    return {"modelVersion": summary.model_version,
            "scoredAt": summary.scored_at.isoformat(), "customers": summary.customers,
            "withPurchases": summary.with_purchases, "meanRisk": summary.mean_risk,
            "highRisk": summary.high_risk, "totalClv": summary.total_clv,
            "removedOldScores": summary.removed_old_scores, "notes": list(summary.notes)}


def abandon_scores(parameters: dict[str, Any], state: dict[str, Any], reason: str) -> None:
    modeling.abandon_run(state["run"], reason)


def html_report(parameters: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from plugins.churn.html_report import STEPS, render_churn_report

    advance = progress.counter(STEPS, "step {done} of {total}")
    # Owner names and teams are agents' data, and a job's file is downloaded by any key
    # with churn:read and jobs:read: a job's file shows owners by global id, without
    # teams, whoever started it. Run here (``rapport churn report --out``, no job), the
    # operator's own file keeps the names.
    page = render_churn_report(parameters["period_from"], parameters["period_to"],
                               progress=advance, show_names=progress.job_id is None)
    out = progress.output_path(REPORT_FILE)
    # Written beside the target, then renamed over it: a failed run leaves an older
    # report whole instead of truncated.
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.write_text(page, encoding="utf-8")
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return {"from": parameters["period_from"].isoformat(),
            "to": parameters["period_to"].isoformat()}


def check(parameters: dict[str, Any], progress: Progress) -> dict[str, Any]:
    now = parameters.get("as_of") or utcnow()
    previous = now.astimezone(report.business_tz()).replace(day=1) - dt.timedelta(days=1)
    progress(0.0, "checking the churn rate")
    with transaction():
        jumps = report.check_churn_jumps([now, previous], now=now)
    return {"asOf": now.isoformat(), "jumps": [
        {"month": j.month, "churnRate": j.churn_rate, "trailingMean": j.trailing_mean,
         "churned": j.churned, "activeAtStart": j.active_at_start,
         "alertId": None if j.alert_id is None else global_id("Alert", j.alert_id)}
        for j in jumps]}


CHURN_JOB_KINDS = [
    JobKind("churn.fit", FitParameters, "churn", fit,
            "Fit BG/NBD, Gamma-Gamma and the classifier; store them as the active model."),
    JobKind("churn.score", ScoreParameters, "churn", score,
            "Score every customer with the active model (risk, P(alive), CLV), split into "
            "chunk jobs run by any free workers.", finish=publish_scores,
            abandon=abandon_scores),
    JobKind("churn.score_chunk", ScoreChunkParameters, "churn", score_chunk,
            "One id range of a churn.score run (started by churn.score only).",
            internal=True),
    JobKind("churn.report", PeriodSchema, "churn", html_report,
            "The churn report of a period as one self-contained HTML page (a file)."),
    JobKind("churn.check", CheckParameters, "churn", check,
            "Alert (once per month) when a month's churn rate jumps over its trailing mean."),
]
