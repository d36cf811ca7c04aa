"""k-means clusters of respondents on standardised item scores.

Items are standardised (z-scores) so a 0-10 item does not outweigh a 1-5 one. Unless k is
given, each k in the range is fitted (scikit-learn ``KMeans``, k-means++, 2 starts) and
scored by the mean silhouette; the best k wins. Silhouette is quadratic in the rows, so
above ``k_selection_sample`` responses both the fits and the silhouettes run on a seeded
random sample of that size, and one k-means on all responses then starts from the chosen
sample solution's centres. Profiles are the mean answer per item on the raw scales.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.cluster import KMeans

from plugins.surveys.stats.prepare import CompleteData, finite
from plugins.surveys.stats.types import AnalysisOptions, ClusterProfile, ClusterResult

DISTANCE_CHUNK = 250


def silhouettes(points: np.ndarray, labelings: Sequence[np.ndarray]) -> list[float]:
    """Mean silhouette (Euclidean) of each labelling of the same points, in one pass over
    the pairwise distances (row blocks, so memory stays ~ DISTANCE_CHUNK x n). A point
    alone in its cluster scores 0, as in Rousseeuw's definition."""
    n = points.shape[0]
    onehots, sizes, offsets = [], [], [0]
    for labels in labelings:
        k = int(labels.max()) + 1
        onehots.append(np.eye(k)[labels])
        sizes.append(np.bincount(labels, minlength=k).astype(np.float64))
        offsets.append(offsets[-1] + k)
    stacked = np.hstack(onehots)
    squared = (points ** 2).sum(axis=1)
    totals = [0.0] * len(labelings)
    for start in range(0, n, DISTANCE_CHUNK):
        block = points[start:start + DISTANCE_CHUNK]
        distances = np.sqrt(np.clip(squared[start:start + block.shape[0], None] + squared[None]
                                    - 2.0 * block @ points.T, 0.0, None))
        sums = distances @ stacked
        for index, labels in enumerate(labelings):
            own = labels[start:start + block.shape[0]]
            per_cluster = sums[:, offsets[index]:offsets[index + 1]]
            size = sizes[index]
            rows = np.arange(block.shape[0])
            own_size = size[own]
            a = per_cluster[rows, own] / np.maximum(own_size - 1, 1)
            mean_other = per_cluster / size
            mean_other[rows, own] = np.inf
            b = mean_other.min(axis=1)
            score = np.where(own_size > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300),
                             0.0)
            totals[index] += float(score.sum())
    return [total / n for total in totals]


def _fit(points: np.ndarray, k: int, seed: int, init: np.ndarray | None = None) -> KMeans:
    if init is None:
        return KMeans(n_clusters=k, n_init=2, random_state=seed).fit(points)
    return KMeans(n_clusters=k, init=init, n_init=1, random_state=seed).fit(points)


def cluster_analysis(keys: Sequence[str], data: CompleteData, total_rows: int,
                     options: AnalysisOptions, warnings: list[str]) -> ClusterResult:
    n, p = data.values.shape
    requested = options.n_clusters
    low, high = options.cluster_k_range
    result = ClusterResult(False, "", data.rule, n, list(keys), k_requested=requested,
                           warnings=warnings)
    if p < 1:
        result.explanation = "Cluster analysis needs at least one varying item."
        return result
    candidates = [requested] if requested is not None else list(range(max(low, 2),
                                                                      high + 1))
    if requested is not None and requested < 2:
        result.explanation = f"{requested} cluster(s) requested; k-means needs at least 2."
        return result
    mean, sd = data.values.mean(axis=0), data.values.std(axis=0)
    points = (data.values - mean) / np.where(sd > 0, sd, 1.0)
    rng = np.random.default_rng(options.seed)
    sample = (np.sort(rng.choice(n, options.k_selection_sample, replace=False))
              if n > options.k_selection_sample else np.arange(n))
    sampled = points[sample]
    distinct = np.unique(sampled, axis=0).shape[0]
    candidates = [k for k in candidates if k <= distinct and k < sample.size]
    if not candidates:
        result.explanation = (f"Only {n} usable responses ({distinct} distinct answer "
                              f"patterns): too few for {requested or low} or more clusters "
                              f"({data.rule}).")
        return result
    fits = {k: _fit(sampled, k, options.seed) for k in candidates}
    usable = {k: fit for k, fit in fits.items() if np.unique(fit.labels_).size == k}
    if not usable:
        result.explanation = "k-means found fewer distinct clusters than asked for."
        return result
    scores = dict(zip(usable, silhouettes(sampled, [f.labels_ for f in usable.values()])))
    best = requested if requested in usable else max(scores, key=lambda k: scores[k])
    where = (f"on a random sample of {sample.size} of {n} responses (seed {options.seed})"
             if sample.size < n else f"on all {n} responses")
    if requested is None:
        selection = (f"k = {best}: the highest mean silhouette among k = "
                     f"{min(candidates)}..{max(candidates)}, k-means and silhouettes "
                     f"computed {where}")
    else:
        selection = f"k = {best} as requested; silhouette computed {where}"
    if sample.size < n:
        final = _fit(points, best, options.seed, init=usable[best].cluster_centers_)
        selection += "; the final k-means ran on all responses from the sample's centres."
        labels = final.labels_
    else:
        labels = usable[best].labels_
        selection += "."
    sizes = np.bincount(labels, minlength=best)
    sums = np.zeros((best, p))
    np.add.at(sums, labels, data.values)
    order = np.argsort(-sizes, kind="stable")
    relabel = np.empty(best, dtype=np.int64)
    relabel[order] = np.arange(best)
    labels = relabel[labels]
    row_labels: list[int | None] = [None] * total_rows
    for row, label in zip(data.rows.tolist(), labels.tolist()):
        row_labels[row] = label
    profiles = [ClusterProfile(int(relabel[c]), int(sizes[c]), float(sizes[c]) / n,
                               [float(v) for v in np.round(sums[c] / max(sizes[c], 1), 6)])
                for c in order]
    result.available = True
    result.explanation = f"{best} clusters of {n} responses."
    result.k = best
    result.silhouette_by_k = {k: float(round(v, 6)) for k, v in scores.items()}
    result.silhouette = finite(scores[best])
    result.selection = selection
    result.profiles = profiles
    result.labels = row_labels
    return result
