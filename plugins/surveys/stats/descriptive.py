"""Per item: n, missing, mean, standard deviation, median, frequencies; NPS and CSAT.

All figures come from the item's frequency counts over its scale (exact: answers are whole
points of the scale), so one pass over the matrix serves every item.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

from plugins.surveys.stats.prepare import finite
from plugins.surveys.stats.types import CsatResult, Frequency, Item, ItemSummary, NpsResult

Z_95 = 1.959963984540054
"""Two-sided 95% quantile of the standard normal distribution."""

NPS_PSEUDO_N = 3.0
NPS_PSEUDO_EACH = 0.75
"""Adjusted Wald (Rocks 2016): 3 pseudo-answers, 3/4 of them promoters, 3/4 detractors."""

NPS_METHOD = ("NPS = % promoters (9-10) - % detractors (0-6). 95% confidence interval: "
              "adjusted Wald (Rocks 2016), a normal approximation after adding 3 to n and "
              "3/4 to the promoters and to the detractors; standard error = sqrt((p_pro + "
              "p_det - (p_pro - p_det)^2) / (n + 3)) x 100 with the adjusted shares, "
              "centred on the adjusted score; the interval is widened to contain the "
              "observed score and clipped to -100..100. Unlike the plain Wald interval it "
              "never has zero width when every answer falls in one group.")


def frequency_median(values: np.ndarray, counts: np.ndarray) -> float | None:
    """The median of a sample given as value counts (mean of the two middle values when
    the count is even)."""
    n = int(counts.sum())
    if n == 0:
        return None
    cumulative = np.cumsum(counts)
    low = values[int(np.searchsorted(cumulative, (n - 1) // 2 + 1))]
    high = values[int(np.searchsorted(cumulative, n // 2 + 1))]
    return float((low + high) / 2)


def summarise_item(item: Item, counts: np.ndarray, total: int) -> ItemSummary:
    values = np.arange(item.scale_min, item.scale_max + 1, dtype=np.float64)
    n = int(counts.sum())
    mean = sd = ci_low = ci_high = None
    if n:
        mean = float(counts @ values / n)
    if n >= 2 and mean is not None:
        sd = math.sqrt(float(counts @ (values - mean) ** 2) / (n - 1))
        half = float(scipy_stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        ci_low, ci_high = mean - half, mean + half
    frequencies = [Frequency(int(v), int(c), 100.0 * float(c) / n if n else 0.0)
                   for v, c in zip(values, counts)]
    return ItemSummary(item.key, item.title, item.kind, item.scale_min, item.scale_max, n,
                       total - n, finite(mean), finite(sd), frequency_median(values, counts),
                       finite(ci_low), finite(ci_high), frequencies)


def net_promoter(item: Item, counts: np.ndarray) -> NpsResult:
    """NPS of a 0-10 item from its frequency counts (index = answer)."""
    values = np.arange(item.scale_min, item.scale_max + 1)
    n = int(counts.sum())
    promoters = int(counts[values >= 9].sum())
    detractors = int(counts[values <= 6].sum())
    passives = n - promoters - detractors
    if n == 0:
        return NpsResult(item.key, 0, 0, 0, 0, None, None, None, None, None, None,
                         NPS_METHOD + " No answers: nothing to compute.")
    p_pro, p_det = promoters / n, detractors / n
    score = 100.0 * (p_pro - p_det)
    low, high = nps_interval(promoters, detractors, n)
    return NpsResult(item.key, n, promoters, passives, detractors, 100.0 * p_pro,
                     100.0 * passives / n, 100.0 * p_det, score, min(low, score),
                     max(high, score), NPS_METHOD)


def nps_interval(promoters: int, detractors: int, n: int) -> tuple[float, float]:
    """The adjusted Wald 95% interval of the NPS (-100..100)."""
    adjusted = n + NPS_PSEUDO_N
    p_pro = (promoters + NPS_PSEUDO_EACH) / adjusted
    p_det = (detractors + NPS_PSEUDO_EACH) / adjusted
    centre = 100.0 * (p_pro - p_det)
    variance = p_pro + p_det - (p_pro - p_det) ** 2
    half = Z_95 * 100.0 * math.sqrt(max(variance, 0.0) / adjusted)
    return max(-100.0, centre - half), min(100.0, centre + half)


def top_two_box(item: Item, counts: np.ndarray) -> CsatResult:
    n = int(counts.sum())
    top = [item.scale_max - 1, item.scale_max] if item.points >= 2 else [item.scale_max]
    satisfied = int(counts[-len(top):].sum())
    return CsatResult(item.key, n, top, satisfied, 100.0 * satisfied / n if n else None)


def describe(items: Sequence[Item], cross: np.ndarray, offsets: np.ndarray, total: int
             ) -> tuple[list[ItemSummary], list[NpsResult], list[CsatResult]]:
    summaries, nps, csat = [], [], []
    for j, item in enumerate(items):
        block = slice(offsets[j], offsets[j] + item.points)
        counts = np.diagonal(cross[block, block]).copy()
        summaries.append(summarise_item(item, counts, total))
        if item.kind == "NPS":
            nps.append(net_promoter(item, counts))
        else:
            csat.append(top_two_box(item, counts))
    return summaries, nps, csat
