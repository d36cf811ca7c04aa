"""Clusters: recovery of well separated groups (adjusted Rand index), silhouettes against
scikit-learn, sampling stated, labels per input row."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, silhouette_score

from plugins.surveys.stats import AnalysisOptions, Item, analyse
from plugins.surveys.stats.clusters import cluster_analysis, silhouettes
from plugins.surveys.stats.prepare import CompleteData

CENTRES = np.array([[1.5, 1.5, 1.5, 1.5, 1.5], [6.5, 6.5, 6.5, 1.5, 1.5],
                    [1.5, 1.5, 6.5, 6.5, 6.5], [6.5, 6.5, 6.5, 6.5, 6.5]])


def _groups(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(CENTRES), n)
    ratings = np.clip(np.round(CENTRES[truth] + rng.normal(0, 0.6, (n, 5))), 1, 7)
    return ratings, truth


ITEMS = [Item(f"q{j}", "RATING", 1, 7) for j in range(5)]


def test_kmeans_recovers_separated_groups_and_chooses_their_number() -> None:
    ratings, truth = _groups(800)
    result = analyse(ratings, ITEMS).clusters
    assert result.available and result.k == 4 and result.k_requested is None
    assert max(result.silhouette_by_k, key=result.silhouette_by_k.get) == 4
    assert sorted(result.silhouette_by_k) == [2, 3, 4, 5, 6, 7, 8]
    assert "on all 800 responses" in result.selection
    labels = np.array(result.labels)
    assert adjusted_rand_score(truth, labels) > 0.9
    assert [p.size for p in result.profiles] == sorted(np.bincount(labels), reverse=True)
    for profile in result.profiles:
        np.testing.assert_allclose(profile.means, ratings[labels == profile.cluster].mean(
            axis=0), atol=1e-6)
    assert sum(p.share for p in result.profiles) == pytest.approx(1.0)


def test_choosing_k_on_a_sample_is_stated_and_still_recovers_the_groups() -> None:
    ratings, truth = _groups(6000, seed=1)
    ratings[:10, 0] = math.nan
    result = analyse(ratings, ITEMS, options=AnalysisOptions(
        k_selection_sample=1500, missing="listwise")).clusters
    assert result.k == 4 and result.n_used == 5990
    assert "random sample of 1500 of 5990 responses (seed 0)" in result.selection
    assert "final k-means ran on all responses" in result.selection
    assert result.labels[:10] == [None] * 10
    assert adjusted_rand_score(truth[10:], result.labels[10:]) > 0.9


def test_requested_k_is_used() -> None:
    ratings, _ = _groups(400)
    options = AnalysisOptions(n_clusters=3, threads=None)
    result = analyse(ratings, ITEMS, options=options).clusters
    assert result.k == 3 and result.k_requested == 3 and list(result.silhouette_by_k) == [3]
    assert "as requested" in result.selection


def test_silhouettes_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    points = rng.standard_normal((300, 4))
    labelings = [rng.integers(0, k, 300) for k in (2, 3, 5)]
    labelings.append(np.r_[np.zeros(299, dtype=int), 1])  # a singleton cluster scores 0
    for ours, labels in zip(silhouettes(points, labelings), labelings):
        assert ours == pytest.approx(silhouette_score(points, labels), abs=1e-9)


def test_too_few_or_identical_responses_are_explained() -> None:
    same = CompleteData(np.ones((20, 3)), np.arange(20), "listwise")
    result = cluster_analysis(["a", "b", "c"], same, 20, AnalysisOptions(), [])
    assert not result.available and "1 distinct answer patterns" in result.explanation
    one = cluster_analysis(["a"], CompleteData(np.array([[1.0], [2.0]]), np.arange(2),
                                               "listwise"), 2, AnalysisOptions(), [])
    assert not one.available and "too few" in one.explanation
    bad_k = cluster_analysis(["a"], CompleteData(np.arange(10.0)[:, None], np.arange(10),
                                                 "listwise"), 10,
                             AnalysisOptions(n_clusters=1), [])
    assert not bad_k.available and "at least 2" in bad_k.explanation
