"""Pearson and Spearman correlations with pairwise deletion, and key drivers.

Each pair of items uses the responses that answered both (pairwise deletion). Both
coefficients come from the pair's contingency table (``prepare.cross_counts``): Pearson of
the answers, Spearman as Pearson of their mid-ranks (ties get the mean rank) among the
pair's responses, which is what ranking each pair's data separately gives, without sorting
per pair. p-values: two-sided, t = r sqrt((n-2) / (1-r^2)) on n-2 degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

from plugins.surveys.stats.prepare import complete_data, finite
from plugins.surveys.stats.types import (
    AnalysisOptions,
    CorrelationResult,
    Driver,
    DriverResult,
    Item,
)

PAIRWISE = "pairwise deletion: each pair of items uses the responses that answered both"


def weighted_correlation(table: np.ndarray, u: np.ndarray, v: np.ndarray) -> float | None:
    """Correlation of x and y where ``table[a, b]`` responses have x = u[a] and y = v[b]."""
    n = table.sum()
    if n < 2:
        return None
    a, b = table.sum(axis=1), table.sum(axis=0)
    du, dv = u - (a @ u) / n, v - (b @ v) / n
    sxx, syy = float(a @ du ** 2), float(b @ dv ** 2)
    if sxx <= 1e-12 * n or syy <= 1e-12 * n:
        return None
    r = float(du @ table @ dv) / math.sqrt(sxx * syy)
    return max(-1.0, min(1.0, r))


def mid_ranks(counts: np.ndarray) -> np.ndarray:
    """Rank (1-based, ties averaged) of each value given how many times each occurs."""
    return np.cumsum(counts) - counts + (counts + 1) / 2.0


def correlation_p(r: float | None, n: int) -> float | None:
    if r is None or n < 3:
        return None
    if abs(r) >= 1.0:
        return 0.0
    t = r * math.sqrt((n - 2) / (1.0 - r * r))
    return finite(2.0 * scipy_stats.t.sf(abs(t), n - 2))


def correlate(items: Sequence[Item], cross: np.ndarray, offsets: np.ndarray
              ) -> CorrelationResult:
    p = len(items)
    if p < 2:
        return CorrelationResult(False, "Correlations need at least two NPS or rating items.",
                                 PAIRWISE)
    pearson: list[list[float | None]] = [[None] * p for _ in range(p)]
    spearman: list[list[float | None]] = [[None] * p for _ in range(p)]
    pearson_p: list[list[float | None]] = [[None] * p for _ in range(p)]
    spearman_p: list[list[float | None]] = [[None] * p for _ in range(p)]
    counts = [[0] * p for _ in range(p)]
    values = [np.arange(it.scale_min, it.scale_max + 1, dtype=np.float64) for it in items]
    blocks = [slice(offsets[j], offsets[j] + it.points) for j, it in enumerate(items)]
    for i in range(p):
        for j in range(i, p):
            table = cross[blocks[i], blocks[j]]
            if i == j:
                table = np.diag(np.diagonal(table))
            n = int(table.sum())
            r = weighted_correlation(table, values[i], values[j])
            rho = weighted_correlation(table, mid_ranks(table.sum(axis=1)),
                                       mid_ranks(table.sum(axis=0)))
            for a, b in ((i, j), (j, i)):
                counts[a][b] = n
                pearson[a][b], spearman[a][b] = r, rho
                pearson_p[a][b] = correlation_p(r, n) if i != j else None
                spearman_p[a][b] = correlation_p(rho, n) if i != j else None
    missing = sum(1 for i in range(p) for j in range(i + 1, p) if pearson[i][j] is None)
    explanation = "" if not missing else (
        f"{missing} pair(s) have no coefficient (fewer than 2 shared answers, or an item "
        "that does not vary among them).")
    if missing == p * (p - 1) // 2:
        explanation = ("No pair of items has a coefficient: each needs at least 2 responses "
                       "that answered both items, with answers that vary.")
    return CorrelationResult(missing < p * (p - 1) // 2, explanation, PAIRWISE,
                             [it.key for it in items], pearson, pearson_p, spearman,
                             spearman_p, counts)


def relative_weights(rxx: np.ndarray, rxy: np.ndarray) -> np.ndarray:
    """Johnson's (2000) relative weights: each predictor's share of R^2.

    The predictors are replaced by their closest orthogonal counterparts Z (Z = X R^-1/2),
    the outcome is regressed on Z, and each Z's contribution is shared back to the
    predictors by the squared loadings of X on Z.
    """
    eigenvalues, vectors = np.linalg.eigh(rxx)
    lam = vectors @ np.diag(np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T
    beta_z = np.linalg.solve(lam, rxy)
    return (lam ** 2) @ (beta_z ** 2)


def key_drivers(items: Sequence[Item], values: np.ndarray, overall_key: str | None,
                correlations: CorrelationResult, usable: Sequence[int],
                options: AnalysisOptions) -> DriverResult:
    """Each usable (varying) item against the overall item: pairwise correlations, and the
    standardised regression weights and relative weights of the multiple regression of the
    overall item on all the others (those need complete responses: the missing rule)."""
    keys = [it.key for it in items]
    if overall_key is None:
        return DriverResult(False, "No overall question is designated: key drivers are "
                            "measured against it.", None, PAIRWISE)
    if overall_key not in keys or keys.index(overall_key) not in usable:
        return DriverResult(False, f"The overall question '{overall_key}' is not an NPS or "
                            "rating item of this analysis, or its answers do not vary.",
                            overall_key, PAIRWISE)
    target = keys.index(overall_key)
    predictors = [j for j in usable if j != target]
    if not predictors:
        return DriverResult(False, "There is no item besides the overall question.",
                            overall_key, PAIRWISE)
    warnings: list[str] = []
    minimum = max(50, 5 * (len(predictors) + 1))
    data = complete_data(values, [*predictors, target], options.missing, minimum)
    n_used = data.values.shape[0]
    rule = f"correlations: {PAIRWISE}; regression weights: {data.rule}"
    betas: list[float | None] = [None] * len(predictors)
    weights: list[float | None] = [None] * len(predictors)
    r_squared = None
    if n_used < len(predictors) + 2:
        warnings.append(f"Only {n_used} responses answered the overall question and every "
                        "other item: too few for the regression weights; drivers are ranked "
                        "by correlation.")
    else:
        std = data.values.std(axis=0)
        if np.any(std == 0):
            warnings.append("An item does not vary among the complete responses: no "
                            "regression weights; drivers are ranked by correlation.")
        else:
            corr = np.corrcoef(data.values, rowvar=False)
            rxx, rxy = corr[:-1, :-1], corr[:-1, -1]
            if np.linalg.cond(rxx) > 1e10:
                warnings.append("Some items are perfectly collinear: no regression weights; "
                                "drivers are ranked by correlation.")
            else:
                beta = np.linalg.solve(rxx, rxy)
                r_squared = finite(float(beta @ rxy))
                betas = [finite(b) for b in beta]
                weights = [finite(w) for w in relative_weights(rxx, rxy)]
    drivers = []
    for position, j in enumerate(predictors):
        drivers.append(Driver(keys[j], items[j].title, 0, correlations.n[j][target],
                              correlations.pearson[j][target],
                              correlations.pearson_p[j][target],
                              correlations.spearman[j][target], betas[position],
                              weights[position]))
    by_weight = all(d.relative_weight is not None for d in drivers)
    drivers.sort(key=lambda d: -(d.relative_weight if by_weight else abs(d.pearson or 0.0)))
    for rank, driver in enumerate(drivers, 1):
        driver.rank = rank
    how = "relative weight (share of R^2)" if by_weight else "absolute Pearson correlation"
    return DriverResult(True, f"Items ranked by {how} against '{overall_key}'.", overall_key,
                        rule, n_used, r_squared, drivers, warnings)
