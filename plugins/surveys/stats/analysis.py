"""``analyse``: every survey analysis on one response matrix, without the database."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from plugins.surveys.stats.clusters import cluster_analysis
from plugins.surveys.stats.correlation import correlate, key_drivers
from plugins.surveys.stats.descriptive import describe
from plugins.surveys.stats.factors import factor_analysis
from plugins.surveys.stats.prepare import CompleteData, clean, complete_data, cross_counts
from plugins.surveys.stats.reliability import scale_reliability
from plugins.surveys.stats.types import AnalysisOptions, Item, ScaleSpec, SurveyAnalysis


def _multivariate_data(values: np.ndarray, items: Sequence[Item], columns: list[int],
                       options: AnalysisOptions) -> tuple[list[str], CompleteData, list[str]]:
    """The complete responses factor and cluster analysis share, minus items that do not
    vary among them (each dropped with a warning)."""
    data = complete_data(values, columns, options.missing, max(50, 5 * len(columns)))
    warnings = []
    keep = []
    for position, column in enumerate(columns):
        if data.values.shape[0] and np.ptp(data.values[:, position]) == 0:
            warnings.append(f"Item '{items[column].key}' has the same answer in every "
                            "response used: left out of factor and cluster analysis.")
        else:
            keep.append(position)
    data = CompleteData(data.values[:, keep], data.rows, data.rule)
    return [items[columns[p]].key for p in keep], data, warnings


def _check_arguments(items: Sequence[Item], options: AnalysisOptions) -> None:
    """Mistakes of the caller (not of the data): ValueError."""
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise ValueError("item keys must be unique")
    for item in items:
        if item.kind not in ("NPS", "RATING") or item.scale_min > item.scale_max:
            raise ValueError(f"item {item.key!r}: kind NPS or RATING with scale_min <= "
                             "scale_max")
        if item.kind == "NPS" and (item.scale_min, item.scale_max) != (0, 10):
            raise ValueError(f"item {item.key!r}: an NPS item is answered on 0-10, not "
                             f"{item.scale_min}-{item.scale_max}")
    if options.rotation not in ("varimax", "oblimin", "promax"):
        raise ValueError(f"unknown rotation {options.rotation!r}")
    if options.missing not in ("auto", "listwise", "mean"):
        raise ValueError(f"unknown missing-data rule {options.missing!r}")
    low, high = options.cluster_k_range
    if not 2 <= low <= high or options.k_selection_sample < 10:
        raise ValueError("cluster_k_range must be (low, high) with 2 <= low <= high, and "
                         "k_selection_sample at least 10")


def analyse(matrix: np.ndarray, items: Sequence[Item], scales: Sequence[ScaleSpec] = (),
            overall_key: str | None = None, options: AnalysisOptions | None = None
            ) -> SurveyAnalysis:
    """Descriptive statistics, NPS, CSAT, correlations, key drivers, factor analysis,
    reliability and clusters of ``matrix`` (responses x items, NaN = no answer).

    Raises ValueError only for a caller's mistake (a matrix without one column per item,
    duplicate keys, an impossible scale or option); problems of the data itself end up in
    warnings and ``available=False``.
    """
    options = options or AnalysisOptions()
    items = list(items)
    _check_arguments(items, options)
    with threadpool_limits(limits=options.threads):
        return _analyse(np.asarray(matrix), items, scales, overall_key, options)


def _analyse(matrix: np.ndarray, items: list[Item], scales: Sequence[ScaleSpec],
             overall_key: str | None, options: AnalysisOptions) -> SurveyAnalysis:
    keys = [item.key for item in items]
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    cleaned = clean(matrix, items)
    values = cleaned.values
    total = values.shape[0]
    warnings = list(cleaned.warnings)
    cross, offsets = cross_counts(values, items)
    summaries, nps, csat = describe(items, cross, offsets, total)
    seconds["descriptive"] = time.perf_counter() - started

    started = time.perf_counter()
    usable = []
    for j, summary in enumerate(summaries):
        if sum(1 for f in summary.frequencies if f.count) >= 2:
            usable.append(j)
        else:
            warnings.append(f"Item '{summary.key}' has fewer than two different answers: it "
                            "has no correlations and is left out of drivers, factor and "
                            "cluster analysis.")
    correlations = correlate(items, cross, offsets)
    drivers = key_drivers(items, values, overall_key, correlations, usable, options)
    seconds["correlation"] = time.perf_counter() - started

    started = time.perf_counter()
    columns = [j for j in usable if not (options.exclude_overall and keys[j] == overall_key)]
    multi_keys, data, dropped = _multivariate_data(values, items, columns, options)
    factors = factor_analysis(multi_keys, data, options, list(dropped))
    seconds["factors"] = time.perf_counter() - started

    started = time.perf_counter()
    reliability = [scale_reliability(scale, items, values) for scale in scales]
    seconds["reliability"] = time.perf_counter() - started

    started = time.perf_counter()
    clusters = cluster_analysis(multi_keys, data, total, options, list(dropped))
    seconds["clusters"] = time.perf_counter() - started
    return SurveyAnalysis(total, summaries, nps, csat, correlations, drivers, factors,
                          reliability, clusters, warnings, seconds)
