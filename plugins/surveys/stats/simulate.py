"""Responses drawn from a known common-factor model, for the recovery tests, the benchmark
and demo data: x = pattern @ f + e, with factors f ~ N(0, phi) and unique errors e scaled so
each item has unit variance, then cut into the points of a rating scale."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SimulatedResponses:
    continuous: np.ndarray
    """n x p latent item scores (unit variance)."""
    ratings: np.ndarray
    """The same on the rating scale (whole points), NaN where an answer was removed."""
    factors: np.ndarray
    """n x k factor scores."""


def simple_structure(items_per_factor: list[int], loading: float) -> np.ndarray:
    """A pattern matrix where item blocks load ``loading`` on one factor each."""
    pattern = np.zeros((sum(items_per_factor), len(items_per_factor)))
    start = 0
    for factor, count in enumerate(items_per_factor):
        pattern[start:start + count, factor] = loading
        start += count
    return pattern


def factor_responses(n: int, pattern: np.ndarray, phi: np.ndarray | None = None,
                     scale: tuple[int, int] = (1, 5), missing: float = 0.0, seed: int = 0
                     ) -> SimulatedResponses:
    """``missing``: share of answers removed at random (independently per cell)."""
    rng = np.random.default_rng(seed)
    k = pattern.shape[1]
    phi = np.eye(k) if phi is None else phi
    factors = rng.standard_normal((n, k)) @ np.linalg.cholesky(phi).T
    common = np.einsum("ij,jk,ik->i", pattern, phi, pattern)
    unique = np.sqrt(np.clip(1.0 - common, 0.0, None))
    continuous = factors @ pattern.T + rng.standard_normal((n, pattern.shape[0])) * unique
    low, high = scale
    middle, spread = (low + high) / 2.0, (high - low) / 4.0
    ratings = np.clip(np.round(middle + spread * continuous), low, high)
    if missing:
        ratings[rng.random(ratings.shape) < missing] = np.nan
    return SimulatedResponses(continuous, ratings, factors)
