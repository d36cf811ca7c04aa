"""Correlations and key drivers against scipy and scikit-learn computed per pair, and
relative weights against their closed form for two predictors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.linear_model import LinearRegression

from plugins.surveys.stats import AnalysisOptions, Item, analyse
from plugins.surveys.stats.correlation import relative_weights
from plugins.surveys.stats.simulate import factor_responses, simple_structure


def _survey(n: int = 400, missing: float = 0.15):
    pattern = simple_structure([4], 0.7)
    data = factor_responses(n, pattern, scale=(1, 5), missing=missing, seed=11)
    ratings = data.ratings
    nps = np.clip(np.round(5 + 2.5 * data.continuous[:, :1]), 0, 10)
    nps[np.random.default_rng(2).random(n) < missing] = math.nan
    matrix = np.column_stack([nps, ratings])
    items = [Item("nps", "NPS", 0, 10)] + [Item(f"q{j}", "RATING", 1, 5) for j in range(4)]
    return matrix, items


def test_pairwise_pearson_and_spearman_match_scipy_on_each_pairs_answers() -> None:
    matrix, items = _survey()
    result = analyse(matrix, items, options=AnalysisOptions(n_clusters=2)).correlations
    assert result.available and result.keys == [it.key for it in items]
    assert result.missing_rule.startswith("pairwise")
    for i in range(len(items)):
        for j in range(len(items)):
            both = ~np.isnan(matrix[:, i]) & ~np.isnan(matrix[:, j])
            assert result.n[i][j] == both.sum()
            if i == j:
                assert result.pearson[i][j] == pytest.approx(1.0)
                continue
            x, y = matrix[both, i], matrix[both, j]
            pearson = scipy_stats.pearsonr(x, y)
            spearman = scipy_stats.spearmanr(x, y)
            assert result.pearson[i][j] == pytest.approx(pearson.statistic, abs=1e-10)
            assert result.pearson_p[i][j] == pytest.approx(pearson.pvalue, rel=1e-6, abs=1e-300)
            assert result.spearman[i][j] == pytest.approx(spearman.statistic, abs=1e-10)
            assert result.spearman_p[i][j] == pytest.approx(spearman.pvalue, rel=1e-6,
                                                            abs=1e-300)


def test_a_pair_without_shared_answers_has_no_coefficient() -> None:
    matrix = np.array([[1.0, np.nan, 2], [2, np.nan, 3], [np.nan, 4, 4], [np.nan, 5, 1],
                       [3, np.nan, 5]])
    items = [Item(k, "RATING", 1, 5) for k in "abc"]
    result = analyse(matrix, items).correlations
    assert result.pearson[0][1] is None and result.n[0][1] == 0
    assert result.pearson[0][2] is not None
    assert "1 pair(s)" in result.explanation


def test_driver_weights_match_a_regression_on_standardised_scores() -> None:
    matrix, items = _survey(n=600, missing=0.0)
    result = analyse(matrix, items, overall_key="q3", options=AnalysisOptions(n_clusters=2))
    drivers = result.drivers
    assert drivers.available and drivers.overall_key == "q3" and drivers.n_used == 600
    x, y = matrix[:, :4], matrix[:, 4]
    zx = (x - x.mean(axis=0)) / x.std(axis=0)
    zy = (y - y.mean()) / y.std()
    model = LinearRegression().fit(zx, zy)
    by_key = {d.key: d for d in drivers.drivers}
    for position, key in enumerate(["nps", "q0", "q1", "q2"]):
        assert by_key[key].beta == pytest.approx(model.coef_[position], abs=1e-9)
        assert by_key[key].pearson == pytest.approx(np.corrcoef(x[:, position], y)[0, 1])
    assert drivers.r_squared == pytest.approx(model.score(zx, zy), abs=1e-9)
    assert sum(d.relative_weight for d in drivers.drivers) == pytest.approx(
        drivers.r_squared)
    weights = [d.relative_weight for d in drivers.drivers]
    assert weights == sorted(weights, reverse=True)
    assert [d.rank for d in drivers.drivers] == [1, 2, 3, 4]


def test_relative_weights_closed_form_for_two_predictors() -> None:
    rho, r = 0.4, np.array([0.5, 0.3])
    a = (math.sqrt(1 + rho) + math.sqrt(1 - rho)) / 2
    b = (math.sqrt(1 + rho) - math.sqrt(1 - rho)) / 2
    lam = np.array([[a, b], [b, a]])  # the symmetric square root of [[1, rho], [rho, 1]]
    beta_z = np.linalg.inv(lam) @ r
    expected = (lam ** 2) @ beta_z ** 2
    weights = relative_weights(np.array([[1, rho], [rho, 1]]), r)
    np.testing.assert_allclose(weights, expected, atol=1e-12)
    np.testing.assert_allclose(relative_weights(np.eye(2), r), r ** 2, atol=1e-12)


def test_drivers_explain_what_is_missing() -> None:
    matrix, items = _survey(n=60)
    assert not analyse(matrix, items).drivers.available
    unknown = analyse(matrix, items, overall_key="nope").drivers
    assert not unknown.available and "nope" in unknown.explanation
    constant = matrix.copy()
    constant[:, 4] = 3.0
    flat = analyse(constant, items, overall_key="q3").drivers
    assert not flat.available and "do not vary" in flat.explanation
