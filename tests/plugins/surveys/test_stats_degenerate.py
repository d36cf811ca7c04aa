"""Degenerate input never raises and never yields NaN or infinity (JSON must carry it)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from plugins.surveys.stats import AnalysisOptions, Item, ScaleSpec, analyse
from plugins.surveys.stats.simulate import factor_responses, simple_structure

ITEMS = [Item("nps", "NPS", 0, 10), Item("a", "RATING", 1, 5), Item("b", "RATING", 1, 5),
         Item("c", "RATING", 1, 5), Item("overall", "RATING", 1, 5)]
SCALES = [ScaleSpec("service", ("a", "b", "c"), ("c",))]


def _json(analysis: object) -> str:
    return json.dumps(dataclasses.asdict(analysis), allow_nan=False)


CASES = {
    "no responses": np.empty((0, 5)),
    "one response": np.array([[9.0, 1, 2, 3, 4]]),
    "nothing answered": np.full((30, 5), math.nan),
    "every answer the same": np.tile([8.0, 3, 3, 3, 3], (60, 1)),
    "two items identical": np.column_stack([
        np.arange(60) % 11, np.arange(60) % 5 + 1, np.arange(60) % 5 + 1,
        (np.arange(60) * 7) % 5 + 1, (np.arange(60) * 3) % 5 + 1]).astype(float),
    "out of scale and infinite": np.array([[11.0, 0, 6, math.inf, -1]] * 10),
    "three responses": np.array([[9.0, 1, 2, 3, 4], [3, 2, 2, 5, 1], [7, 5, 4, 1, 3]]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_degenerate_matrices_give_explained_results(name: str) -> None:
    analysis = analyse(CASES[name], ITEMS, SCALES, "overall",
                       AnalysisOptions(rotation="oblimin"))
    _json(analysis)
    for part in (analysis.factors, analysis.clusters, analysis.drivers):
        assert part.available or part.explanation
    for scale in analysis.reliability:
        assert scale.available or scale.explanation
    assert len(analysis.clusters.labels) in (0, CASES[name].shape[0])


def test_constant_item_is_dropped_from_multivariate_analyses_with_a_warning() -> None:
    sim = factor_responses(300, simple_structure([4], 0.7), seed=4)
    matrix = np.column_stack([sim.ratings, np.full(300, 4.0)])
    items = [Item(f"q{j}", "RATING", 1, 5) for j in range(5)]
    analysis = analyse(matrix, items, options=AnalysisOptions(n_factors=1))
    assert analysis.factors.available and analysis.factors.keys == ["q0", "q1", "q2", "q3"]
    assert analysis.clusters.keys == ["q0", "q1", "q2", "q3"]
    assert any("'q4' has fewer than two different answers" in w for w in analysis.warnings)
    assert analysis.correlations.pearson[0][4] is None
    _json(analysis)


def test_mean_imputation_when_listwise_leaves_too_few() -> None:
    sim = factor_responses(200, simple_structure([3, 3], 0.7), seed=5, missing=0.25)
    items = [Item(f"q{j}", "RATING", 1, 5) for j in range(6)]
    auto = analyse(sim.ratings, items, options=AnalysisOptions(n_clusters=2))
    complete = int((~np.isnan(sim.ratings).any(axis=1)).sum())
    assert complete < 50
    assert auto.factors.missing_rule.startswith("mean imputation because listwise deletion "
                                                f"left only {complete}")
    answered = int((~np.isnan(sim.ratings)).any(axis=1).sum())
    assert auto.factors.n_used == auto.clusters.n_used == answered
    listwise = analyse(sim.ratings, items, options=AnalysisOptions(missing="listwise",
                                                                  n_clusters=2))
    assert listwise.factors.n_used == complete
    assert listwise.factors.missing_rule.startswith("listwise deletion")


def test_caller_mistakes_are_value_errors() -> None:
    with pytest.raises(ValueError, match="expected"):
        analyse(np.zeros((3, 2)), ITEMS)
    with pytest.raises(ValueError, match="unique"):
        analyse(np.zeros((3, 2)), [ITEMS[1], ITEMS[1]])
    with pytest.raises(ValueError, match="scale_min <= scale_max"):
        analyse(np.zeros((3, 1)), [Item("x", "RATING", 5, 1)])
    with pytest.raises(ValueError, match="rotation"):
        analyse(np.zeros((3, 5)), ITEMS, options=AnalysisOptions(rotation="quartimax"))
    with pytest.raises(ValueError, match="cluster_k_range"):
        analyse(np.zeros((3, 5)), ITEMS, options=AnalysisOptions(cluster_k_range=(1, 4)))
