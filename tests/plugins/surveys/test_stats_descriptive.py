"""Descriptive statistics, NPS and CSAT against numpy/scipy and figures worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from plugins.surveys.stats import AnalysisOptions, Item, analyse

NAN = math.nan


def _items() -> list[Item]:
    return [Item("nps", "NPS", 0, 10, "Recommend"), Item("speed", "RATING", 1, 5),
            Item("staff", "RATING", 1, 7)]


def _matrix(seed: int = 3, n: int = 240) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = np.column_stack([rng.integers(0, 11, n), rng.integers(1, 6, n),
                              rng.integers(1, 8, n)]).astype(float)
    matrix[rng.random(matrix.shape) < 0.1] = NAN
    return matrix


def test_item_figures_agree_with_numpy_and_scipy() -> None:
    matrix = _matrix()
    result = analyse(matrix, _items(), options=AnalysisOptions(n_clusters=2))
    for j, summary in enumerate(result.items):
        column = matrix[:, j]
        answered = column[~np.isnan(column)]
        assert summary.n == answered.size and summary.missing == column.size - answered.size
        assert summary.mean == pytest.approx(np.mean(answered), rel=1e-12)
        assert summary.sd == pytest.approx(np.std(answered, ddof=1), rel=1e-12)
        assert summary.median == np.median(answered)
        low, high = scipy_stats.t.interval(0.95, answered.size - 1, loc=np.mean(answered),
                                           scale=scipy_stats.sem(answered))
        assert (summary.mean_ci_low, summary.mean_ci_high) == (pytest.approx(low),
                                                               pytest.approx(high))
        values, counts = np.unique(answered, return_counts=True)
        observed = {f.value: f.count for f in summary.frequencies}
        assert list(observed) == list(range(summary.scale_min, summary.scale_max + 1))
        assert {v: c for v, c in observed.items() if c} == dict(zip(values.astype(int),
                                                                    counts.tolist()))
        assert sum(f.percent for f in summary.frequencies) == pytest.approx(100.0)


def test_frequencies_include_the_points_nobody_chose_and_an_even_median() -> None:
    matrix = np.array([[2.0], [2.0], [4.0], [5.0]])
    result = analyse(matrix, [Item("q", "RATING", 1, 5)])
    summary = result.items[0]
    assert [(f.value, f.count) for f in summary.frequencies] == [(1, 0), (2, 2), (3, 0),
                                                                 (4, 1), (5, 1)]
    assert summary.median == 3.0 and summary.mean == 3.25


def test_nps_score_and_confidence_interval_by_hand() -> None:
    # 50 promoters, 30 passives, 20 detractors: NPS 30.
    answers = np.array([10] * 25 + [9] * 25 + [8] * 10 + [7] * 20 + [6] * 5 + [0] * 15,
                       dtype=float)
    result = analyse(answers[:, None], [Item("nps", "NPS", 0, 10)])
    nps = result.nps[0]
    assert (nps.promoters, nps.passives, nps.detractors) == (50, 30, 20)
    assert (nps.promoters_pct, nps.passives_pct, nps.detractors_pct) == (50.0, 30.0, 20.0)
    assert nps.score == pytest.approx(30.0)
    # Adjusted Wald (Rocks 2016): 3 pseudo-answers, 3/4 promoter and 3/4 detractor.
    codes = np.r_[np.where(answers >= 9, 1.0, np.where(answers <= 6, -1.0, 0.0)), 1, -1, 0]
    weights = np.r_[np.ones(100), 0.75, 0.75, 1.5]
    centre = 100 * np.average(codes, weights=weights)
    variance = np.average(codes ** 2, weights=weights) - (centre / 100) ** 2
    half = 1.959964 * 100 * math.sqrt(variance / weights.sum())
    assert half == pytest.approx(15.075, abs=1e-3)
    assert nps.ci_low == pytest.approx(centre - half, abs=1e-4)
    assert nps.ci_high == pytest.approx(centre + half, abs=1e-4)
    assert "normal approximation" in nps.method
    assert result.csat == []


def test_nps_interval_is_clipped_to_the_score_range() -> None:
    result = analyse(np.array([[10.0], [9.0], [10.0]]), [Item("nps", "NPS", 0, 10)])
    nps = result.nps[0]
    assert nps.score == 100.0 and nps.ci_high == 100.0 and -100.0 < nps.ci_low < 100.0


def test_csat_is_the_top_two_box() -> None:
    matrix = np.array([[5.0, 7], [4, 6], [3, 5], [1, 7], [NAN, 1]])
    result = analyse(matrix, [Item("a", "RATING", 1, 5), Item("b", "RATING", 1, 7)])
    a, b = result.csat
    assert (a.n, a.top_values, a.satisfied, a.csat_pct) == (4, [4, 5], 2, 50.0)
    assert (b.n, b.top_values, b.satisfied, b.csat_pct) == (5, [6, 7], 3, 60.0)


def test_answers_outside_the_scale_are_reported_and_ignored() -> None:
    matrix = np.array([[1.0], [6.0], [2.5], [math.inf], [3.0], [NAN]])
    result = analyse(matrix, [Item("q", "RATING", 1, 5)])
    summary = result.items[0]
    assert (summary.n, summary.missing, summary.mean) == (2, 4, 2.0)
    assert any("3 answer(s) to 'q'" in w for w in result.warnings)


def test_an_item_nobody_answered_has_no_figures_not_nan() -> None:
    result = analyse(np.full((4, 1), NAN), [Item("nps", "NPS", 0, 10)])
    assert result.items[0].mean is None and result.items[0].sd is None
    assert result.items[0].median is None
    assert result.nps[0].score is None and result.nps[0].n == 0
