"""Cronbach's alpha: a hand-worked example, reverse-keyed items, alpha-if-deleted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plugins.surveys.stats import Item, ScaleSpec, analyse

ITEMS = [Item(k, "RATING", 1, 5) for k in ("a", "b", "c", "d")]
# Item variances 5/3, 4.75/3, 5/3; totals 5, 8, 10, 14 with variance 42.75/3:
# alpha = 3/2 x (1 - 14.75 / 42.75) = 56/57.
HAND = np.array([[1.0, 2, 2, 5], [2, 3, 3, 4], [3, 3, 4, 3], [4, 5, 5, 1]])


def _alpha_from_covariances(data: np.ndarray) -> float:
    """alpha = k^2 x mean inter-item covariance / variance of the total."""
    cov = np.cov(data, rowvar=False)
    k = data.shape[1]
    mean_cov = (cov.sum() - np.trace(cov)) / (k * (k - 1))
    return k * k * mean_cov / cov.sum()


def test_alpha_of_a_hand_worked_example() -> None:
    result = analyse(HAND, ITEMS, [ScaleSpec("service", ("a", "b", "c"))]).reliability[0]
    assert result.available and result.n_used == 4
    assert result.cronbach_alpha == pytest.approx(56 / 57)
    assert result.score_mean == pytest.approx(37 / 12)


def test_reverse_keyed_items_are_recoded_before_alpha() -> None:
    spec = ScaleSpec("service", ("a", "b", "c", "d"), reversed_items=("d",))
    result = analyse(HAND, ITEMS, [spec]).reliability[0]
    recoded = HAND.copy()
    recoded[:, 3] = 6 - recoded[:, 3]
    assert result.reversed_items == ["d"]
    assert result.cronbach_alpha == pytest.approx(_alpha_from_covariances(recoded))
    unreversed = analyse(HAND, ITEMS, [ScaleSpec("raw", ("a", "b", "c", "d"))]).reliability[0]
    assert unreversed.cronbach_alpha < result.cronbach_alpha


def test_alpha_if_deleted_and_item_total_correlation() -> None:
    rng = np.random.default_rng(6)
    data = np.clip(np.round(3 + rng.standard_normal((200, 1)) + rng.standard_normal((200, 4))),
                   1, 5)
    data[rng.random(data.shape) < 0.05] = math.nan
    result = analyse(data, ITEMS, [ScaleSpec("s", ("a", "b", "c", "d"))]).reliability[0]
    complete = data[~np.isnan(data).any(axis=1)]
    assert result.n_used == complete.shape[0]
    assert result.cronbach_alpha == pytest.approx(_alpha_from_covariances(complete))
    for position, entry in enumerate(result.alpha_if_deleted):
        rest = np.delete(complete, position, axis=1)
        assert entry.alpha == pytest.approx(_alpha_from_covariances(rest))
        assert entry.item_total_correlation == pytest.approx(
            np.corrcoef(complete[:, position], rest.sum(axis=1))[0, 1])


def test_unusable_scales_say_why() -> None:
    scales = [ScaleSpec("unknown", ("a", "zz")), ScaleSpec("single", ("a",)),
              ScaleSpec("flat", ("a", "b"))]
    flat = np.column_stack([np.full(5, 3.0), np.full(5, 2.0), np.arange(1.0, 6.0),
                            np.arange(1.0, 6.0)])
    unknown, single, constant = analyse(flat, ITEMS, scales).reliability
    assert not unknown.available and "zz" in unknown.explanation
    assert not single.available and "two items" in single.explanation
    assert not constant.available and "no variance" in constant.explanation
    assert constant.cronbach_alpha is None
    few = analyse(HAND[:2], ITEMS, [ScaleSpec("s", ("a", "b"))]).reliability[0]
    assert not few.available and "at least 3" in few.explanation
