"""Cronbach's alpha of each scale, with reverse-keyed items and alpha-if-item-deleted.

alpha = k / (k - 1) x (1 - sum of item variances / variance of the sum), on the responses
that answered every item of the scale (listwise). A reverse-keyed item is recoded
min + max - x first, so agreement always points the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from plugins.surveys.stats.prepare import finite
from plugins.surveys.stats.types import AlphaIfDeleted, Item, ReliabilityResult, ScaleSpec

RULE = "listwise deletion within the scale: responses that answered every item of it"


def cronbach_alpha(data: np.ndarray) -> float | None:
    """Alpha of an n x k matrix of complete answers (None when it is undefined)."""
    n, k = data.shape
    if k < 2 or n < 2:
        return None
    total_variance = data.sum(axis=1).var(ddof=1)
    if total_variance <= 0:
        return None
    return finite(k / (k - 1) * (1.0 - data.var(axis=0, ddof=1).sum() / total_variance))


def _correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    if x.std() == 0 or y.std() == 0:
        return None
    return finite(np.corrcoef(x, y)[0, 1])


def scale_reliability(scale: ScaleSpec, items: Sequence[Item], values: np.ndarray
                      ) -> ReliabilityResult:
    by_key = {item.key: j for j, item in enumerate(items)}
    result = ReliabilityResult(scale.name, False, "", RULE, list(scale.items),
                               [k for k in scale.reversed_items if k in scale.items])
    unknown = [k for k in (*scale.items, *scale.reversed_items) if k not in by_key]
    if unknown:
        result.explanation = (f"Scale '{scale.name}' names items that are not NPS or rating "
                              f"questions of this survey: {', '.join(unknown)}.")
        return result
    repeated = sorted({k for k in scale.items if scale.items.count(k) > 1})
    if repeated:
        result.explanation = (f"Scale '{scale.name}' names {', '.join(repeated)} more than "
                              "once; each item may count once in a scale.")
        return result
    outside = [k for k in scale.reversed_items if k not in scale.items]
    if outside:
        result.warnings.append(
            f"Scale '{scale.name}' marks {', '.join(repr(k) for k in outside)} as "
            "reverse-keyed, but that is not one of its items: ignored.")
    if len(scale.items) < 2:
        result.explanation = f"Scale '{scale.name}' needs at least two items for an alpha."
        return result
    columns = [by_key[k] for k in scale.items]
    data = values[:, columns]
    data = data[~np.isnan(data).any(axis=1)]
    for position, key in enumerate(scale.items):
        if key in scale.reversed_items:
            item = items[by_key[key]]
            data[:, position] = item.scale_min + item.scale_max - data[:, position]
    result.n_used = data.shape[0]
    if data.shape[0] < 3:
        result.explanation = (f"Only {data.shape[0]} responses answered every item of scale "
                              f"'{scale.name}'; alpha needs at least 3.")
        return result
    constant = [scale.items[i] for i in np.flatnonzero(data.std(axis=0) == 0)]
    if constant:
        result.warnings.append(f"Item(s) {', '.join(constant)} of scale '{scale.name}' have "
                               "the same answer in every response; they add nothing to the "
                               "scale.")
    alpha = cronbach_alpha(data)
    if alpha is None:
        result.explanation = (f"Scale '{scale.name}' has no variance in its total score: "
                              "alpha is undefined.")
        return result
    if alpha < 0:
        result.warnings.append(f"Alpha of '{scale.name}' is negative: some items correlate "
                               "negatively with the others; check for an item that should "
                               "be reverse-keyed.")
    total = data.sum(axis=1)
    for position, key in enumerate(scale.items):
        rest = np.delete(data, position, axis=1)
        result.alpha_if_deleted.append(AlphaIfDeleted(
            key, cronbach_alpha(rest) if rest.shape[1] >= 2 else None,
            _correlation(data[:, position], total - data[:, position])))
    score = data.mean(axis=1)
    result.available = True
    result.cronbach_alpha = alpha
    result.score_mean = finite(score.mean())
    result.score_sd = finite(score.std(ddof=1))
    result.explanation = f"Cronbach's alpha over {data.shape[0]} complete responses."
    return result
