"""The shifted-beta-geometric (sBG) model of contractual retention, over arrays.

Fader & Hardie (2007), "How to project customer retention", Journal of Interactive
Marketing 21(1). A subscriber renews at the end of each period (a month, a year) or leaves;
each subscriber has a constant churn probability theta per period, theta ~ Beta(alpha, beta)
across subscribers. T, the period at whose end a subscriber leaves (T = 1, 2, ...):

    P(T = t) = B(alpha + 1, beta + t - 1) / B(alpha, beta)
    S(t) = P(T > t) = B(alpha, beta + t) / B(alpha, beta)
    r(t) = S(t) / S(t - 1) = (beta + t - 1) / (alpha + beta + t - 1)   (retention rate)

Data, per subscriber: ``tenure_periods`` n, the periods completed, and ``churned``. A
subscriber who left after n completed periods contributes P(T = n) (n >= 1); one still
active after n periods contributes S(n) (n = 0, a subscriber in the first period, adds
nothing). The log-likelihood::

    ln L = sum_churned ln P(T = n_i) + sum_active ln S(n_i)

is maximised over (ln alpha, ln beta) with L-BFGS-B and the analytic gradient
(d/da ln B(a, b) = psi(a) - psi(a + b)); counts are grouped by (n, churned) first, so a
fit costs the same for 100 or 10 million subscribers.

Given an active subscriber with n completed periods, theta's posterior is Beta(alpha,
beta + n), so:

- expected remaining lifetime E[T - n | T > n] = (alpha + beta + n - 1) / (alpha - 1),
  infinite for alpha <= 1 (a heavy tail of subscribers who practically never leave);
- discounted expected residual lifetime (DERL, Fader & Hardie 2010, "Customer-base
  valuation in a contractual setting"), the expected number of renewals still to come,
  each discounted by (1 + d) per period, valued just before the next renewal decision::

      DERL = sum_{k >= 1} S(n + k) / S(n) / (1 + d)^(k - 1)
           = (beta + n) / (alpha + beta + n) * 2F1(1, beta + n + 1; alpha + beta + n + 1;
                                                   1 / (1 + d))

- subscriber CLV = DERL x margin per period (the current period's payment is already in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from core.lazy import lazy_module
from plugins.churn.btyd import (
    InsufficientData,
    InvalidModelData,
    OptimiserReport,
    _FittedParams,
    _minimise,
    _natural_scale,
    _not_converged,
)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray
    from scipy import special

    FloatArray = NDArray[np.float64]
else:  # imported on first use: the app starts without the statistics stack
    np = lazy_module("numpy")
    special = lazy_module("scipy.special")

Period = Literal["month", "year"]
PERIODS = ("month", "year")

#: Two parameters need fewer subscribers than BG/NBD's four, but not a handful.
MIN_SUBSCRIBERS = 20


@dataclass(frozen=True)
class SBGParams(_FittedParams):
    alpha: float
    beta: float
    log_likelihood: float
    n_customers: int
    n_churned: int
    #: The longest tenure observed: projections beyond it are extrapolations.
    max_tenure: int
    period: str
    optimiser: OptimiserReport


SBGLike = SBGParams | tuple[float, float]


def _pair(params: SBGLike) -> tuple[float, float]:
    if isinstance(params, SBGParams):
        return params.alpha, params.beta
    alpha, beta = (float(v) for v in params)
    if not (alpha > 0 and beta > 0 and math.isfinite(alpha) and math.isfinite(beta)):
        raise InvalidModelData(f"alpha and beta must be positive (got {alpha:g}, {beta:g})")
    return alpha, beta


def sbg_arrays(tenure_periods: ArrayLike, churned: ArrayLike
               ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Checked arrays: tenures whole and >= 0, churned booleans (0/1), the same length, and
    a churned subscriber with at least one completed period (churn happens at the end of a
    period). Raises ``InvalidModelData`` naming the first bad row."""
    n = np.asarray(tenure_periods, dtype=float).reshape(-1)
    c = np.asarray(churned).reshape(-1)
    if len(n) != len(c):
        raise InvalidModelData(f"tenure_periods and churned have different lengths "
                               f"({len(n)}, {len(c)})")
    bad = ~np.isfinite(n) | (n < 0) | (n != np.floor(n))
    if bad.any():
        row = int(np.argmax(bad))
        raise InvalidModelData(f"tenure_periods must be a whole number >= 0 (row {row}: "
                               f"{n[row]:g})", "tenurePeriods")
    if c.dtype != np.bool_:
        numeric = np.asarray(c, dtype=float)
        bad = ~np.isin(numeric, (0.0, 1.0))
        if bad.any():
            row = int(np.argmax(bad))
            raise InvalidModelData(f"churned must be true or false (row {row})", "churned")
        c = numeric == 1.0
    left_early = c & (n < 1)
    if left_early.any():
        row = int(np.argmax(left_early))
        raise InvalidModelData(f"a churned subscriber has at least 1 completed period "
                               f"(row {row}: tenure_periods 0)", "tenurePeriods")
    return n.astype(np.int64), c


@dataclass
class _Counts:
    """Subscribers grouped by tenure: churned after n periods, and still active at n."""

    churned_n: FloatArray
    churned_w: FloatArray
    active_n: FloatArray
    active_w: FloatArray
    total: int

    @classmethod
    def of(cls, n: NDArray[np.int64], churned: NDArray[np.bool_]) -> _Counts:
        def grouped(values: NDArray[np.int64]) -> tuple[FloatArray, FloatArray]:
            counts = np.bincount(values) if len(values) else np.zeros(0, dtype=np.int64)
            present = np.flatnonzero(counts)
            return present.astype(float), counts[present].astype(float)

        cn, cw = grouped(n[churned])
        active = n[~churned]
        an, aw = grouped(active[active > 0])
        return cls(cn, cw, an, aw, len(n))


def _objective(log_params: FloatArray, data: _Counts) -> tuple[float, FloatArray]:
    """Minus the mean log-likelihood and its gradient in (ln alpha, ln beta)."""
    alpha, beta = np.exp(log_params)
    base = special.betaln(alpha, beta)
    psi_ab = special.digamma(alpha + beta)
    cn, cw, an, aw = data.churned_n, data.churned_w, data.active_n, data.active_w
    # ln P(T = n) = ln B(alpha + 1, beta + n - 1) - ln B(alpha, beta)
    ll = cw @ (special.betaln(alpha + 1.0, beta + cn - 1.0) - base)
    # ln S(n) = ln B(alpha, beta + n) - ln B(alpha, beta)
    ll += aw @ (special.betaln(alpha, beta + an) - base)
    weight = cw.sum() + aw.sum()
    d_base_a = special.digamma(alpha) - psi_ab
    d_base_b = special.digamma(beta) - psi_ab
    psi_churned = special.digamma(alpha + beta + cn)
    psi_active = special.digamma(alpha + beta + an)
    g_a = (cw @ (special.digamma(alpha + 1.0) - psi_churned)
           + aw @ (special.digamma(alpha) - psi_active) - weight * d_base_a)
    g_b = (cw @ (special.digamma(beta + cn - 1.0) - psi_churned)
           + aw @ (special.digamma(beta + an) - psi_active) - weight * d_base_b)
    total = max(data.total, 1)
    return -float(ll) / total, -np.array([g_a * alpha, g_b * beta]) / total


def sbg_log_likelihood(params: SBGLike, tenure_periods: ArrayLike, churned: ArrayLike
                       ) -> FloatArray:
    """The log-likelihood of each subscriber under (alpha, beta)."""
    alpha, beta = _pair(params)
    n, c = sbg_arrays(tenure_periods, churned)
    nf = n.astype(float)
    base = special.betaln(alpha, beta)
    churned_ll = special.betaln(alpha + 1.0, beta + np.maximum(nf, 1.0) - 1.0) - base
    active_ll = special.betaln(alpha, beta + nf) - base
    return np.where(c, churned_ll, active_ll)


def fit_sbg(tenure_periods: ArrayLike, churned: ArrayLike, period: Period = "month", *,
            require_convergence: bool = True) -> SBGParams:
    """Maximum-likelihood sBG parameters (see the module docstring).

    Raises ``InsufficientData`` with fewer than ``MIN_SUBSCRIBERS`` subscribers, none who
    churned, or nobody past the first period (then only alpha / (alpha + beta) is
    identified), and ``FitNotConverged`` when the optimiser fails or a parameter runs to its
    bound (unless ``require_convergence`` is false).
    """
    if period not in PERIODS:
        raise InvalidModelData(f"period must be one of {', '.join(PERIODS)} (got "
                               f"{period!r})", "period")
    n, c = sbg_arrays(tenure_periods, churned)
    if len(n) < MIN_SUBSCRIBERS:
        raise InsufficientData(f"the sBG model needs at least {MIN_SUBSCRIBERS} subscribers "
                               f"with a tenure (got {len(n)})")
    churners = int(np.count_nonzero(c))
    if churners == 0:
        raise InsufficientData("the sBG model needs at least one subscriber who churned")
    if int(n.max()) < 2:
        raise InsufficientData("the sBG model needs subscribers with 2 or more completed "
                               "periods: one period only identifies the first-period churn "
                               "rate, not how retention changes over time")
    data = _Counts.of(n, c)
    # Start from the first-period churn rate with beta = 1.
    first = max(min(churners / len(n), 0.9), 0.05)
    start = np.log([first / (1.0 - first), 1.0])
    solution, report = _minimise(_objective, start, data, data.total)
    if require_convergence and not report.converged:
        raise _not_converged("sBG", report)
    alpha, beta = (float(v) for v in np.exp(solution))
    neg_mean, _ = _objective(solution, data)
    return SBGParams(alpha=alpha, beta=beta, log_likelihood=float(-neg_mean * data.total),
                     n_customers=len(n), n_churned=churners, max_tenure=int(n.max()),
                     period=period, optimiser=_natural_scale(report, (alpha, beta)))


def fit_sbg_by_group(groups: ArrayLike, tenure_periods: ArrayLike, churned: ArrayLike,
                     period: Period = "month") -> dict[Any, SBGParams | str]:
    """One fit per cohort or segment (``groups`` labels each subscriber). A group that
    cannot be fitted maps to the reason, so one thin cohort does not lose the others."""
    labels = np.asarray(groups, dtype=object).reshape(-1)
    n, c = sbg_arrays(tenure_periods, churned)
    if len(labels) != len(n):
        raise InvalidModelData(f"groups and tenure_periods have different lengths "
                               f"({len(labels)}, {len(n)})", "groups")
    from plugins.churn.btyd import ChurnModelError

    fits: dict[Any, SBGParams | str] = {}
    for label in dict.fromkeys(labels.tolist()):
        mask = labels == label
        try:
            fits[label] = fit_sbg(n[mask], c[mask], period)
        except ChurnModelError as error:
            fits[label] = error.errors[0].message
    return fits


# --- Projections ----------------------------------------------------------------------------


def survival(params: SBGLike, periods: int | ArrayLike) -> FloatArray:
    """S(t) = P(T > t) for each t (S(0) = 1): the share of a new cohort still subscribed
    after t periods."""
    alpha, beta = _pair(params)
    t = np.asarray(periods, dtype=float)
    if np.any(t < 0):
        raise InvalidModelData("periods must be >= 0", "periods")
    return np.exp(special.betaln(alpha, beta + t) - special.betaln(alpha, beta))


def churn_probability(params: SBGLike, periods: int | ArrayLike) -> FloatArray:
    """P(T = t), t >= 1: the share of a new cohort that leaves at the end of period t."""
    alpha, beta = _pair(params)
    t = np.asarray(periods, dtype=float)
    if np.any(t < 1):
        raise InvalidModelData("periods must be >= 1", "periods")
    return np.exp(special.betaln(alpha + 1.0, beta + t - 1.0) - special.betaln(alpha, beta))


def retention_curve(params: SBGLike, horizon: int) -> FloatArray:
    """r(t) = (beta + t - 1) / (alpha + beta + t - 1) for t = 1..horizon: the share of the
    subscribers of period t - 1 who renew for period t. It rises with t: the subscribers
    likely to leave leave first."""
    alpha, beta = _pair(params)
    if horizon < 1:
        raise InvalidModelData("horizon must be >= 1", "horizon")
    t = np.arange(1, horizon + 1, dtype=float)
    return (beta + t - 1.0) / (alpha + beta + t - 1.0)


def expected_remaining_lifetime(params: SBGLike, tenure_periods: ArrayLike) -> FloatArray:
    """E[T - n | T > n] in periods for an active subscriber with n completed periods:
    (alpha + beta + n - 1) / (alpha - 1); infinite when alpha <= 1."""
    alpha, beta = _pair(params)
    n = np.asarray(tenure_periods, dtype=float)
    if alpha <= 1.0:
        return np.full(n.shape, math.inf)
    return (alpha + beta + n - 1.0) / (alpha - 1.0)


def discounted_expected_residual_lifetime(params: SBGLike, tenure_periods: ArrayLike,
                                          discount_rate: float) -> FloatArray:
    """DERL: the expected number of renewals still to come for an active subscriber with n
    completed periods, each discounted by (1 + discount_rate) per period, the next one
    (at the end of the current period) undiscounted (see the module docstring)."""
    alpha, beta = _pair(params)
    if not (discount_rate > 0 and math.isfinite(discount_rate)):
        # Without discounting the sum is the undiscounted remaining lifetime minus the
        # current period, infinite for alpha <= 1.
        raise InvalidModelData("discount rate must be > 0", "discountRate")
    n = np.asarray(tenure_periods, dtype=float)
    if np.any(n < 0):
        raise InvalidModelData("tenure_periods must be >= 0", "tenurePeriods")
    z = 1.0 / (1.0 + discount_rate)
    return ((beta + n) / (alpha + beta + n)
            * special.hyp2f1(1.0, beta + n + 1.0, alpha + beta + n + 1.0, z))


def subscriber_lifetime_value(params: SBGLike, tenure_periods: ArrayLike,
                              margin_per_period: float | ArrayLike, discount_rate: float
                              ) -> FloatArray:
    """CLV of active subscribers = DERL x margin per period (same currency as the margin,
    which the caller keeps as a Decimal at the edges)."""
    margin = np.asarray(margin_per_period, dtype=float)
    return discounted_expected_residual_lifetime(params, tenure_periods, discount_rate) * margin


def simulate_sbg(rng: np.random.Generator, alpha: float, beta: float, cohort_size: int,
                 observed_periods: int) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """A cohort observed for ``observed_periods`` periods: each subscriber draws theta from
    Beta(alpha, beta) and leaves at the end of period T ~ Geometric(theta); those with
    T > observed_periods are still active with that tenure."""
    theta = rng.beta(alpha, beta, size=cohort_size)
    lifetime = rng.geometric(np.clip(theta, 1e-12, 1.0))
    churned = lifetime <= observed_periods
    tenure = np.where(churned, lifetime, observed_periods).astype(np.int64)
    return tenure, churned
