"""Exploratory factor analysis of the item correlation matrix.

- Adequacy: KMO (overall and per item, from the anti-image/partial correlations) and
  Bartlett's test of sphericity (chi2 = -(n - 1 - (2p + 5) / 6) ln|R|, p(p-1)/2 df).
- Number of factors: Kaiser criterion (eigenvalues of R above 1) and Horn's parallel
  analysis: an observed eigenvalue of R counts while it exceeds the 95th percentile of the
  same-rank eigenvalue of correlation matrices of uncorrelated normal data of the same size.
  Those random matrices are drawn directly (a Wishart matrix by Bartlett's decomposition,
  scaled to a correlation matrix), which has the distribution of the correlation matrix of
  n normal responses but costs O(p^2) instead of O(n p) per draw.
- Extraction: iterated principal axis factoring (communalities start at the squared
  multiple correlations, then the eigen-decomposition of the reduced matrix is repeated
  until they change by less than 1e-6). A communality reaching 1 (Heywood case) is held at
  0.995 while iterating and reported in a warning; the final loadings may still imply 1 or
  more, and the reported communality says so rather than hiding it.
- Rotation (Kaiser-normalised rows in all three): varimax (orthogonal, the classic SVD
  iteration); oblimin with gamma = 0 (quartimin) by Jennrich's gradient projection
  algorithm; promax (power 4) from the varimax solution. Factors (a single one too) are
  signed so their loadings sum positive and ordered by explained variance.
- Variance explained per factor: diag(Phi P'P) / p (pattern times structure), which adds
  up to the mean communality under any rotation; for oblique rotations the squared pattern
  loadings alone would leave out what correlated factors share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from plugins.surveys.stats.prepare import CompleteData, finite
from plugins.surveys.stats.types import AnalysisOptions, FactorResult, ItemAdequacy

EXTRACTION = "principal axis factoring (iterated, squared multiple correlations to start)"
HEYWOOD_CAP = 0.995
KMO_MIN = 0.6


def kmo(corr: np.ndarray) -> tuple[float, np.ndarray]:
    """Kaiser-Meyer-Olkin measure (overall, per item) of a non-singular correlation matrix."""
    inverse = np.linalg.inv(corr)
    scale = np.sqrt(np.outer(np.diagonal(inverse), np.diagonal(inverse)))
    partial = -inverse / scale
    off = ~np.eye(corr.shape[0], dtype=bool)
    r2 = np.where(off, corr ** 2, 0.0)
    q2 = np.where(off, partial ** 2, 0.0)
    per_item = r2.sum(axis=1) / (r2.sum(axis=1) + q2.sum(axis=1))
    return float(r2.sum() / (r2.sum() + q2.sum())), per_item


def bartlett(corr: np.ndarray, n: int) -> tuple[float, int, float]:
    p = corr.shape[0]
    sign, logdet = np.linalg.slogdet(corr)
    chi2 = -(n - 1 - (2 * p + 5) / 6.0) * logdet
    df = p * (p - 1) // 2
    return float(chi2), df, float(scipy_stats.chi2.sf(chi2, df))


def random_eigenvalues(n: int, p: int, iterations: int, rng: np.random.Generator
                       ) -> np.ndarray:
    """Eigenvalues (descending, iterations x p) of correlation matrices of n x p independent
    standard normal data, drawn through the Wishart distribution of their scatter matrix."""
    df = n - 1
    lower = np.zeros((iterations, p, p))
    rows, cols = np.tril_indices(p, -1)
    lower[:, rows, cols] = rng.standard_normal((iterations, rows.size))
    for i in range(p):
        lower[:, i, i] = np.sqrt(rng.chisquare(df - i, size=iterations))
    scatter = lower @ lower.transpose(0, 2, 1)
    d = np.sqrt(np.diagonal(scatter, axis1=1, axis2=2))
    corr = scatter / (d[:, :, None] * d[:, None, :])
    return np.linalg.eigvalsh(corr)[:, ::-1]


def parallel_analysis(eigenvalues: np.ndarray, n: int, iterations: int, seed: int
                      ) -> tuple[int, np.ndarray]:
    thresholds = np.percentile(random_eigenvalues(n, eigenvalues.size, iterations,
                                                  np.random.default_rng(seed)), 95, axis=0)
    above = eigenvalues > thresholds
    count = int(np.argmin(above)) if not above.all() else int(above.size)
    return count, thresholds


def principal_axis(corr: np.ndarray, k: int, max_iter: int = 500, tol: float = 1e-6
                   ) -> tuple[np.ndarray, bool, list[int]]:
    """Unrotated loadings (p x k), whether the iteration converged, Heywood item indices."""
    communality = np.clip(1.0 - 1.0 / np.diagonal(np.linalg.inv(corr)), 0.0, HEYWOOD_CAP)
    heywood: set[int] = set()
    converged = False
    loadings = np.zeros((corr.shape[0], k))
    for _ in range(max_iter):
        reduced = corr.copy()
        np.fill_diagonal(reduced, communality)
        values, vectors = np.linalg.eigh(reduced)
        top = np.argsort(values)[::-1][:k]
        loadings = vectors[:, top] * np.sqrt(np.clip(values[top], 0.0, None))
        updated = (loadings ** 2).sum(axis=1)
        heywood.update(np.flatnonzero(updated >= 1.0).tolist())
        updated = np.minimum(updated, HEYWOOD_CAP)
        change = float(np.max(np.abs(updated - communality)))
        communality = updated
        if change < tol:
            converged = True
            break
    return loadings, converged, sorted(heywood)


def _normalised(loadings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.sqrt((loadings ** 2).sum(axis=1))
    norms = np.where(norms > 0, norms, 1.0)
    return loadings / norms[:, None], norms


def varimax(loadings: np.ndarray, max_iter: int = 1000, tol: float = 1e-10
            ) -> tuple[np.ndarray, np.ndarray]:
    """Rotated loadings and the orthogonal rotation matrix T (rotated = loadings @ T)."""
    a, norms = _normalised(loadings)
    p, k = a.shape
    rotation = np.eye(k)
    criterion = 0.0
    for _ in range(max_iter):
        b = a @ rotation
        u, s, vt = np.linalg.svd(a.T @ (b ** 3 - b @ np.diag((b ** 2).sum(axis=0)) / p))
        rotation = u @ vt
        previous, criterion = criterion, float(s.sum())
        if criterion < previous * (1 + tol):
            break
    return (a @ rotation) * norms[:, None], rotation


def _quartimin(pattern: np.ndarray) -> tuple[float, np.ndarray]:
    """Oblimin criterion with gamma = 0 and its gradient with respect to the loadings."""
    squared = pattern ** 2
    others = np.ones((pattern.shape[1],) * 2) - np.eye(pattern.shape[1])
    cross = squared @ others
    return float((squared * cross).sum() / 4.0), pattern * cross


def oblimin(loadings: np.ndarray, max_iter: int = 1000, tol: float = 1e-6
            ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Pattern loadings, factor correlations and convergence, by gradient projection
    (Jennrich 2002): minimise Q(A inv(T)') over T with unit-length columns."""
    a, norms = _normalised(loadings)
    k = a.shape[1]
    rotation = np.eye(k)
    pattern = a @ np.linalg.inv(rotation).T
    value, grad_pattern = _quartimin(pattern)
    gradient = -(pattern.T @ grad_pattern @ np.linalg.inv(rotation)).T
    step, converged = 1.0, False
    for _ in range(max_iter):
        projected = gradient - rotation @ np.diag((rotation * gradient).sum(axis=0))
        size = float(np.sqrt((projected ** 2).sum()))
        if size < tol:
            converged = True
            break
        step *= 2.0
        for _ in range(20):
            candidate = rotation - step * projected
            candidate = candidate / np.sqrt((candidate ** 2).sum(axis=0))
            candidate_pattern = a @ np.linalg.inv(candidate).T
            candidate_value, candidate_grad = _quartimin(candidate_pattern)
            if candidate_value < value - 0.5 * size ** 2 * step:
                break
            step /= 2.0
        rotation, pattern, value = candidate, candidate_pattern, candidate_value
        gradient = -(pattern.T @ candidate_grad @ np.linalg.inv(rotation)).T
    return pattern * norms[:, None], rotation.T @ rotation, converged


def promax(loadings: np.ndarray, power: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Pattern loadings and factor correlations: varimax, then a least-squares fit to the
    target of the varimax loadings raised to ``power`` (sign kept), columns rescaled."""
    rotated, _ = varimax(loadings)
    empty = np.flatnonzero(np.abs(rotated).max(axis=0) < 1e-12)
    if empty.size:
        # A factor without loadings has no target to fit (its column of the transform
        # would be zero, a singular matrix): leave it as varimax gave it, uncorrelated.
        kept = np.setdiff1d(np.arange(rotated.shape[1]), empty)
        pattern, phi = np.array(rotated), np.eye(rotated.shape[1])
        if kept.size > 1:
            part, part_phi = _promax_target(rotated[:, kept], power)
            pattern[:, kept] = part
            phi[np.ix_(kept, kept)] = part_phi
        return pattern, phi
    return _promax_target(rotated, power)


def _promax_target(rotated: np.ndarray, power: int) -> tuple[np.ndarray, np.ndarray]:
    target = rotated * np.abs(rotated) ** (power - 1)
    transform = np.linalg.lstsq(rotated, target, rcond=None)[0]
    transform = transform * np.sqrt(np.diagonal(np.linalg.inv(transform.T @ transform)))
    return rotated @ transform, np.linalg.inv(transform.T @ transform)


@dataclass
class Rotated:
    loadings: np.ndarray
    correlations: np.ndarray
    converged: bool


def rotate(loadings: np.ndarray, method: str) -> Rotated:
    k = loadings.shape[1]
    if k == 1:
        result = Rotated(loadings, np.eye(1), True)
    elif method == "varimax":
        rotated, _ = varimax(loadings)
        result = Rotated(rotated, np.eye(k), True)
    elif method == "oblimin":
        result = Rotated(*oblimin(loadings))
    elif method == "promax":
        result = Rotated(*promax(loadings), True)
    else:
        raise ValueError(f"unknown rotation {method!r}")
    signs = np.where(result.loadings.sum(axis=0) < 0, -1.0, 1.0)
    order = np.argsort(-explained_variance(result.loadings, result.correlations),
                       kind="stable")
    pattern = (result.loadings * signs)[:, order]
    phi = (result.correlations * np.outer(signs, signs))[np.ix_(order, order)]
    return Rotated(pattern, phi, result.converged)


def explained_variance(pattern: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Common variance per factor: diag(Phi P'P), the column sums of pattern x structure.
    They add up to the sum of the communalities for any rotation; for an orthogonal one
    they are the sums of squared loadings."""
    return (pattern * (pattern @ phi)).sum(axis=0)


def _rounded(matrix: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.round(matrix, 6)]


def factor_analysis(keys: Sequence[str], data: CompleteData, options: AnalysisOptions,
                    warnings: list[str]) -> FactorResult:
    """``warnings`` holds what was already said (items dropped); more are appended."""
    n, p = data.values.shape
    unavailable = FactorResult(False, "", data.rule, n, list(keys), EXTRACTION,
                               options.rotation, warnings=warnings)
    if p < 3:
        unavailable.explanation = (f"Factor analysis needs at least 3 varying items; "
                                   f"{p} are usable.")
        return unavailable
    if n < p + 2:
        unavailable.explanation = (f"Factor analysis of {p} items needs at least {p + 2} "
                                   f"responses; {n} are usable ({data.rule}).")
        return unavailable
    corr = np.corrcoef(data.values, rowvar=False)
    eigenvalues = np.sort(np.linalg.eigvalsh(corr))[::-1]
    if not np.all(np.isfinite(corr)) or eigenvalues[-1] < 1e-8:
        unavailable.explanation = ("The item correlation matrix is singular: some items are "
                                   "exact linear combinations of others (for example two "
                                   "items always answered alike). Remove one of them.")
        return unavailable
    overall_kmo, item_kmo = kmo(corr)
    chi2, df, bartlett_p = bartlett(corr, n)
    if n < 50 or n < 5 * p:
        warnings.append(f"Only {n} responses for {p} items: factor analysis wants at least "
                        "50 and 5 per item; the loadings may not be stable.")
    if overall_kmo < KMO_MIN:
        warnings.append(f"KMO is {overall_kmo:.2f} (below {KMO_MIN}): the items share too "
                        "little common variance for a useful factor analysis.")
    if bartlett_p >= 0.05:
        warnings.append(f"Bartlett's test is not significant (p = {bartlett_p:.3f}): the items "
                        "may be uncorrelated, so there may be no common factors to find.")
    kaiser = int((eigenvalues > 1.0).sum())
    parallel, thresholds = parallel_analysis(eigenvalues, n, options.parallel_iterations,
                                             options.seed)
    requested = options.n_factors
    k = requested if requested is not None else max(parallel, 1)
    maximum = max(1, p - 2)
    if k < 1 or k > maximum:
        warnings.append(f"{k} factors cannot be extracted from {p} items; using "
                        f"{min(max(k, 1), maximum)}.")
        k = min(max(k, 1), maximum)
    loadings, converged, heywood = principal_axis(corr, k)
    for index in heywood:
        warnings.append(f"Item '{keys[index]}' reached a communality of 1 (Heywood case): "
                        "its solution is not trustworthy; try fewer factors or drop it.")
    if not converged:
        warnings.append("Principal axis factoring did not converge in 500 iterations.")
    rotated = rotate(loadings, options.rotation)
    if not rotated.converged:
        warnings.append(f"The {options.rotation} rotation did not converge.")
    communalities = (loadings ** 2).sum(axis=1)
    structure = rotated.loadings @ rotated.correlations
    result = FactorResult(
        True, f"{k} factor(s) by {EXTRACTION}, {options.rotation} rotation"
        + ("" if k > 1 else " (one factor: nothing to rotate)") + ".",
        data.rule, n, list(keys), EXTRACTION, options.rotation if k > 1 else "none", k,
        requested, [float(v) for v in eigenvalues], [float(v) for v in thresholds], kaiser,
        parallel, _rounded(rotated.loadings), _rounded(structure),
        _rounded(rotated.correlations),
        [float(v) for v in explained_variance(rotated.loadings, rotated.correlations) / p],
        [float(v) for v in communalities], finite(overall_kmo),
        [ItemAdequacy(key, finite(item_kmo[i]), finite(communalities[i]))
         for i, key in enumerate(keys)],
        finite(chi2), df, finite(bartlett_p), converged and rotated.converged, warnings)
    if not all(math.isfinite(v) for row in result.loadings for v in row):
        unavailable.explanation = "The factor solution is numerically unstable."
        return unavailable
    return result
