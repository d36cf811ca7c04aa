"""Checking the response matrix and the missing-data rules shared by the analyses.

Answers are whole points of the item's scale. A cell that is NaN is a missing answer; a
value that is infinite, not whole or outside the scale cannot be an answer, so it is
treated as missing and reported in a warning (it never reaches a mean as a silent NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from plugins.surveys.stats.types import Item, MissingRule

CHUNK_ROWS = 20_000
"""Rows per block when counting answer combinations (bounds the one-hot block's memory)."""


@dataclass
class CleanMatrix:
    values: np.ndarray
    """n x p float64, NaN where there is no valid answer."""
    observed: np.ndarray
    """n x p bool."""
    warnings: list[str]


def clean(matrix: np.ndarray, items: Sequence[Item]) -> CleanMatrix:
    values = np.array(matrix, dtype=np.float64, copy=True)
    if values.ndim != 2 or values.shape[1] != len(items):
        raise ValueError(f"the matrix is {values.shape}, expected (responses, {len(items)})")
    warnings: list[str] = []
    for j, item in enumerate(items):
        column = values[:, j]
        present = ~np.isnan(column)
        with np.errstate(invalid="ignore"):
            bad = present & ~(np.isfinite(column) & (column == np.round(column))
                              & (column >= item.scale_min) & (column <= item.scale_max))
        count = int(bad.sum())
        if count:
            column[bad] = np.nan
            warnings.append(f"{count} answer(s) to '{item.key}' were not whole points of its "
                            f"scale {item.scale_min}-{item.scale_max} and were treated as "
                            "missing.")
    return CleanMatrix(values, ~np.isnan(values), warnings)


def cross_counts(values: np.ndarray, items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    """Counts of every pair of answers: ``C[a, b]`` = responses answering value a and b.

    Rows and columns of ``C`` are the points of every item's scale, item after item
    (``offsets[j]`` is where item j starts). The diagonal blocks hold each item's
    frequencies; the block (i, j) is the contingency table of items i and j over the
    responses that answered both. Every descriptive and correlation figure follows from it
    exactly, so the n x p matrix is read once.
    """
    sizes = np.array([item.points for item in items], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    total = int(sizes.sum())
    mins = np.array([item.scale_min for item in items], dtype=np.float64)
    counts = np.zeros((total, total), dtype=np.float64)
    for start in range(0, values.shape[0], CHUNK_ROWS):
        block = values[start:start + CHUNK_ROWS]
        rows, cols = np.nonzero(~np.isnan(block))
        codes = (block[rows, cols] - mins[cols]).astype(np.int64) + offsets[cols]
        onehot = np.zeros((block.shape[0], total), dtype=np.float64)
        onehot[rows, codes] = 1.0
        counts += onehot.T @ onehot
    return counts, offsets


@dataclass
class CompleteData:
    """The responses one multivariate analysis uses, without gaps."""

    values: np.ndarray
    rows: np.ndarray
    """Indices of the input rows used, in order."""
    rule: str
    """The rule in words, with the counts: goes into the result."""


def complete_data(values: np.ndarray, columns: Sequence[int], missing: MissingRule,
                  minimum: int) -> CompleteData:
    """Listwise deletion, or mean imputation (``mean``, or ``auto`` when listwise leaves
    fewer than ``minimum`` responses and imputation keeps more). Responses that answered
    none of the columns are never used."""
    data = values[:, list(columns)]
    present = ~np.isnan(data)
    answered_any = np.flatnonzero(present.any(axis=1))
    complete = np.flatnonzero(present.all(axis=1))
    total = values.shape[0]
    impute = missing == "mean" or (missing == "auto" and complete.size < minimum
                                   and answered_any.size > complete.size)
    if not impute:
        why = "" if missing == "listwise" else " (enough complete responses)"
        return CompleteData(data[complete], complete,
                            f"listwise deletion{why}: {complete.size} of {total} responses "
                            "answered every item used")
    kept = data[answered_any]
    means = np.nanmean(kept, axis=0) if kept.size else np.zeros(data.shape[1])
    filled = np.where(np.isnan(kept), means, kept)
    imputed = int(np.isnan(kept).sum())
    why = (f" because listwise deletion left only {complete.size} complete responses "
           f"(fewer than {minimum})" if missing == "auto" else "")
    return CompleteData(filled, answered_any,
                        f"mean imputation{why}: {answered_any.size} of {total} responses "
                        f"used, {imputed} missing answer(s) replaced by the item mean")


def finite(value: float | np.floating | None, digits: int | None = None) -> float | None:
    """A float fit for JSON: None instead of NaN or infinity."""
    if value is None:
        return None
    number = float(value)
    if not np.isfinite(number):
        return None
    return round(number, digits) if digits is not None else number
