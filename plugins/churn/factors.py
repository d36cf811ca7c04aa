"""Which features the classifier learns from, and explanations people can act on.

``select_columns`` leaves out, before training, the feature columns that carry nothing:
those constant over the training customers (a plugin without data for anyone, an
interaction kind nobody has, purchase features of a business without purchases), and a
column that repeats another quantity (its correlation with an earlier kept column of
another factor is 1 to within ``DUPLICATE_CORRELATION``: tenure in days next to the same
tenure counted in months by an imported ``tenure`` attribute). Columns are taken in a
preferred order (renewal periods, then tenure in days, then the query's order), so the
kept one of two duplicates is the more readable.

``FactorGrouping`` turns per-column contributions into per-factor ones: the columns of one
quantity (``features.FactorColumn``: an attribute's one-hot columns, a value and its
missing indicator) are summed into one factor, named with the attribute's label and, for a
one-hot factor, the customer's own value ("Contract: Month-to-month").

Pure numpy over arrays: no database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np

    from plugins.churn.features import FactorColumn
else:  # imported on first use: the app starts without the statistics stack
    np = lazy_module("numpy")

#: |correlation| at or above which two columns of different factors are one quantity.
DUPLICATE_CORRELATION = 0.999
#: Rows the duplicate check looks at (evenly spaced): exact duplicates stay exact in any
#: subset, and the check costs the same for 200,000 training customers as for 20,000.
DUPLICATE_SAMPLE_ROWS = 20_000
#: Kept first when two columns are duplicates.
PREFERRED = ("tenure_periods", "tenure_days")


@dataclass(frozen=True)
class ColumnChoice:
    kept: list[int]
    constant: list[str]
    #: (left out, the kept column it repeats)
    duplicates: list[tuple[str, str]]

    def notes(self) -> list[str]:
        out = []
        if self.constant:
            out.append("features left out of the classifier, the same for every training "
                       "customer (no data): " + ", ".join(self.constant))
        if self.duplicates:
            out.append("features left out of the classifier, the same quantity as another: "
                       + ", ".join(f"{a} (as {b})" for a, b in self.duplicates))
        return out


def _group(layout: Mapping[str, FactorColumn], name: str) -> str:
    found = layout.get(name)
    return found.group if found is not None else name


def select_columns(X: np.ndarray, names: Sequence[str],
                   layout: Mapping[str, FactorColumn]) -> ColumnChoice:
    """The columns of ``X`` (rows = training customers) worth training on (module
    docstring), in their original order. NaN is a missing value."""
    X = np.asarray(X, dtype=float)
    width = X.shape[1]
    with np.errstate(all="ignore"):
        finite = ~np.isnan(X)
        some = finite.any(axis=0)
        high = np.where(some, np.nanmax(np.where(finite, X, -np.inf), axis=0), 0.0)
        low = np.where(some, np.nanmin(np.where(finite, X, np.inf), axis=0), 0.0)
    # A column with gaps varies (its missing indicator does) unless it is all gaps.
    varies = some & ((high > low) | ~finite.all(axis=0))
    constant = [names[j] for j in range(width) if not varies[j]]
    order = sorted((j for j in range(width) if varies[j]),
                   key=lambda j: (PREFERRED.index(names[j]) if names[j] in PREFERRED
                                  else len(PREFERRED), j))
    duplicates: list[tuple[str, str]] = []
    kept: list[int] = []
    if order:
        step = max(1, -(-len(X) // DUPLICATE_SAMPLE_ROWS))
        sample = X[::step][:, order]
        with np.errstate(all="ignore"):
            mean = np.nanmean(sample, axis=0)
            filled = np.where(np.isnan(sample), mean, sample)
            centred = filled - filled.mean(axis=0)
            scale = np.sqrt((centred ** 2).sum(axis=0))
            z = centred / np.where(scale > 0, scale, 1.0)
        correlation = np.abs(z.T @ z)
        groups = [_group(layout, names[j]) for j in order]
        chosen: list[int] = []  # positions in ``order``
        for position, j in enumerate(order):
            twin = next((c for c in chosen if groups[c] != groups[position]
                         and scale[c] > 0 and scale[position] > 0
                         and correlation[position, c] >= DUPLICATE_CORRELATION), None)
            if twin is None:
                chosen.append(position)
            else:
                duplicates.append((names[j], names[order[twin]]))
        kept = sorted(order[c] for c in chosen)
    return ColumnChoice(kept, constant, duplicates)


@dataclass(frozen=True)
class FactorGrouping:
    """How the classifier's columns add up to factors, and the factors' names.

    ``names`` lists every name a factor can have (a one-hot factor has one per value and
    one for none of them); factor ``g`` of a customer is named ``names[offsets[g] +
    option[g]]``, ``option`` read from the customer's one-hot columns.
    """

    names: tuple[str, ...]
    #: classifier columns x factors, 0/1
    matrix: np.ndarray
    offsets: np.ndarray
    #: per one-hot factor: (factor index, the full feature table's columns of its values)
    onehot: tuple[tuple[int, np.ndarray], ...]

    @classmethod
    def build(cls, layout: Mapping[str, FactorColumn], table_names: Sequence[str],
              classifier_names: Sequence[str]) -> FactorGrouping:
        """``table_names``: the full feature table's columns (``features.feature_names``);
        ``classifier_names``: those the classifier uses (plus columns of its own, such as
        the BG/NBD dropout probability)."""
        groups: dict[str, int] = {}
        for name in classifier_names:
            groups.setdefault(_group(layout, name), len(groups))
        matrix = np.zeros((len(classifier_names), len(groups)))
        for i, name in enumerate(classifier_names):
            matrix[i, groups[_group(layout, name)]] = 1.0
        position = {name: i for i, name in enumerate(table_names)}
        names: list[str] = []
        offsets = np.zeros(len(groups), dtype=np.intp)
        onehot: list[tuple[int, np.ndarray]] = []
        for group, g in groups.items():
            offsets[g] = len(names)
            values = [(n, c) for n, c in layout.items()
                      if c.group == group and c.role == "onehot" and n in position]
            if values:
                label, other = values[0][1].label, values[0][1].other
                names += [f"{label}: {c.value}" for _, c in values]
                names.append(f"{label}: {other}")
                onehot.append((g, np.asarray([position[n] for n, _ in values], np.intp)))
                continue
            member = next((layout[n] for n in classifier_names
                           if n in layout and layout[n].group == group), None)
            names.append(member.label if member is not None else group)
        return cls(tuple(names), matrix, offsets, tuple(onehot))

    def top(self, contributions: np.ndarray, table: np.ndarray, k: int
            ) -> tuple[np.ndarray, np.ndarray]:
        """Per customer (rows), the ``k`` factors with the largest |contribution|, largest
        first, as (index into ``names``, contribution). ``contributions``: rows x
        classifier columns; ``table``: the same rows of the full feature table."""
        summed = np.asarray(contributions, dtype=float) @ self.matrix
        rows = len(summed)
        if summed.shape[1] == 0:
            empty = np.empty((rows, 0))
            return empty.astype(np.intp), empty
        option = np.zeros(summed.shape, dtype=np.intp)
        for g, columns in self.onehot:
            values = table[:, columns]
            chosen = np.argmax(values == 1.0, axis=1)
            option[:, g] = np.where((values == 1.0).any(axis=1), chosen, len(columns))
        order = np.argsort(-np.abs(summed), axis=1, kind="stable")[:, :k]
        index = self.offsets[order] + np.take_along_axis(option, order, axis=1)
        return index, np.take_along_axis(summed, order, axis=1)
