"""What the survey analyses take and what they give back.

Inputs are plain metadata (no database rows): :class:`Item` per NPS or rating question,
:class:`ScaleSpec` per named group of rating items, :class:`AnalysisOptions`.

Every result is a dataclass of plain Python values (``float``, ``int``, ``str``, lists)
that :func:`dataclasses.asdict` turns into JSON as is: a figure that cannot be computed is
``None``, never NaN or infinity, and a whole analysis that cannot run has
``available=False`` and an ``explanation`` a person can act on. Each result says which
missing-data rule it used and how many responses it used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ItemKind = Literal["NPS", "RATING"]
Rotation = Literal["varimax", "oblimin", "promax"]
MissingRule = Literal["auto", "listwise", "mean"]


@dataclass(frozen=True)
class Item:
    """A numeric question: NPS (0-10) or RATING (integer scale ``scale_min..scale_max``)."""

    key: str
    kind: ItemKind
    scale_min: int
    scale_max: int
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or self.key

    @property
    def points(self) -> int:
        return self.scale_max - self.scale_min + 1


@dataclass(frozen=True)
class ScaleSpec:
    """A named group of rating items whose mean is a scale score; some reverse-keyed."""

    name: str
    items: tuple[str, ...]
    reversed_items: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnalysisOptions:
    """Choices of the analyses; the defaults suit a customer satisfaction survey.

    - ``n_factors``: extract this many factors (default: the parallel-analysis suggestion).
    - ``rotation``: ``varimax`` (orthogonal), ``oblimin`` or ``promax`` (oblique).
    - ``n_clusters``: fit this k (default: the best mean silhouette in ``cluster_k_range``).
    - ``missing``: for factor, driver-weight and cluster analysis: ``listwise`` (complete
      responses only), ``mean`` (missing answers replaced by the item mean) or ``auto``
      (listwise, unless that leaves fewer than ``max(50, 5 per item)`` responses and mean
      imputation keeps more). Correlations are always pairwise.
    - ``k_selection_sample``: above this many responses, k is chosen (k-means and
      silhouette) on a random sample of this size, then one k-means runs on all responses.
    - ``seed``: parallel analysis, sampling and k-means are reproducible with it.
    """

    n_factors: int | None = None
    rotation: Rotation = "varimax"
    n_clusters: int | None = None
    cluster_k_range: tuple[int, int] = (2, 8)
    missing: MissingRule = "auto"
    parallel_iterations: int = 100
    k_selection_sample: int = 10_000
    seed: int = 0
    exclude_overall: bool = True
    """Leave the overall question out of factor and cluster analysis (it is the outcome)."""
    threads: int | None = 1
    """BLAS/OpenMP threads (None: the libraries' default, all cores). One by default: on a
    busy machine (a web server, other jobs) multi-threaded k-means and BLAS wait on each
    other; in bench_surveys one thread took 1.4 s steady where two took 2.3-7.4 s."""


# --- Descriptive ----------------------------------------------------------------------------


@dataclass
class Frequency:
    value: int
    count: int
    percent: float
    """Share of the item's answers, 0-100."""


@dataclass
class ItemSummary:
    key: str
    label: str
    kind: str
    scale_min: int
    scale_max: int
    n: int
    missing: int
    mean: float | None
    sd: float | None
    """Sample standard deviation (ddof=1); None below 2 answers."""
    median: float | None
    mean_ci_low: float | None
    mean_ci_high: float | None
    """95% confidence interval of the mean (Student t, n-1 degrees of freedom)."""
    frequencies: list[Frequency]
    """Every point of the scale, zero counts included."""


@dataclass
class NpsResult:
    key: str
    n: int
    promoters: int
    passives: int
    detractors: int
    promoters_pct: float | None
    passives_pct: float | None
    detractors_pct: float | None
    score: float | None
    """Promoters % minus detractors %, -100..100."""
    ci_low: float | None
    ci_high: float | None
    method: str


@dataclass
class CsatResult:
    key: str
    n: int
    top_values: list[int]
    satisfied: int
    csat_pct: float | None
    """Share (0-100) of answers in the top two points of the scale (top-two-box)."""


# --- Correlation and drivers ----------------------------------------------------------------


@dataclass
class CorrelationResult:
    available: bool
    explanation: str
    missing_rule: str
    keys: list[str] = field(default_factory=list)
    pearson: list[list[float | None]] = field(default_factory=list)
    pearson_p: list[list[float | None]] = field(default_factory=list)
    spearman: list[list[float | None]] = field(default_factory=list)
    spearman_p: list[list[float | None]] = field(default_factory=list)
    n: list[list[int]] = field(default_factory=list)
    """Responses that answered both items of each pair."""


@dataclass
class Driver:
    key: str
    label: str
    rank: int
    n: int
    pearson: float | None
    pearson_p: float | None
    spearman: float | None
    beta: float | None
    """Standardised regression weight in the multiple regression of the overall item."""
    relative_weight: float | None
    """Johnson's relative weight: this item's share of R squared (the weights sum to R2)."""


@dataclass
class DriverResult:
    available: bool
    explanation: str
    overall_key: str | None
    missing_rule: str
    n_used: int = 0
    r_squared: float | None = None
    drivers: list[Driver] = field(default_factory=list)
    """Ranked by relative weight (by absolute Pearson correlation where weights are absent)."""
    warnings: list[str] = field(default_factory=list)


# --- Factor analysis ------------------------------------------------------------------------


@dataclass
class ItemAdequacy:
    key: str
    kmo: float | None
    communality: float | None


@dataclass
class MultivariateResult:
    """What factor and cluster analysis share: they run on the same complete responses."""

    available: bool
    explanation: str
    missing_rule: str
    n_used: int = 0
    keys: list[str] = field(default_factory=list)
    """The items used (constant ones and, by default, the overall question left out)."""


@dataclass
class FactorResult(MultivariateResult):
    extraction: str = ""
    rotation: str = ""
    n_factors: int = 0
    n_factors_requested: int | None = None
    eigenvalues: list[float] = field(default_factory=list)
    """Of the item correlation matrix, largest first (the scree)."""
    parallel_thresholds: list[float] = field(default_factory=list)
    """95th percentile of the eigenvalues of random data of the same size, per rank."""
    suggested_kaiser: int = 0
    suggested_parallel: int = 0
    loadings: list[list[float]] = field(default_factory=list)
    """Items x factors: rotated loadings (the pattern matrix for oblique rotations)."""
    structure: list[list[float]] = field(default_factory=list)
    """Item-factor correlations (equal to the loadings for orthogonal rotations)."""
    factor_correlations: list[list[float]] = field(default_factory=list)
    variance_explained: list[float] = field(default_factory=list)
    """Common variance of each factor / number of items (0-1): diag(Phi P'P) / p, the sum of
    squared loadings for varimax; the factors add up to the mean communality."""
    communalities: list[float] = field(default_factory=list)
    kmo: float | None = None
    items: list[ItemAdequacy] = field(default_factory=list)
    bartlett_chi2: float | None = None
    bartlett_df: int | None = None
    bartlett_p: float | None = None
    converged: bool = True
    warnings: list[str] = field(default_factory=list)


# --- Reliability ----------------------------------------------------------------------------


@dataclass
class AlphaIfDeleted:
    key: str
    alpha: float | None
    item_total_correlation: float | None
    """Corrected: the item against the sum of the other items of the scale."""


@dataclass
class ReliabilityResult:
    name: str
    available: bool
    explanation: str
    missing_rule: str
    items: list[str] = field(default_factory=list)
    reversed_items: list[str] = field(default_factory=list)
    n_used: int = 0
    cronbach_alpha: float | None = None
    alpha_if_deleted: list[AlphaIfDeleted] = field(default_factory=list)
    score_mean: float | None = None
    score_sd: float | None = None
    """Of the scale score: the mean of the items after reverse-keying, on the item scale."""
    warnings: list[str] = field(default_factory=list)


# --- Clusters -------------------------------------------------------------------------------


@dataclass
class ClusterProfile:
    cluster: int
    size: int
    share: float
    """0-1 of the responses clustered."""
    means: list[float]
    """Mean answer per item (``ClusterResult.keys`` order), on the items' own scales."""


@dataclass
class ClusterResult(MultivariateResult):
    k: int = 0
    k_requested: int | None = None
    silhouette_by_k: dict[int, float] = field(default_factory=dict)
    silhouette: float | None = None
    selection: str = ""
    """How k was chosen, on how many responses (sampling is stated here)."""
    profiles: list[ClusterProfile] = field(default_factory=list)
    labels: list[int | None] = field(default_factory=list)
    """Per input row (same order as the matrix): its cluster, None if it was not clustered."""
    warnings: list[str] = field(default_factory=list)


# --- Everything -----------------------------------------------------------------------------


@dataclass
class SurveyAnalysis:
    n_responses: int
    items: list[ItemSummary]
    nps: list[NpsResult]
    csat: list[CsatResult]
    correlations: CorrelationResult
    drivers: DriverResult
    factors: FactorResult
    reliability: list[ReliabilityResult]
    clusters: ClusterResult
    warnings: list[str]
    """Problems with the data as a whole (answers outside the scale, constant items)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per analysis (descriptive, correlation, factors, reliability, clusters)."""
