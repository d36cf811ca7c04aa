"""The churn report: one self-contained HTML page with charts (built on ``core.reports``).

``render_churn_report(from, to)`` reads the database and draws:

- monthly churn and retention rates (``report.churn_report``: the figures of
  ``churnReport``), with the table of monthly figures;
- the retention curve: per cohort (the month customers started to exist), the share not
  churned k months later, with the mean curve weighted by cohort size;
- churn records of the period by reason and by type (bar charts and a table);
- churn by advisor (``owners.owner_report``: the figures of ``churnByOwner``): each
  owner's churn rate over the period (bars, the owners at the bottom three months running
  in red) with the table of owners, their bottom months and the months running; owner
  names and teams only for a reader allowed agents:read (``show_names``), else global ids;
- the distribution of the stored risk (histogram; the buckets are counted in SQL, so a
  million scores never leave the database), with the top-20 warning list by priority;
- the P(alive) matrix of the active BG/NBD model: P(alive | frequency x, recency t_x, T)
  on a grid of x and t_x at one age T (the oldest scored customer's, else the oldest
  purchase's at the calibration date), as Fader, Hardie & Lee draw it: customers who
  bought often but not lately are the likely dead; for an sBG (subscription) model,
  survival and renewal rates by period instead (P(alive) by frequency and recency is
  BG/NBD's, drawn only when the version also fitted it on purchases);
- the parameters and metrics of the active model version, under labels people read (not
  the stored keys), with its notes and a warning when the classifier is no better than
  chance.

A part without data (no churn record, no model fitted, nothing scored yet) says so in a
sentence instead of drawing an empty chart. Every query is an aggregate or a LIMIT 20:
memory does not grow with the number of customers or scores.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, case, cast, func, select

from core.db import db, utcnow
from core.ids import global_id
from core.lazy import lazy_module
from core.models import Customer, CustomerStatus, Interaction
from core.reports import PALETTE, HtmlReport, figure_svg, fmt, new_figure, style_axes

from plugins.churn import btyd, owners, sbg
from plugins.churn.features import PURCHASE
from plugins.churn.modeling import still_customer
from plugins.churn.models import (
    ChurnModelVersion, ChurnReason, ChurnScore, ChurnType, TimeUnit,
)
from plugins.churn.report import ChurnReport, churn_report

if TYPE_CHECKING:
    import numpy as np
    from matplotlib import ticker
else:  # imported when a report is drawn: the app starts without the statistics stack
    np = lazy_module("numpy")
    ticker = lazy_module("matplotlib.ticker")

#: Buckets of the risk histogram (width 1 / RISK_BUCKETS).
RISK_BUCKETS = 20
#: Customers in the warning table.
TOP_WARNINGS = 20
#: The P(alive) grid: frequencies 0..max (at most MAX_GRID_FREQUENCY), GRID_RECENCIES
#: recency columns from 0 to T.
MAX_GRID_FREQUENCY = 40
MIN_GRID_FREQUENCY = 5
GRID_RECENCIES = 40
#: Owners drawn in the advisor chart (the worst period rates; the table lists them all).
ADVISOR_CHART_OWNERS = 25
#: Months shown in the cohort table (the chart shows them all).
COHORT_TABLE_MONTHS = (0, 1, 2, 3, 6, 9, 12, 18, 24)
HIGH_RISK = 0.5

NO_MODEL = ("No churn model is fitted yet: run `rapport churn fit` (it needs purchases), "
            "then `rapport churn score`.")
NO_SCORES = ("No customer is scored yet: run `rapport churn score` after `rapport churn fit`.")


def _pct(value: float | None) -> str:
    return fmt(value, 2, percent=True)


# --- Data read from the database ------------------------------------------------------------


@dataclass
class ScoreOverview:
    version_id: int
    customers: int
    mean_risk: float
    high_risk: int
    total_clv: float | None
    max_frequency: int | None
    max_age: float | None
    histogram: list[int]


def active_model() -> ChurnModelVersion | None:
    return db.session.scalars(select(ChurnModelVersion)
                              .where(ChurnModelVersion.active.is_(True))
                              .order_by(ChurnModelVersion.id.desc()).limit(1)).first()


def score_overview() -> ScoreOverview | None:
    """Aggregates of the scores read by the API (the newest version with scores): two
    GROUP BY queries over ``churn_scores``."""
    version_id = db.session.scalar(select(func.max(ChurnScore.model_version_id)))
    if version_id is None:
        return None
    of_version = ChurnScore.model_version_id == version_id
    count, mean, high, clv, max_x, max_t = db.session.execute(
        select(func.count(), func.avg(ChurnScore.risk),
               func.sum(case((ChurnScore.risk >= HIGH_RISK, 1), else_=0)),
               func.sum(ChurnScore.clv), func.max(ChurnScore.frequency),
               func.max(ChurnScore.T)).where(of_version)).one()
    # risk is in [0, 1] (a CHECK constraint): SQLite's truncation is the floor there; a
    # risk of exactly 1 joins the top bucket below.
    scaled = ChurnScore.risk * RISK_BUCKETS
    bucket = cast(scaled, Integer) if db.session.get_bind().dialect.name == "sqlite" \
        else func.floor(scaled)
    histogram = [0] * RISK_BUCKETS
    for index, number in db.session.execute(select(bucket.label("bucket"), func.count())
                                            .where(of_version).group_by("bucket")):
        histogram[min(max(int(index), 0), RISK_BUCKETS - 1)] += int(number)
    return ScoreOverview(int(version_id), int(count), float(mean or 0.0), int(high or 0),
                         None if clv is None else float(clv),
                         None if max_x is None else int(max_x),
                         None if max_t is None else float(max_t), histogram)


def top_warnings(version_id: int, limit: int = TOP_WARNINGS) -> list[Any]:
    """The ``limit`` scores of the version with the highest priority (risk x CLV), with the
    customer's name, leaving out customers already churned as the API and the CSV do: one
    query on the (model_version_id, priority) index."""
    return list(db.session.execute(
        select(ChurnScore, Customer.name)
        .join(Customer, Customer.id == ChurnScore.customer_id)
        .where(ChurnScore.model_version_id == version_id,
               Customer.status != CustomerStatus.ERASED, still_customer())
        .order_by(ChurnScore.priority.desc(), ChurnScore.customer_id.desc())
        .limit(limit)).all())


def oldest_purchase_age(version: ChurnModelVersion) -> float | None:
    """The age T of the oldest buyer at the calibration date, in the model's unit."""
    first = db.session.scalar(select(func.min(Interaction.occurred_at)).where(
        Interaction.kind == PURCHASE, Interaction.occurred_at <= version.as_of))
    if first is None:
        return None
    days = (version.as_of - first).total_seconds() / 86400.0
    return days / (7.0 if version.time_unit == TimeUnit.WEEK else 1.0)


def bgnbd_tuple(version: ChurnModelVersion) -> tuple[float, float, float, float] | None:
    """(r, alpha, a, b) of the version's BG/NBD fit, or None when it has none."""
    found = (version.params or {}).get("bgnbd")
    if not isinstance(found, dict):
        return None
    try:
        values = tuple(float(found[key]) for key in ("r", "alpha", "a", "b"))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) and v > 0 for v in values):
        return None
    return values  # type: ignore[return-value]


def p_alive_grid(params: tuple[float, float, float, float], max_frequency: int, age: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(alive) for frequencies 0..max_frequency (rows) and GRID_RECENCIES recencies from
    0 to ``age`` (columns). Row 0 is 1 at recency 0 and undefined elsewhere (without a
    repeat purchase the recency is 0 by definition)."""
    frequencies = np.arange(max_frequency + 1, dtype=float)
    recencies = np.linspace(0.0, age, GRID_RECENCIES)
    x, t_x = np.meshgrid(frequencies[1:], recencies, indexing="ij")
    grid = np.full((frequencies.size, recencies.size), np.nan)
    grid[0, 0] = 1.0
    grid[1:, :] = btyd.probability_alive(params, x.ravel(), t_x.ravel(),
                                         np.full(x.size, age)).reshape(x.shape)
    return frequencies, recencies, grid


# --- Charts ---------------------------------------------------------------------------------


def monthly_chart(figures: ChurnReport) -> str:
    fig = new_figure(7.5, 3.4)
    ax = fig.gca()
    labels = [m.month for m in figures.months]
    positions = np.arange(len(labels))
    churn = [np.nan if m.churn_rate is None else 100 * m.churn_rate for m in figures.months]
    ax.bar(positions, churn, color=PALETTE[1], label="churn rate")
    ax.set_ylabel("churn rate (%)")
    ax.set_xticks(positions, labels, rotation=60 if len(labels) > 8 else 0, ha="right"
                  if len(labels) > 8 else "center", fontsize=8)
    style_axes(ax)
    retention = ax.twinx()
    retention.plot(positions, [np.nan if m.retention_rate is None else 100 * m.retention_rate
                               for m in figures.months], color=PALETTE[0], marker="o",
                   markersize=3, label="retention rate")
    retention.set_ylabel("retention rate (%)")
    retention.spines["top"].set_visible(False)
    handles = ax.get_legend_handles_labels()[0] + retention.get_legend_handles_labels()[0]
    ax.legend(handles, ["churn rate", "retention rate"], loc="upper left", fontsize=8,
              frameon=False)
    return figure_svg(fig)


def mean_retention(figures: ChurnReport) -> list[float]:
    """Retention k months after the start, averaged over the cohorts observed that long,
    weighted by cohort size."""
    longest = max((len(c.retention) for c in figures.cohorts), default=0)
    curve = []
    for k in range(longest):
        seen = [(c.size, c.retention[k]) for c in figures.cohorts if len(c.retention) > k]
        curve.append(sum(s * r for s, r in seen) / sum(s for s, _ in seen))
    return curve


def retention_chart(figures: ChurnReport) -> str:
    fig = new_figure(7.0, 3.4)
    ax = fig.gca()
    for cohort in figures.cohorts:
        ax.plot(range(len(cohort.retention)), [100 * r for r in cohort.retention],
                color=PALETTE[8], alpha=0.35, linewidth=0.9)
    curve = mean_retention(figures)
    ax.plot(range(len(curve)), [100 * r for r in curve], color=PALETTE[0], linewidth=2.4,
            marker="o", markersize=3, label="all cohorts (weighted by size)")
    ax.set_xlabel("months since the cohort's month (0: its own month)")
    ax.set_ylabel("customers retained (%)")
    ax.set_ylim(bottom=max(0.0, min(100 * min(curve, default=1.0) - 10, 90.0)), top=100.5)
    ax.legend(fontsize=8, frameon=False, loc="lower left")
    style_axes(ax)
    return figure_svg(fig)


def tracking_chart(validation: dict[str, Any]) -> str:
    """Cumulative repeat purchase days by week of the holdout, actual against predicted."""
    fig = new_figure(7.0, 3.2)
    ax = fig.gca()
    weeks = [t["week"] for t in validation["tracking"]]
    ax.plot(weeks, [t["actual"] for t in validation["tracking"]], color=PALETTE[0],
            linewidth=2.2, marker="o", markersize=3, label="actual")
    ax.plot(weeks, [t["predicted"] for t in validation["tracking"]], color=PALETTE[4],
            linewidth=1.6, linestyle="--", label="predicted (BG/NBD as of the start)")
    ax.set_xlabel("week of the holdout")
    ax.set_ylabel("cumulative purchase days")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    style_axes(ax)
    return figure_svg(fig)


def counts_chart(counts: dict[str, int], names: Iterable[str], colour: str, label: str) -> str:
    keys = list(names)
    fig = new_figure(6.5, min(6.0, 1.0 + 0.3 * len(keys)))
    ax = fig.gca()
    positions = np.arange(len(keys))[::-1]
    values = [counts.get(k, 0) for k in keys]
    ax.barh(positions, values, color=colour)
    ax.set_yticks(positions, [k.replace("_", " ") for k in keys], fontsize=8)
    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    for y, value in zip(positions, values):
        ax.text(value, y, f" {value:,}", va="center", fontsize=7)
    style_axes(ax)
    ax.grid(True, axis="x", color="#e5e7eb", linewidth=0.8)
    ax.grid(False, axis="y")
    return figure_svg(fig)


def advisor_chart(groups: list[owners.GroupFigures], labels: dict[int | None, str]) -> str:
    """The period's churn rate per owner, worst first (the ``ADVISOR_CHART_OWNERS`` worst):
    red for an owner at the bottom three months running, orange for one at the bottom in
    the last complete month, blue otherwise; the customers without an owner in grey."""
    fig = new_figure(7.0, min(7.0, 1.2 + 0.3 * len(groups)))
    ax = fig.gca()
    positions = np.arange(len(groups))[::-1]
    rates = [100 * (g.churn_rate or 0.0) for g in groups]
    colours = [PALETTE[8] if g.owner_id is None else PALETTE[1] if g.at_bottom_three_months
               else PALETTE[3] if g.bottom_months_running else PALETTE[0] for g in groups]
    ax.barh(positions, rates, color=colours)
    ax.set_yticks(positions, [labels[g.owner_id] for g in groups], fontsize=8)
    ax.set_xlabel("monthly churn rate over the period (%): churned / customer-months")
    for y, rate, group in zip(positions, rates, groups):
        ax.text(rate, y, f" {rate:.1f}%" + (f"  ({group.bottom_months_running} months at "
                                             f"the bottom)" if group.bottom_months_running
                                             else ""), va="center", fontsize=7)
    style_axes(ax)
    ax.grid(True, axis="x", color="#e5e7eb", linewidth=0.8)
    ax.grid(False, axis="y")
    return figure_svg(fig)


def risk_chart(overview: ScoreOverview) -> str:
    fig = new_figure(7.0, 3.0)
    ax = fig.gca()
    width = 1.0 / RISK_BUCKETS
    edges = np.arange(RISK_BUCKETS) * width
    colours = [PALETTE[1] if e >= HIGH_RISK else PALETTE[0] for e in edges]
    ax.bar(edges, overview.histogram, width=width, align="edge", color=colours,
           edgecolor="white", linewidth=0.5)
    ax.set_xlim(0, 1)
    counts = [c for c in overview.histogram if c]
    if counts and max(counts) > 100 * min(counts):
        ax.set_yscale("log")  # a few risky customers among many safe ones stay visible
    ax.set_xlabel(f"churn risk (buckets of {width:.2f}; red: {HIGH_RISK:.0%} or more)")
    ax.set_ylabel("customers")
    style_axes(ax)
    return figure_svg(fig)


def p_alive_chart(frequencies: np.ndarray, recencies: np.ndarray, grid: np.ndarray,
                  age: float, unit: str) -> str:
    fig = new_figure(7.0, 4.6)
    ax = fig.gca()
    step = recencies[1] - recencies[0] if recencies.size > 1 else 1.0
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto",
                      cmap="RdYlGn", vmin=0.0, vmax=1.0,
                      extent=(-step / 2, age + step / 2, -0.5, frequencies[-1] + 0.5))
    ax.set_xlabel(f"recency: {unit}s from the first to the last purchase (T = {age:,.0f} "
                  f"{unit}s)")
    ax.set_ylabel("frequency: repeat purchase days")
    fig.colorbar(image, ax=ax, shrink=0.85, label="P(alive)")
    return figure_svg(fig)


# --- Sections -------------------------------------------------------------------------------


def _monthly(report: HtmlReport, figures: ChurnReport) -> None:
    section = report.section(
        "Monthly churn", "Churn rate = customers churned in the month / customers active at "
        "its start; retention rate = the share of those still not churned at its end.")
    if not figures.months:
        section.note("The period has not begun yet: no month to show.")
        return
    if not any(m.active_at_start for m in figures.months):
        section.note("No customer was active at the start of any month of the period: no "
                     "rate to draw.")
    else:
        section.figure(monthly_chart(figures), "Monthly churn rate (bars) and retention "
                       "rate (line)", name="monthly-churn")
    section.table(["Month", "Active at start", "Churned", "Reactivated", "Churn rate",
                   "Retention rate"],
                  [[m.month, m.active_at_start, m.churned, m.reactivated, _pct(m.churn_rate),
                    _pct(m.retention_rate)] for m in figures.months],
                  caption="Monthly figures")


def _cohorts(report: HtmlReport, figures: ChurnReport) -> None:
    section = report.section(
        "Retention curve", "Customers grouped by the month they started (their first "
        "interaction or their creation); the share of each cohort not churned k months "
        "later.")
    if not figures.cohorts:
        section.note("No customer started in the period: no cohort to follow.")
        return
    section.figure(retention_chart(figures), "Share retained against months since the start:"
                   " each cohort (grey) and all cohorts weighted by size (blue)",
                   name="retention-curve")
    shown = [k for k in COHORT_TABLE_MONTHS
             if any(len(c.retention) > k for c in figures.cohorts)]
    section.table(["Cohort", "Customers", *(f"month {k}" for k in shown)],
                  [[c.month, c.size, *(_pct(c.retention[k]) if len(c.retention) > k else ""
                                       for k in shown)] for c in figures.cohorts],
                  caption="Cohort retention")


def _reasons(report: HtmlReport, figures: ChurnReport) -> None:
    section = report.section("Why customers left",
                             "Churn records dated in the period, by reason and by type.")
    total = figures.churned
    if not total:
        section.note("No churn record is dated in the period.")
        return
    section.figure(counts_chart(figures.by_reason, [r.value for r in ChurnReason], PALETTE[3],
                                "churn records"), "Churn records by reason", name="reasons")
    section.figure(counts_chart(figures.by_type, [t.value for t in ChurnType], PALETTE[4],
                                "churn records"), "Churn records by type", name="types")
    for title, counts, names in (("reason", figures.by_reason, ChurnReason),
                                 ("type", figures.by_type, ChurnType)):
        section.table([title.capitalize(), "Churn records", "Share"],
                      [[n.value, counts.get(n.value, 0), _pct(counts.get(n.value, 0) / total)]
                       for n in names], caption=f"Churn records by {title}")


def _advisors(report: HtmlReport, figures: owners.OwnerReport, show_names: bool) -> None:
    section = report.section(
        "Churn by advisor", "Each owner's customers (by their current owner: a customer "
        "reassigned counts for its new owner in every month) with the figures of the monthly "
        f"churn. Each complete month, among the owners with at least {figures.min_active} "
        "customers active at its start, the highest churn rate is the bottom; three months "
        "running at the bottom (up to the last complete month) hands the accounts to a "
        "colleague.")
    advisors = [g for g in figures.by_owner if g.owner_id is not None]
    if not advisors:
        section.note("No customer counted in the period has an owner: no advisor to compare.")
        return
    if not show_names:
        section.note("Owner names and teams need the agents:read scope: owners are shown by "
                     "their global id.")

    def name(group: owners.GroupFigures) -> str:
        if group.owner_id is None:
            return "(no owner)"
        return (group.name or "") if show_names else global_id("Agent", group.owner_id)

    labels = {g.owner_id: name(g) for g in figures.by_owner}
    drawn = sorted((g for g in figures.by_owner if g.churn_rate is not None),
                   key=lambda g: (-(g.churn_rate or 0.0), labels[g.owner_id]))
    if drawn:
        section.figure(advisor_chart(drawn[:ADVISOR_CHART_OWNERS], labels),
                       "Churn rate over the period per owner (red: at the bottom three months "
                       "running; orange: at the bottom in the last complete month; grey: "
                       "customers without an owner)", name="churn-by-advisor")
    else:
        section.note("No owner had customers active at the start of a month: no rate to draw.")
    flagged = [labels[g.owner_id] for g in advisors if g.at_bottom_three_months]
    if flagged:
        section.note(f"At the bottom {owners.BOTTOM_RUN} months running or more: "
                     f"{', '.join(flagged)}.", "warning")
    section.table(["Owner", "Team", "Active at start", "Churned", "Customer-months",
                   "Churn rate", "Months at the bottom", "Running", "Three months"],
                  [[labels[g.owner_id], (g.team or "") if show_names else "",
                    g.active_at_start, g.churned, g.customer_months, _pct(g.churn_rate),
                    ", ".join(g.bottom_months), g.bottom_months_running,
                    "yes" if g.at_bottom_three_months else ""] for g in figures.by_owner],
                  caption="Churn by advisor over the period")


def _risk(report: HtmlReport, overview: ScoreOverview | None,
          model: ChurnModelVersion | None) -> None:
    section = report.section("Churn risk", "The stored score of every customer (`rapport "
                             "churn score`): the classifier's risk, or 1 - P(alive) without "
                             "one.")
    if overview is None:
        section.note(NO_SCORES if model is not None else NO_MODEL)
        return
    if model is not None and model.id != overview.version_id:
        section.note(f"These scores come from model version {overview.version_id}; the "
                     f"active version {model.id} has not been scored yet.", "warning")
    section.key_values([("Customers scored", overview.customers),
                        ("Mean risk", fmt(overview.mean_risk, 4, percent=True)),
                        (f"Risk of {HIGH_RISK:.0%} or more", overview.high_risk),
                        ("Total CLV", overview.total_clv)])
    section.figure(risk_chart(overview), "Distribution of the churn risk",
                   name="risk-distribution")
    rows = top_warnings(overview.version_id)
    if not rows:
        section.note("No scored customer to warn about.")
        return
    section.table(["#", "Customer", "Name", "Risk", "P(alive)", "CLV", "Priority",
                   "Top factors"],
                  [[i, global_id("Customer", score.customer_id), name or "", _pct(score.risk),
                    _pct(score.p_alive),
                    score.clv, score.priority,
                    "; ".join(f"{f.get('feature')} {float(f.get('contribution', 0)):+.2f}"
                              for f in (score.top_factors or [])[:3])]
                   for i, (score, name) in enumerate(rows, 1)],
                  caption=f"Warning list: the {len(rows)} customers with the highest risk x "
                          f"CLV")


def _p_alive(report: HtmlReport, model: ChurnModelVersion | None,
             overview: ScoreOverview | None) -> None:
    section = report.section(
        "P(alive) by frequency and recency", "The BG/NBD probability that a customer is still "
        "active, for each number of repeat purchase days and time of the last one, at one age "
        "T: the top-left corner (many purchases, none lately) is where customers are lost.")
    params = bgnbd_tuple(model) if model is not None else None
    if model is None or params is None:
        section.note(NO_MODEL if model is None else
                     f"Model version {model.id} has no BG/NBD parameters.")
        return
    scored = overview is not None and overview.version_id == model.id
    age = overview.max_age if scored and overview else None
    if not age:
        age = oldest_purchase_age(model)
    if not age or age <= 0:
        section.note("No purchase before the calibration date: no age to draw the matrix at.")
        return
    top = overview.max_frequency if scored and overview and overview.max_frequency else 0
    max_frequency = min(MAX_GRID_FREQUENCY, max(MIN_GRID_FREQUENCY, top))
    frequencies, recencies, grid = p_alive_grid(params, max_frequency, age)
    unit = model.time_unit.value
    section.figure(p_alive_chart(frequencies, recencies, grid, age, unit),
                   f"P(alive | frequency, recency, T = {age:,.0f} {unit}s) of model version "
                   f"{model.id} (blank: a customer without repeat purchase has recency 0)",
                   name="p-alive-matrix")


#: What people read instead of the stored keys (snake_case or camelCase) of a model
#: version's parameters and metrics; a key not listed is spelled out from its words.
LABELS = {
    "bgnbd": "BG/NBD", "gamma_gamma": "Gamma-Gamma", "sbg": "sBG", "classifier": "Classifier",
    "cross_validation": "cross-validation", "time_validation": "time-aware validation",
    "training": "Training", "validation": "Backtest", "as_of": "features as of",
    "horizon_days": "horizon (days)", "horizonDays": "horizon (days)",
    "labelled": "labelled customers", "churned": "churned within the horizon",
    "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "base_rate": "base rate (share churned)",
    "brier": "Brier score", "n": "customers", "n_positive": "churned",
    "trained_at": "trained at", "model": "model family", "log_likelihood": "log-likelihood",
    "n_customers": "customers", "n_repeat_buyers": "repeat buyers",
    "n_churned": "churned", "max_tenure": "longest tenure (periods)",
    "frequency_monetary_correlation": "frequency-spend correlation",
    "predictedTotal": "predicted purchase days", "actualTotal": "actual purchase days",
    "meanAbsoluteError": "mean absolute error", "dropout_feature": "1 - P(alive) feature",
}
#: Model kinds and families as people name them.
KINDS = {"logistic": "logistic regression", "knn": "k nearest neighbours",
         "gradient_boosting": "gradient boosting", "bgnbd": "BG/NBD",
         "bgnbd+gg": "BG/NBD + Gamma-Gamma", "sbg": "sBG (subscription renewals)"}


def label(key: str) -> str:
    """A stored key as words: ``training.as_of`` -> "Training: features as of"."""
    words = []
    for part in key.split("."):
        known = LABELS.get(part)
        if known is None:  # snake_case or camelCase spelled out
            known = " ".join(w.lower() for w in re.split(r"_|(?<=[a-z])(?=[A-Z])", part) if w)
        words.append(known)
    text = words[0] + (": " + ", ".join(words[1:]) if len(words) > 1 else "")
    return text[:1].upper() + text[1:]


#: Periods shown in the survival table of an sBG fit, by period length.
SURVIVAL_PERIODS = {"month": (1, 2, 3, 6, 9, 12, 18, 24), "year": (1, 2, 3, 4, 5, 7, 10)}


def sbg_fits(model: ChurnModelVersion | None) -> dict[str, dict[str, Any]]:
    """The version's sBG fits by period length (``month``, ``year``) with usable alpha and
    beta; empty for a BG/NBD model."""
    stored = (model.params or {}).get("sbg") if model is not None else None
    found: dict[str, dict[str, Any]] = {}
    for period, fit in sorted(stored.items() if isinstance(stored, dict) else []):
        try:
            if isinstance(fit, dict) and float(fit["alpha"]) > 0 and float(fit["beta"]) > 0:
                found[str(period)] = fit
        except (KeyError, TypeError, ValueError):
            continue
    return found


def survival_chart(fits: dict[str, dict[str, Any]]) -> str:
    fig = new_figure(7.0, 3.4)
    ax = fig.gca()
    for colour, (period, fit) in zip(PALETTE, fits.items()):
        periods = np.arange(max(SURVIVAL_PERIODS.get(period, (12,))) + 1)
        ax.plot(periods, 100 * sbg.survival((fit["alpha"], fit["beta"]), periods),
                color=colour, linewidth=2.2, marker="o", markersize=3,
                label=f"{period}ly renewals")
    ax.set_xlabel("renewal periods since the start")
    ax.set_ylabel("still subscribed (%)")
    ax.set_ylim(bottom=0, top=100.5)
    ax.legend(fontsize=8, frameon=False, loc="upper right")
    style_axes(ax)
    return figure_svg(fig)


def _survival(report: HtmlReport, model: ChurnModelVersion,
              fits: dict[str, dict[str, Any]], with_bgnbd: bool) -> None:
    section = report.section(
        "Subscriber survival by period", "The sBG model of contractual renewals (Fader & "
        "Hardie 2007): S(t), the share of a new cohort still subscribed after t periods, "
        "and r(t), the share of period t-1's subscribers who renew for period t (it rises: "
        "those likely to leave leave first).")
    if not with_bgnbd:
        section.note("P(alive) by frequency and recency is not shown: it is the BG/NBD "
                     "model's, for purchases without a contract, and this model version was "
                     "fitted on renewals (sBG), where a subscriber is alive until it cancels.")
    section.figure(survival_chart(fits), f"Share of a new cohort still subscribed, model "
                   f"version {model.id}", name="sbg-survival")
    for period, fit in fits.items():
        pair = (float(fit["alpha"]), float(fit["beta"]))
        shown = SURVIVAL_PERIODS.get(period, (1, 2, 3, 6, 12))
        survival = sbg.survival(pair, list(shown))
        retention = sbg.retention_curve(pair, max(shown))
        longest = fit.get("max_tenure")
        section.table(
            [f"{period.capitalize()}s", "Still subscribed S(t)", "Renewal rate r(t)", ""],
            [[t, _pct(float(survival[i])), _pct(float(retention[t - 1])),
              "extrapolated" if isinstance(longest, int) and t > longest else ""]
             for i, t in enumerate(shown)],
            caption=f"sBG ({period}): survival and retention by period")


def _lifetimes(report: HtmlReport, model: ChurnModelVersion | None,
               overview: ScoreOverview | None) -> None:
    """P(alive) for a BG/NBD model; survival by period for an sBG one (both when an sBG
    version also fitted BG/NBD on purchases): never an empty section."""
    fits = sbg_fits(model)
    with_bgnbd = model is not None and bgnbd_tuple(model) is not None
    if model is not None and fits:
        _survival(report, model, fits, with_bgnbd)
    if not fits or with_bgnbd:
        _p_alive(report, model, overview)


def _flatten(prefix: str, value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
    elif isinstance(value, list):
        if all(isinstance(v, (int, float, str, bool)) or v is None for v in value) \
                and len(value) <= 12:
            yield prefix, ", ".join(fmt(v, 4) for v in value)
    else:
        yield prefix, value


def _model(report: HtmlReport, model: ChurnModelVersion | None) -> None:
    section = report.section("Model", "The active model version: BG/NBD and Gamma-Gamma "
                             "parameters, the classifier and its validation metrics.")
    if model is None:
        section.note(NO_MODEL)
        return
    section.key_values([("Version", model.id), ("Kind", KINDS.get(model.kind, model.kind)),
                        ("Fitted at", model.created_at), ("Calibration date", model.as_of),
                        ("Time unit", model.time_unit.value),
                        ("Classifier features", len(model.feature_names or []))])
    params = model.params or {}
    rows = []
    for name, keys in (("bgnbd", ("r", "alpha", "a", "b", "log_likelihood", "n_customers",
                                  "n_repeat_buyers")),
                       ("gamma_gamma", ("p", "q", "gamma", "log_likelihood", "n_customers",
                                        "frequency_monetary_correlation"))):
        fitted = params.get(name)
        if isinstance(fitted, dict):
            rows.extend([LABELS[name], label(key), fitted.get(key)] for key in keys
                        if key in fitted)
        else:
            rows.append([LABELS[name], "", "not fitted"])
    for period, fit in sorted((params.get("sbg") or {}).items()):
        if isinstance(fit, dict):
            rows.extend([f"sBG ({period})", label(key), fit.get(key)] for key in (
                "alpha", "beta", "log_likelihood", "n_customers", "n_churned", "max_tenure"))
        else:
            rows.append([f"sBG ({period})", "", f"not fitted: {fit}"])
    section.table(["Model", "Parameter", "Value"],
                  [[m, k, fmt(v, 4) if isinstance(v, float) else v] for m, k, v in rows],
                  caption="Parameters")
    checked = (model.metrics or {}).get("validation")
    if checked and checked.get("tracking"):
        section.figure(tracking_chart(checked), "Calibration/holdout backtest: BG/NBD fitted "
                       f"at the training date, tracked over the {fmt(checked['horizonDays'])} "
                       "days that followed.", "tracking")
        section.table(["Calibration purchases", "Customers", "Predicted (mean)",
                       "Actual (mean)"],
                      [[f"{g['frequency']}{'+' if g['orMore'] else ''}", g["customers"],
                        fmt(g["predicted"], 3), fmt(g["actual"], 3)]
                       for g in checked["byFrequency"]],
                      caption="Conditional expectations of holdout purchases")
    stored = model.metrics or {}
    classifier = stored.get("classifier") or {}
    notes = [*stored.get("notes", []), *classifier.get("notes", [])]
    from plugins.churn.classifier import chance_level_note  # scikit-learn: on use only

    chance = chance_level_note(classifier.get("cross_validation"),
                               classifier.get("time_validation")) if classifier else None
    if chance and chance not in notes:  # a version fitted before the check
        notes.append(chance)
    for note in notes:
        section.note(str(note), "warning" if str(note).startswith("warning:") else "info")
    metrics = [(label(k), v) for k, v in _flatten("", stored)
               if v not in ("", None) and k.rsplit(".", 1)[-1] != "notes"]
    if metrics:
        section.table(["Metric", "Value"], [[k, fmt(KINDS.get(v, v)) if isinstance(v, str)
                                             else fmt(v, 4) if isinstance(v, float)
                                             else fmt(v)] for k, v in metrics],
                      caption="Metrics")
    else:
        section.note("The version has no metrics.")


#: Steps reported to ``progress``: the figures, the scores, then each section.
STEPS = 9


def render_churn_report(period_from: dt.date | str, period_to: dt.date | str, *,
                        now: dt.datetime | None = None,
                        progress: Callable[[int], None] | None = None,
                        show_names: bool = True) -> str:
    """The churn report of ``period_from`` .. ``period_to`` (days, ``to`` included) as one
    HTML page. Raises ``UserError`` for a bad period (``PeriodSchema``). ``progress(n)`` is
    called after each of the ``STEPS`` steps. ``show_names``: owner names and teams in the
    advisor section (a reader allowed agents:read), else their global ids."""
    step = progress or (lambda done: None)
    period = {"from": str(period_from), "to": str(period_to)}
    figures = churn_report(period, now=now)
    by_owner = owners.owner_report(period, now=now)
    step(1)
    model = active_model()
    overview = score_overview()
    step(1)
    subtitle = (f"{figures.period_from:%d %b %Y} to {figures.period_to:%d %b %Y}: "
                f"{len(figures.months)} month(s), {figures.churned:,} customer(s) churned")
    report = HtmlReport("Churn report", subtitle=subtitle, generated_at=now or utcnow())
    for part in (lambda: _monthly(report, figures), lambda: _cohorts(report, figures),
                 lambda: _reasons(report, figures),
                 lambda: _advisors(report, by_owner, show_names),
                 lambda: _risk(report, overview, model),
                 lambda: _lifetimes(report, model, overview),
                 lambda: _model(report, model)):
        part()
        step(1)
    return report.render()

