"""The survey report: one self-contained HTML page with the charts and tables of a
:class:`~plugins.surveys.stats.SurveyAnalysis` (built on ``core.reports``).

Charts (matplotlib, inline SVG): NPS distribution per NPS item, item means with 95%
confidence intervals, key drivers, correlation heatmap, factor loadings heatmap, cluster
profiles. A part that could not be computed shows its explanation instead of a chart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from matplotlib.figure import Figure

from core.reports import PALETTE, HtmlReport, Section, figure_svg, fmt, new_figure, style_axes
from plugins.surveys.data import TEXT_SAMPLE, ResponseMatrix
from plugins.surveys.stats.types import (
    ClusterResult,
    CorrelationResult,
    DriverResult,
    FactorResult,
    ItemSummary,
    NpsResult,
    ReliabilityResult,
    SurveyAnalysis,
)

LABEL_CHARS = 28
DETRACTOR, PASSIVE, PROMOTER = PALETTE[1], PALETTE[3], PALETTE[2]


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "\u2026"


def _labels(analysis: SurveyAnalysis, keys: Sequence[str]) -> list[str]:
    by_key = {item.key: item.label for item in analysis.items}
    return [_short(by_key.get(key, key)) for key in keys]


def _height(rows: int) -> float:
    return min(12.0, max(2.6, 0.9 + 0.32 * rows))


def _matrix(values: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values],
                    dtype=np.float64)


def _heatmap(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], title: str,
             annotate: bool) -> str:
    return figure_svg(heatmap_figure(matrix, rows, columns, title, annotate))


def heatmap_figure(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str],
                   title: str, annotate: bool) -> Figure:
    fig = new_figure(max(4.5, 1.6 + 0.45 * len(columns)), _height(len(rows)) + 0.6)
    ax = fig.gca()
    masked = np.ma.masked_invalid(matrix)
    image = ax.imshow(masked, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title(title, fontsize=10)
    if annotate:
        for (i, j), value in np.ndenumerate(matrix):
            text = "\u2014" if np.isnan(value) else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if not np.isnan(value) and abs(value) > 0.6 else "#111827")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


# --- Charts ---------------------------------------------------------------------------------


def nps_chart(nps: NpsResult, summary: ItemSummary) -> str:
    fig = new_figure(6.5, 3.0)
    ax = fig.gca()
    values = [f.value for f in summary.frequencies]
    colours = [PROMOTER if v >= 9 else PASSIVE if v >= 7 else DETRACTOR for v in values]
    ax.bar(values, [f.count for f in summary.frequencies], color=colours)
    ax.set_xticks(values)
    ax.set_xlabel("answer (0-10)")
    ax.set_ylabel("responses")
    ax.set_title(f"{_short(summary.label)}: NPS {fmt(nps.score, 1)}", fontsize=10)
    style_axes(ax)
    return figure_svg(fig)


def means_chart(summaries: Sequence[ItemSummary]) -> str:
    fig = new_figure(7.0, _height(len(summaries)))
    ax = fig.gca()
    positions = np.arange(len(summaries))[::-1]
    means = np.array([s.mean for s in summaries], dtype=float)
    low = means - np.array([s.mean_ci_low if s.mean_ci_low is not None else s.mean
                            for s in summaries], dtype=float)
    high = np.array([s.mean_ci_high if s.mean_ci_high is not None else s.mean
                     for s in summaries], dtype=float) - means
    ax.errorbar(means, positions, xerr=[low, high], fmt="o", color=PALETTE[0], capsize=4)
    ax.set_yticks(positions, [f"{_short(s.label)} ({s.scale_min}-{s.scale_max})"
                              for s in summaries], fontsize=8)
    ax.set_xlabel("mean answer with 95% confidence interval")
    style_axes(ax)
    return figure_svg(fig)


def drivers_chart(drivers: DriverResult, analysis: SurveyAnalysis) -> str:
    return figure_svg(drivers_figure(drivers, analysis))


def drivers_figure(drivers: DriverResult, analysis: SurveyAnalysis) -> Figure:
    rows = drivers.drivers
    fig = new_figure(7.0, _height(len(rows)))
    ax = fig.gca()
    positions = np.arange(len(rows))[::-1]
    labels = _labels(analysis, [d.key for d in rows])
    if all(d.relative_weight is not None for d in rows):
        ax.barh(positions, [d.relative_weight for d in rows], color=PALETTE[0],
                label="relative weight (share of R\u00b2)")
    ax.scatter([d.pearson if d.pearson is not None else np.nan for d in rows], positions,
               color=PALETTE[1], zorder=3, label="correlation with the overall item")
    ax.set_yticks(positions, labels, fontsize=8)
    ax.axvline(0, color="#9ca3af", linewidth=0.8)
    # Outside the axes: inside, it would hide the bars and dots it lands on.
    fig.legend(fontsize=8, loc="outside lower center", ncols=2, frameon=False)
    ax.set_title(f"Key drivers of {_labels(analysis, [drivers.overall_key or ''])[0]}",
                 fontsize=10)
    style_axes(ax)
    return fig


def profiles_chart(clusters: ClusterResult, analysis: SurveyAnalysis) -> str:
    return figure_svg(profiles_figure(clusters, analysis))


def profiles_figure(clusters: ClusterResult, analysis: SurveyAnalysis) -> Figure:
    labels = _labels(analysis, clusters.keys)
    fig = new_figure(max(6.0, 1.5 + 0.45 * len(labels)), 3.6)
    ax = fig.gca()
    for index, profile in enumerate(clusters.profiles):
        ax.plot(range(len(labels)), profile.means, marker="o",
                color=PALETTE[index % len(PALETTE)],
                label=f"cluster {profile.cluster + 1} ({profile.share:.0%})")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("mean answer")
    fig.legend(fontsize=8, loc="outside right upper", frameon=False)
    style_axes(ax)
    return fig


# --- Sections -------------------------------------------------------------------------------


class _Part(Protocol):
    available: bool
    explanation: str
    missing_rule: str


def _part(report: HtmlReport, title: str, result: _Part, warnings: Sequence[str]
          ) -> Section | None:
    """A section headed by its missing-data rule; None (after saying why) when the
    analysis could not run."""
    section = report.section(title, f"Missing answers: {result.missing_rule}.")
    if result.available:
        return section
    _unavailable(section, result.explanation)
    _warnings(section, warnings)
    return None


def _unavailable(section: Section, explanation: str) -> None:
    section.note(explanation or "Not available.", level="warning")


def _warnings(section: Section, warnings: Sequence[str]) -> None:
    for warning in warnings:
        section.note(warning, level="warning")


def _descriptive(report: HtmlReport, analysis: SurveyAnalysis) -> None:
    section = report.section("Item statistics",
                             "Mean, standard deviation (n-1), median and 95% confidence "
                             "interval of the mean (Student t), per item; missing answers "
                             "are left out item by item.")
    answered = [s for s in analysis.items if s.mean is not None]
    if answered:
        section.figure(means_chart(answered), "Item means with 95% confidence intervals",
                       name="item-means")
    section.table(["Item", "Scale", "n", "Missing", "Mean", "SD", "Median", "95% CI"],
                  [[s.label, f"{s.scale_min}-{s.scale_max}", s.n, s.missing, s.mean, s.sd,
                    s.median, f"{fmt(s.mean_ci_low)} \u2013 {fmt(s.mean_ci_high)}"]
                   for s in analysis.items], caption="Items")
    width = max((len(s.frequencies) for s in analysis.items), default=0)
    section.table(["Item", *[f"#{i + 1}" for i in range(width)]],
                  [[s.label, *[f"{f.value}: {f.count} ({f.percent:.1f}%)"
                               for f in s.frequencies]] for s in analysis.items],
                  caption="Frequencies over each item's scale (value: count, share)")


def _nps(report: HtmlReport, analysis: SurveyAnalysis) -> None:
    if not analysis.nps and not analysis.csat:
        return
    section = report.section("NPS and CSAT")
    summaries = {s.key: s for s in analysis.items}
    for nps in analysis.nps:
        if nps.n:
            section.figure(nps_chart(nps, summaries[nps.key]),
                           f"Answers to {summaries[nps.key].label}: detractors 0-6 (red), "
                           "passives 7-8, promoters 9-10 (green)", name=f"nps-{nps.key}")
    if analysis.nps:
        section.paragraph(analysis.nps[0].method)
        section.table(["Item", "n", "Promoters", "Passives", "Detractors", "NPS", "95% CI"],
                      [[summaries[r.key].label, r.n, _pct(r.promoters_pct),
                        _pct(r.passives_pct), _pct(r.detractors_pct), r.score,
                        f"{fmt(r.ci_low, 1)} \u2013 {fmt(r.ci_high, 1)}"]
                       for r in analysis.nps], caption="Net Promoter Score")
    if analysis.csat:
        section.table(["Item", "n", "Top two box", "Satisfied", "CSAT"],
                      [[summaries[r.key].label, r.n, ", ".join(map(str, r.top_values)),
                        r.satisfied, _pct(r.csat_pct)] for r in analysis.csat],
                      caption="CSAT: share of answers in the top two points of the scale")


def _pct(value: float | None) -> str:
    return "\u2014" if value is None else f"{value:.1f}%"


def _correlations(report: HtmlReport, analysis: SurveyAnalysis,
                  result: CorrelationResult) -> None:
    section = _part(report, "Correlations", result, ())
    if section is None:
        return
    labels = _labels(analysis, result.keys)
    section.figure(_heatmap(_matrix(result.pearson), labels, labels, "Pearson correlation",
                            annotate=len(labels) <= 15),
                   "Pearson correlations between items (grey: no coefficient)",
                   name="correlation-heatmap")
    if result.explanation:
        section.note(result.explanation)
    keys = result.keys
    for name, values, p_values in (("Pearson", result.pearson, result.pearson_p),
                                   ("Spearman", result.spearman, result.spearman_p)):
        section.table(["", *keys],
                      [[keys[i], *[_coefficient(values[i][j], p_values[i][j])
                                   for j in range(len(keys))]] for i in range(len(keys))],
                      caption=f"{name} correlations (* p < 0.05, ** p < 0.01)")
    section.table(["", *keys], [[keys[i], *row] for i, row in enumerate(result.n)],
                  caption="Responses per pair")


def _coefficient(value: float | None, p: float | None) -> str:
    if value is None:
        return "\u2014"
    stars = "" if p is None else "**" if p < 0.01 else "*" if p < 0.05 else ""
    return f"{value:.2f}{stars}"


def _drivers(report: HtmlReport, analysis: SurveyAnalysis, result: DriverResult) -> None:
    section = _part(report, "Key drivers", result, ())
    if section is None:
        return
    section.figure(drivers_chart(result, analysis),
                   "Items against the overall question: relative weight (bars) and "
                   "correlation (dots)", name="drivers")
    section.paragraph(f"{result.explanation} Regression on {result.n_used} responses; "
                      f"R\u00b2 = {fmt(result.r_squared, 3)}.")
    _warnings(section, result.warnings)
    section.table(["Rank", "Item", "n", "Pearson r", "p", "Spearman", "Beta",
                   "Relative weight"],
                  [[d.rank, d.label, d.n, d.pearson, _p(d.pearson_p), d.spearman, d.beta,
                    d.relative_weight] for d in result.drivers], caption="Drivers")


def _p(value: float | None) -> str:
    if value is None:
        return "\u2014"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _factors(report: HtmlReport, analysis: SurveyAnalysis, result: FactorResult) -> None:
    section = _part(report, "Factor analysis", result, result.warnings)
    if section is None:
        return
    labels = _labels(analysis, result.keys)
    factors = [f"F{i + 1}" for i in range(result.n_factors)]
    section.figure(_heatmap(np.array(result.loadings), labels, factors,
                            f"Loadings ({result.rotation})", annotate=True),
                   f"Factor loadings after {result.rotation} rotation", name="loadings")
    section.paragraph(
        f"{result.explanation} Suggested number of factors: {result.suggested_parallel} by "
        f"parallel analysis, {result.suggested_kaiser} by the Kaiser criterion "
        f"(eigenvalues above 1). KMO {fmt(result.kmo)}; Bartlett's test chi\u00b2 = "
        f"{fmt(result.bartlett_chi2, 1)}, df = {result.bartlett_df}, p {_p(result.bartlett_p)}"
        f". Based on {result.n_used} responses.")
    _warnings(section, result.warnings)
    section.table(["Item", *factors, "Communality", "KMO"],
                  [[labels[i], *row, result.items[i].communality, result.items[i].kmo]
                   for i, row in enumerate(result.loadings)],
                  caption="Loadings (pattern matrix for oblique rotations)")
    section.table(["Factor", "Variance explained"],
                  [[f, f"{v:.1%}"] for f, v in zip(factors, result.variance_explained)],
                  caption="Variance explained (common variance of each factor / items; "
                  "with correlated factors: pattern x structure loadings)")
    if result.rotation in ("oblimin", "promax"):
        section.table(["", *factors], [[f, *row] for f, row in
                                       zip(factors, result.factor_correlations)],
                      caption="Factor correlations")
    section.table(["Rank", "Eigenvalue", "Parallel analysis (95th percentile)"],
                  [[i + 1, e, t] for i, (e, t) in enumerate(
                      zip(result.eigenvalues, result.parallel_thresholds))],
                  caption="Eigenvalues of the correlation matrix against random data")


def _reliability(report: HtmlReport, analysis: SurveyAnalysis,
                 scales: Sequence[ReliabilityResult]) -> None:
    if not scales:
        return
    section = report.section("Reliability", "Cronbach's alpha per scale; reverse-keyed "
                             "items are recoded (min + max - answer) first.")
    for scale in scales:
        if not scale.available:
            _unavailable(section, scale.explanation)
            continue
        section.paragraph(f"{scale.name}: alpha = {fmt(scale.cronbach_alpha, 3)} over "
                          f"{scale.n_used} responses ({scale.missing_rule}); scale score "
                          f"mean {fmt(scale.score_mean)}, SD {fmt(scale.score_sd)}.")
        _warnings(section, scale.warnings)
        section.table(["Item", "Reverse-keyed", "Alpha if deleted", "Item-total r"],
                      [[label, a.key in scale.reversed_items, a.alpha,
                        a.item_total_correlation] for a, label in zip(
                          scale.alpha_if_deleted,
                          _labels(analysis, [a.key for a in scale.alpha_if_deleted]))],
                      caption=f"Scale {scale.name}")


def _clusters(report: HtmlReport, analysis: SurveyAnalysis, result: ClusterResult) -> None:
    section = _part(report, "Clusters", result, result.warnings)
    if section is None:
        return
    section.figure(profiles_chart(result, analysis),
                   "Cluster profiles: mean answer per item", name="cluster-profiles")
    section.paragraph(f"k-means on standardised item scores. {result.selection} Mean "
                      f"silhouette {fmt(result.silhouette, 3)}.")
    _warnings(section, result.warnings)
    labels = _labels(analysis, result.keys)
    section.table(["Cluster", "Responses", "Share", *labels],
                  [[p.cluster + 1, p.size, f"{p.share:.1%}", *p.means]
                   for p in result.profiles], caption="Cluster sizes and profiles")
    section.table(["k", "Mean silhouette"], [[k, v] for k, v in result.silhouette_by_k.items()],
                  caption="Silhouette by number of clusters")


def _data_notes(report: HtmlReport, analysis: SurveyAnalysis) -> None:
    section = report.section("Data and missing answers")
    rules: list[tuple[str, Any]] = [
        ("Responses", analysis.n_responses),
        ("Correlations", analysis.correlations.missing_rule),
        ("Key drivers", f"{analysis.drivers.missing_rule} ({analysis.drivers.n_used} used)"
         if analysis.drivers.available else analysis.drivers.explanation),
        ("Factor analysis", analysis.factors.missing_rule),
        ("Clusters", analysis.clusters.missing_rule),
    ]
    rules += [(f"Scale {s.name}", f"{s.missing_rule} ({s.n_used} used)")
              for s in analysis.reliability]
    section.key_values(rules)
    if not analysis.warnings:
        section.paragraph("No problems found in the answers.")
    _warnings(section, analysis.warnings)


def _choices(report: HtmlReport, matrix: ResponseMatrix) -> None:
    if not matrix.choice_questions:
        return
    section = report.section("Choice questions", "How many responses chose each option; "
                             "the share is of the responses that answered the question (a "
                             "multiple-choice answer counts once per option chosen).")
    for question in matrix.choice_questions:
        answered = matrix.choice_answered.get(question.key, 0)
        counts = matrix.choice_counts.get(question.key, {})
        section.table(["Option", "Responses", "Share"],
                      [[label, counts.get(key, 0),
                        _pct(100.0 * counts.get(key, 0) / answered if answered else None)]
                       for key, label in question.options],
                      caption=f"{_short(question.text)} ({question.key}; {answered:,} "
                              f"answered)")


def _texts(report: HtmlReport, matrix: ResponseMatrix) -> None:
    if not matrix.text_questions:
        return
    section = report.section("Text questions", f"How many responses answered each open "
                             f"question, and the {TEXT_SAMPLE} latest answers.")
    for key, text in matrix.text_questions:
        answered = matrix.text_answered.get(key, 0)
        samples = matrix.text_samples.get(key, [])
        if not samples:
            section.note(f"{_short(text)} ({key}): no answer yet.")
            continue
        section.table(["Latest answers"], [[answer] for answer in samples],
                      caption=f"{_short(text)} ({key}; {answered:,} answered)")


def render_report(survey_title: str, analysis: SurveyAnalysis, *,
                  subtitle: str | None = None,
                  generated_at: dt.datetime | None = None,
                  matrix: ResponseMatrix | None = None) -> str:
    """The HTML page (a string) of ``analysis``, titled after the survey; with the
    ``matrix`` it ran on, the choice and text questions too."""
    report = HtmlReport(f"Survey: {survey_title}",
                        subtitle or f"{analysis.n_responses:,} responses",
                        generated_at=generated_at)
    _nps(report, analysis)
    _descriptive(report, analysis)
    _drivers(report, analysis, analysis.drivers)
    _correlations(report, analysis, analysis.correlations)
    _factors(report, analysis, analysis.factors)
    _reliability(report, analysis, analysis.reliability)
    _clusters(report, analysis, analysis.clusters)
    if matrix is not None:
        _choices(report, matrix)
        _texts(report, matrix)
    _data_notes(report, analysis)
    return report.render()
