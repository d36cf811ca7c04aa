"""Buy-till-you-die models over arrays: BG/NBD, Gamma-Gamma and customer lifetime value.

Pure numpy/scipy: no database, no Flask. The inputs follow CONTRACTS.md ("Statistics
conventions"): per customer, ``frequency`` x = the number of repeat purchase days (distinct
days after the first), ``recency`` t_x = the time from the first purchase to the last
one, ``age`` T = the time from the first purchase to the calibration date (``as_of``), and
``monetary`` = the mean total of the repeat days. Times are in one unit, a day or a week
(``time_unit``); predictions take their horizon in that same unit.

BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"). While active, a
customer buys as a Poisson process of rate lambda, lambda ~ Gamma(shape r, rate alpha);
after each repeat purchase the customer drops out for good with probability p,
p ~ Beta(a, b). The log-likelihood of one customer, maximised over (r, alpha, a, b)::

    ln L = ln G(r + x) - ln G(r) + r ln(alpha)
         + ln G(a + b) + ln G(b + x) - ln G(b) - ln G(a + b + x)
         + ln( (alpha + T)^-(r + x)
               + [x > 0] a / (b + x - 1) * (alpha + t_x)^-(r + x) )

(G is the gamma function). The last line is evaluated as ``logaddexp`` of the two log
terms, the gamma functions as ``gammaln``; the optimiser (L-BFGS-B) works on the logs of
the four parameters with the analytic gradient, on times rescaled to a mean age of 1. The
terms in x alone are computed once per distinct frequency.

Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie's note on the
Gamma-Gamma spend model). The amounts of one customer's purchases are Gamma(p, nu),
nu ~ Gamma(q, gamma) across customers, independent of the purchase process. For a repeat
buyer with x purchases of mean amount m::

    ln L = ln G(p x + q) - ln G(p x) - ln G(q) + q ln(gamma)
         + (p x - 1) ln(m) + p x ln(x) - (p x + q) ln(gamma + m x)

The expected average order value given (x, m) is ``(gamma + m x) p / (p x + q - 1)``.

Customer lifetime value over K periods of length L with a discount rate d per period::

    CLV = E[AOV | x, m] * sum_{k=1..K} ( E[Y(k L)] - E[Y((k - 1) L)] ) / (1 + d)^k

where E[Y(t)] is the BG/NBD expected number of purchases in (T, T + t] given the history:
each period's expected purchases are discounted at the end of that period.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Self

from core.errors import FieldError, UserError
from core.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray
    from scipy import optimize, special

    FloatArray = NDArray[np.float64]
else:  # imported on first use: the app starts without the statistics stack
    np = lazy_module("numpy")
    optimize = lazy_module("scipy.optimize")
    special = lazy_module("scipy.special")

TimeUnit = Literal["day", "week"]
TIME_UNITS: dict[str, float] = {"day": 1.0, "week": 7.0}

#: Fewer customers than this cannot identify four parameters with any confidence.
MIN_CUSTOMERS = 20
#: Gamma-Gamma needs this many repeat buyers with a positive monetary value.
MIN_REPEAT_BUYERS = 20
#: Above this |Pearson correlation| between frequency and monetary value among repeat
#: buyers, Gamma-Gamma's independence assumption is doubtful and the fit says so.
CORRELATION_WARNING = 0.3
#: The optimiser keeps every log-parameter within +-LOG_BOUND (e^15 is about 3.3 million);
#: times and amounts are rescaled to a mean of 1 first, so real estimates sit well inside.
#: An estimate within 1 of the bound means the data do not identify that parameter.
LOG_BOUND = 15.0


# --- Errors ---------------------------------------------------------------------------------


class ChurnModelErrorCode:
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"
    NOT_CONVERGED = "NOT_CONVERGED"
    INVALID_DATA = "INVALID_DATA"
    MODEL_FORMAT = "MODEL_FORMAT"


class ChurnModelError(UserError):
    """A model could not be fitted or used on the data given; nothing was stored."""

    code = ChurnModelErrorCode.INVALID_DATA

    def __init__(self, message: str, field_name: str | None = None):
        super().__init__(FieldError(message, self.code, field_name))


class InvalidModelData(ChurnModelError):
    """Arrays of the wrong shape, negative or non-finite values, recency after age, ..."""

    code = ChurnModelErrorCode.INVALID_DATA


class InsufficientData(ChurnModelError):
    """Too few customers, repeat buyers, labels or classes to fit a model."""

    code = ChurnModelErrorCode.INSUFFICIENT_DATA


class FitNotConverged(ChurnModelError):
    """The optimiser stopped without meeting its convergence test."""

    code = ChurnModelErrorCode.NOT_CONVERGED


# --- Inputs ---------------------------------------------------------------------------------


def days_to_unit(days: ArrayLike, time_unit: TimeUnit) -> FloatArray:
    """Durations in days expressed in ``time_unit`` (weeks: days / 7)."""
    return np.asarray(days, dtype=float) / TIME_UNITS[_checked_unit(time_unit)]


def _checked_unit(time_unit: str) -> str:
    if time_unit not in TIME_UNITS:
        raise InvalidModelData(f"time unit must be one of {', '.join(TIME_UNITS)} "
                               f"(got {time_unit!r})", "timeUnit")
    return time_unit


def _vector(values: ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=float)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise InvalidModelData(f"{name} must be a one-dimensional array", name)
    bad = ~np.isfinite(array)
    if bad.any():
        raise InvalidModelData(f"{name} has a missing or infinite value (row "
                               f"{int(np.argmax(bad))})", name)
    return array


def _first_bad(mask: NDArray[np.bool_]) -> int:
    return int(np.argmax(mask))


def rfm_arrays(frequency: ArrayLike, recency: ArrayLike, age: ArrayLike
               ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Checked float arrays (x, t_x, T): same length, x whole and >= 0, 0 <= t_x <= T,
    t_x = 0 when x = 0 (T = 0, a first purchase on the calibration day, is allowed: it
    adds nothing to the likelihood). Raises ``InvalidModelData`` naming the first bad
    row."""
    x = _vector(frequency, "frequency")
    tx = _vector(recency, "recency")
    age_ = _vector(age, "age")
    if not (len(x) == len(tx) == len(age_)):
        raise InvalidModelData(f"frequency, recency and age have different lengths "
                               f"({len(x)}, {len(tx)}, {len(age_)})")
    checks = [
        (age_ < 0, "age", ">= 0"),
        ((x < 0) | (x != np.floor(x)), "frequency", "a whole number >= 0"),
        (tx < 0, "recency", ">= 0"),
        (tx > age_, "recency", "at most the age"),
        ((x == 0) & (tx != 0), "recency", "0 for a customer without repeat purchases"),
    ]
    for mask, name, rule in checks:
        if mask.any():
            row = _first_bad(mask)
            raise InvalidModelData(f"{name} must be {rule} (row {row}: frequency "
                                   f"{x[row]:g}, recency {tx[row]:g}, age {age_[row]:g})",
                                   name)
    return x, tx, age_


# --- BG/NBD ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimiserReport:
    converged: bool
    iterations: int
    evaluations: int
    message: str
    gradient_norm: float
    at_bound: bool
    #: Asymptotic standard errors of the parameters, in their order (inverse observed
    #: information, by the delta method from the log scale); None where the Hessian is
    #: not positive definite.
    standard_errors: tuple[float, ...] | None


class _FittedParams:
    """JSON round trip of a fit's dataclass (the ``params`` of a stored model version)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        report = dict(data["optimiser"])
        errors = report.get("standard_errors")
        report["standard_errors"] = None if errors is None else tuple(map(float, errors))
        return cls(**{**data, "optimiser": OptimiserReport(**report)})


@dataclass(frozen=True)
class BGNBDParams(_FittedParams):
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n_customers: int
    n_repeat_buyers: int
    time_unit: str
    optimiser: OptimiserReport



#: Fitted parameters, or a bare (r, alpha, a, b) tuple.
BGNBDLike = BGNBDParams | tuple[float, float, float, float]


@dataclass
class _RFMData:
    """The arrays the BG/NBD objective needs: repeat buyers' (x, t_x, T), the ages of the
    others, and the distinct frequencies with their counts (for the terms in x alone)."""

    x: FloatArray
    tx: FloatArray
    age: FloatArray
    zero_age: FloatArray
    unique_x: FloatArray
    unique_x_count: FloatArray
    total: int

    @classmethod
    def of(cls, x: FloatArray, tx: FloatArray, age: FloatArray) -> _RFMData:
        counts = np.bincount(x.astype(np.int64))
        present = np.flatnonzero(counts)
        positive = x > 0
        return cls(x=x[positive], tx=tx[positive], age=age[positive], zero_age=age[~positive],
                   unique_x=present.astype(float), unique_x_count=counts[present].astype(float),
                   total=len(x))


#: Log-odds are clipped to +-this: exp() would overflow above, and below it would give
#: subnormal numbers (slow to compute); log1p(exp(d)) is exact to double precision there.
_MAX_LOG_ODDS = 700.0


def _bgnbd_objective(log_params: FloatArray, data: _RFMData) -> tuple[float, FloatArray]:
    """Minus the mean log-likelihood and its gradient in the log-parameters."""
    r, alpha, a, b = np.exp(log_params)
    n, ux, uw = data.total, data.unique_x, data.unique_x_count
    # Terms in x alone: once per distinct frequency.
    ll = uw @ (special.gammaln(r + ux) + special.gammaln(b + ux)
               - special.gammaln(a + b + ux))
    ll += n * (special.gammaln(a + b) - special.gammaln(r) - special.gammaln(b)
               + r * math.log(alpha))
    psi_abx = special.digamma(a + b + ux)
    g_r = uw @ special.digamma(r + ux) + n * (math.log(alpha) - special.digamma(r))
    g_alpha = n * r / alpha
    g_a = n * special.digamma(a + b) - uw @ psi_abx
    g_b = n * (special.digamma(a + b) - special.digamma(b)) + uw @ (special.digamma(b + ux)
                                                                     - psi_abx)
    # Customers without repeat purchases: -r ln(alpha + T).
    log_zero = np.log(alpha + data.zero_age)
    ll -= r * log_zero.sum()
    g_r -= log_zero.sum()
    g_alpha -= r * np.sum(1.0 / (alpha + data.zero_age))

    # Repeat buyers: ln(e^still + e^dropped) = still + ln(1 + e^d), d = dropped - still,
    # where still = -(r + x) ln(alpha + T) and dropped = ln a - ln(b + x - 1) - (r + x)
    # ln(alpha + t_x). The share of "dropped" in the sum is e^d / (1 + e^d).
    x = data.x
    rx = r + x
    log_age = np.log(alpha + data.age)
    log_rec = np.log(alpha + data.tx)
    bx = b + x - 1.0
    odds = np.exp(np.clip(math.log(a) - np.log(bx) + rx * (log_age - log_rec),
                          -_MAX_LOG_ODDS, _MAX_LOG_ODDS))
    ll += np.sum(np.log1p(odds) - rx * log_age)
    dropped = odds / (1.0 + odds)
    g_r -= np.sum(log_age + dropped * (log_rec - log_age))
    g_alpha -= np.sum(rx * ((1.0 - dropped) / (alpha + data.age) + dropped / (alpha + data.tx)))
    g_a += dropped.sum() / a
    g_b -= np.sum(dropped / bx)

    gradient = np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b])
    return -ll / n, -gradient / n


def bgnbd_log_likelihood(params: BGNBDLike,
                         frequency: ArrayLike, recency: ArrayLike, age: ArrayLike
                         ) -> FloatArray:
    """The log-likelihood of each customer under (r, alpha, a, b)."""
    r, alpha, a, b = _bgnbd_tuple(params)
    x, tx, age_ = rfm_arrays(frequency, recency, age)
    rx = r + x
    head = (special.gammaln(rx) - special.gammaln(r) + r * math.log(alpha)
            + special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b)
            - special.gammaln(a + b + x))
    still = -rx * np.log(alpha + age_)
    with np.errstate(divide="ignore", invalid="ignore"):
        dropped = np.where(x > 0, math.log(a) - np.log(np.where(x > 0, b + x - 1.0, 1.0))
                           - rx * np.log(alpha + tx), -np.inf)
    return head + np.logaddexp(still, dropped)


def _bgnbd_tuple(params: BGNBDLike
                 ) -> tuple[float, float, float, float]:
    if isinstance(params, BGNBDParams):
        return params.r, params.alpha, params.a, params.b
    r, alpha, a, b = (float(v) for v in params)
    return r, alpha, a, b


def _minimise(objective: Any, start: FloatArray, data: Any, weight: float
              ) -> tuple[FloatArray, OptimiserReport]:
    """L-BFGS-B on the log-parameters of ``objective`` (minus the mean log-likelihood over
    ``weight`` customers, with its gradient)."""
    from threadpoolctl import threadpool_limits

    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(start)
    # BLAS threads only synchronise on a problem of 3 or 4 parameters: on a busy 2-CPU
    # machine they made L-BFGS-B's own steps 6 times slower than the likelihood.
    with threadpool_limits(limits=1, user_api="blas"):
        result = optimize.minimize(objective, start, args=(data,), jac=True,
                                   method="L-BFGS-B", bounds=bounds,
                                   options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-8})
    solution = np.asarray(result.x, dtype=float)
    gradient_norm = float(np.max(np.abs(np.asarray(result.jac, dtype=float))))
    at_bound = bool(np.any(np.abs(solution) >= LOG_BOUND - 1.0))
    # L-BFGS-B can stop on its relative-reduction test a hair away from the optimum; the
    # gradient of the mean log-likelihood is the test that matters.
    converged = bool(np.all(np.isfinite(solution))) and (
        bool(result.success) or gradient_norm < 1e-5) and not at_bound
    report = OptimiserReport(
        converged=converged, iterations=int(result.nit), evaluations=int(result.nfev),
        message=str(result.message), gradient_norm=gradient_norm, at_bound=at_bound,
        standard_errors=_standard_errors(objective, solution, data, weight))
    return solution, report


def _standard_errors(objective: Any, solution: FloatArray, data: Any, weight: float
                     ) -> tuple[float, ...] | None:
    """sqrt(diag(H^-1)), H the observed information in the log-parameters (central
    differences of the analytic gradient): standard errors of the log-parameters."""
    step = 1e-5
    size = len(solution)
    hessian = np.empty((size, size))
    for i in range(size):
        shift = np.zeros(size)
        shift[i] = step
        hessian[i] = (objective(solution + shift, data)[1]
                      - objective(solution - shift, data)[1]) / (2 * step)
    hessian = (hessian + hessian.T) / 2 * weight
    try:
        np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        return None
    return tuple(float(v) for v in np.sqrt(np.diag(np.linalg.inv(hessian))))


def _natural_scale(report: OptimiserReport, params: tuple[float, ...]) -> OptimiserReport:
    """The report with standard errors of the parameters from those of their logs."""
    if report.standard_errors is None:
        return report
    return replace(report, standard_errors=tuple(
        value * error for value, error in zip(params, report.standard_errors)))


def _not_converged(model: str, report: OptimiserReport) -> FitNotConverged:
    why = ("a parameter ran to its bound (the data do not identify it)" if report.at_bound
           else report.message)
    return FitNotConverged(f"the {model} fit did not converge after {report.iterations} "
                           f"iterations: {why}; check the data or fit on more customers")


def fit_bgnbd(frequency: ArrayLike, recency: ArrayLike, age: ArrayLike,
              time_unit: TimeUnit = "day", *, require_convergence: bool = True
              ) -> BGNBDParams:
    """Maximum-likelihood BG/NBD parameters (see the module docstring for ln L).

    Raises ``InsufficientData`` with fewer than ``MIN_CUSTOMERS`` customers or no repeat
    buyer, ``FitNotConverged`` when the optimiser fails (unless ``require_convergence`` is
    false: then the result carries ``optimiser.converged = False``).
    """
    _checked_unit(time_unit)
    x, tx, age_ = rfm_arrays(frequency, recency, age)
    if len(x) < MIN_CUSTOMERS:
        raise InsufficientData(f"BG/NBD needs at least {MIN_CUSTOMERS} customers with a "
                               f"first purchase (got {len(x)})")
    repeaters = int(np.count_nonzero(x))
    if repeaters == 0:
        raise InsufficientData("BG/NBD needs at least one customer with a repeat purchase "
                               "(every frequency is 0)")
    # Times rescaled to a mean age of 1: alpha is then of order 1 whatever the unit. With
    # alpha' = alpha / s and times / s, each customer's likelihood is s^x times its own.
    scale = float(age_.mean())
    data = _RFMData.of(x, tx / scale, age_ / scale)
    # Start from the moment estimate of the purchase rate: r / alpha = mean(x) / mean(T).
    start = np.log([1.0, 1.0 / max(float(x.mean()), 1e-3), 1.0, 1.0])
    solution, report = _minimise(_bgnbd_objective, start, data, data.total)
    if require_convergence and not report.converged:
        raise _not_converged("BG/NBD", report)
    r, alpha, a, b = np.exp(solution)
    neg_mean, _ = _bgnbd_objective(solution, data)
    log_likelihood = -neg_mean * data.total - float(x.sum()) * math.log(scale)
    found = (float(r), float(alpha * scale), float(a), float(b))
    return BGNBDParams(*found, log_likelihood=float(log_likelihood), n_customers=len(x),
                       n_repeat_buyers=repeaters, time_unit=time_unit,
                       optimiser=_natural_scale(report, found))


def probability_alive(params: BGNBDLike, frequency: ArrayLike, recency: ArrayLike,
                      age: ArrayLike) -> FloatArray:
    """P(active at T | x, t_x, T) = 1 / (1 + [x > 0] a / (b + x - 1) ((alpha + T) /
    (alpha + t_x))^(r + x)); exactly 1 for customers without repeat purchases."""
    r, alpha, a, b = _bgnbd_tuple(params)
    x, tx, age_ = rfm_arrays(frequency, recency, age)
    return special.expit(-_log_dropout_odds(r, alpha, a, b, x, tx, age_))


def _log_dropout_odds(r: float, alpha: float, a: float, b: float, x: FloatArray,
                      tx: FloatArray, age: FloatArray) -> FloatArray:
    positive = x > 0
    safe_x = np.where(positive, x, 1.0)
    odds = (math.log(a) - np.log(b + safe_x - 1.0)
            + (r + safe_x) * (np.log(alpha + age) - np.log(alpha + tx)))
    return np.where(positive, odds, -np.inf)


def expected_purchases(params: BGNBDLike, t: float | ArrayLike, frequency: ArrayLike,
                       recency: ArrayLike, age: ArrayLike) -> FloatArray:
    """E[number of purchases in (T, T + t] | x, t_x, T] (t in the model's time unit)::

        (a + b + x - 1) / (a - 1)
        * [1 - ((alpha + T) / (alpha + T + t))^(r + x)
               2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))]
        / (1 + [x > 0] a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x))

    (Fader, Hardie & Lee 2005, eq. 10). The bracket is evaluated through Euler's
    transformation 2F1(A, B; C; z) = (1 - z)^(C - A - B) 2F1(C - A, C - B; C; z), which
    turns it into ``1 - _power_times_2f1`` (see there): as written, a frequent buyer over a
    long horizon gives 0 x inf = NaN.
    """
    r, alpha, a, b = _bgnbd_tuple(params)
    x, tx, age_ = rfm_arrays(frequency, recency, age)
    horizon = np.broadcast_to(np.asarray(t, dtype=float), x.shape)
    if np.any(horizon < 0) or not np.all(np.isfinite(horizon)):
        raise InvalidModelData("the prediction horizon must be finite and >= 0", "t")
    _check_a(a)
    head = (a + b + x - 1.0) / (a - 1.0)
    active = head * (1.0 - _power_times_2f1(r, a, b, x, horizon / (alpha + age_ + horizon)))
    return active * special.expit(-_log_dropout_odds(r, alpha, a, b, x, tx, age_))


def _power_times_2f1(r: float, a: float, b: float, x: FloatArray | float, z: FloatArray
                     ) -> FloatArray:
    """(1 - z)^(r + x) 2F1(r + x, b + x; a + b + x - 1; z), z = t / (alpha + T + t), as
    (1 - z)^(a - 1) 2F1(a + b - 1 - r, a - 1; a + b + x - 1; z) (Euler's transformation):
    the first two parameters no longer grow with x, so the series stays of order 1 where
    the original form multiplies an underflowing power by an overflowing 2F1."""
    return np.exp((a - 1.0) * np.log1p(-z)) * special.hyp2f1(a + b - 1.0 - r, a - 1.0,
                                                             a + b + x - 1.0, z)


def expected_purchases_new_customer(params: BGNBDLike, t: float | ArrayLike) -> FloatArray:
    """E[X(t)] for a customer just acquired (t in the model's time unit)::

        (a + b - 1) / (a - 1) [1 - (alpha / (alpha + t))^r 2F1(r, b; a + b - 1; t / (alpha + t))]

    (the bracket through ``_power_times_2f1`` with x = 0).
    """
    r, alpha, a, b = _bgnbd_tuple(params)
    horizon = np.atleast_1d(np.asarray(t, dtype=float))
    if np.any(horizon < 0) or not np.all(np.isfinite(horizon)):
        raise InvalidModelData("the prediction horizon must be finite and >= 0", "t")
    _check_a(a)
    return (a + b - 1.0) / (a - 1.0) * (1.0 - _power_times_2f1(r, a, b, 0.0,
                                                             horizon / (alpha + horizon)))


def _check_a(a: float) -> None:
    # The closed forms divide by a - 1; at a = 1 exactly they are a 0/0 limit.
    if abs(a - 1.0) < 1e-9:
        raise InvalidModelData("expected purchases are undefined at a = 1 exactly; refit")


def simulate_bgnbd(rng: np.random.Generator, r: float, alpha: float, a: float, b: float,
                   age: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Draw (x, t_x, T) from the BG/NBD model itself, one customer per ``age`` value.

    Each customer gets lambda ~ Gamma(r, rate alpha) and p ~ Beta(a, b). The number of
    repeat purchases before dropping out is Geometric(p) (dropout follows a repeat
    purchase); while active the customer makes Poisson(lambda T) purchases in (0, T], so
    x = min(both). The x-th of n uniform arrival times on (0, T] is T * Beta(x, n - x + 1).
    """
    age_ = np.asarray(age, dtype=float)
    rate = rng.gamma(r, 1.0 / alpha, size=age_.shape)
    dropout = rng.beta(a, b, size=age_.shape)
    arrivals = rng.poisson(rate * age_)
    lifetime_purchases = rng.geometric(dropout)
    x = np.minimum(arrivals, lifetime_purchases)
    positive = x > 0
    recency = np.zeros_like(age_)
    recency[positive] = age_[positive] * rng.beta(
        x[positive], arrivals[positive] - x[positive] + 1)
    return x.astype(float), recency, age_


# --- Gamma-Gamma ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GammaGammaParams(_FittedParams):
    p: float
    q: float
    gamma: float
    log_likelihood: float
    n_customers: int
    #: Pearson correlation of frequency and monetary value among the repeat buyers.
    frequency_monetary_correlation: float
    #: Set when |correlation| > CORRELATION_WARNING: the model assumes independence.
    warning: str | None
    optimiser: OptimiserReport



#: Fitted parameters, or a bare (p, q, gamma) tuple.
GammaGammaLike = GammaGammaParams | tuple[float, float, float]


def _spend_arrays(frequency: ArrayLike, monetary: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Checked (x, m); m may be missing (NaN) where x = 0 and reads 0 there."""
    x = _vector(frequency, "frequency")
    m = np.asarray(monetary, dtype=float).reshape(-1)
    if len(m) == len(x):
        m = _vector(np.where((x == 0) & np.isnan(m), 0.0, m), "monetary")
    else:
        raise InvalidModelData(f"frequency and monetary have different lengths "
                               f"({len(x)}, {len(m)})")
    bad = (x < 0) | (x != np.floor(x))
    if bad.any():
        raise InvalidModelData(f"frequency must be a whole number >= 0 (row "
                               f"{_first_bad(bad)})", "frequency")
    negative = m < 0
    if negative.any():
        raise InvalidModelData(f"monetary must be >= 0 (row {_first_bad(negative)})",
                               "monetary")
    return x, m


def _gamma_gamma_objective(log_params: FloatArray, data: tuple[FloatArray, FloatArray]
                           ) -> tuple[float, FloatArray]:
    p, q, gamma = np.exp(log_params)
    x, m = data
    px = p * x
    log_x, log_m = np.log(x), np.log(m)
    log_total = np.log(gamma + m * x)
    psi_pxq = special.digamma(px + q)
    ll = np.sum(special.gammaln(px + q) - special.gammaln(px) + (px - 1.0) * log_m
                + px * log_x - (px + q) * log_total)
    ll += len(x) * (q * math.log(gamma) - special.gammaln(q))
    g_p = np.sum(x * (psi_pxq - special.digamma(px) + log_m + log_x - log_total))
    g_q = (np.sum(psi_pxq - log_total)
           + len(x) * (math.log(gamma) - special.digamma(q)))
    g_gamma = len(x) * q / gamma - np.sum((px + q) / (gamma + m * x))
    gradient = np.array([g_p * p, g_q * q, g_gamma * gamma])
    return -ll / len(x), -gradient / len(x)


def _spend_correlation(x: FloatArray, m: FloatArray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(m) == 0:
        return 0.0
    return float(np.corrcoef(x, m)[0, 1])


def fit_gamma_gamma(frequency: ArrayLike, monetary: ArrayLike, *,
                    require_convergence: bool = True) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters on the repeat buyers (x > 0, m > 0);
    other rows are ignored. Raises ``InsufficientData`` with fewer than
    ``MIN_REPEAT_BUYERS`` of them, ``FitNotConverged`` as ``fit_bgnbd``."""
    x, m = _spend_arrays(frequency, monetary)
    keep = (x > 0) & (m > 0)
    x, m = x[keep], m[keep]
    if len(x) < MIN_REPEAT_BUYERS:
        raise InsufficientData(f"Gamma-Gamma needs at least {MIN_REPEAT_BUYERS} repeat "
                               f"buyers with a positive spend (got {len(x)})")
    if np.ptp(m) == 0:
        raise InsufficientData("Gamma-Gamma needs spends that vary between customers "
                               "(every monetary value is the same)")
    # Amounts rescaled to a mean of 1 (gamma scales with them, p and q do not); the density
    # of a rescaled mean spend is s times the original one.
    scale = float(m.mean())
    data = (x, m / scale)
    solution, report = _minimise(_gamma_gamma_objective, np.log([1.0, 2.0, 1.0]), data,
                                 float(len(x)))
    if require_convergence and not report.converged:
        raise _not_converged("Gamma-Gamma", report)
    p, q, gamma = np.exp(solution)
    neg_mean, _ = _gamma_gamma_objective(solution, data)
    correlation = _spend_correlation(x, m)
    warning = None
    if abs(correlation) > CORRELATION_WARNING:
        warning = (f"frequency and monetary value are correlated ({correlation:+.2f}) among "
                   f"repeat buyers; Gamma-Gamma assumes they are independent, so expected "
                   f"order values and CLV are biased")
    found = (float(p), float(q), float(gamma * scale))
    return GammaGammaParams(*found,
                            log_likelihood=float(-neg_mean * len(x) - len(x) * math.log(scale)),
                            n_customers=len(x), frequency_monetary_correlation=correlation,
                            warning=warning, optimiser=_natural_scale(report, found))


def gamma_gamma_log_likelihood(params: GammaGammaLike,
                               frequency: ArrayLike, monetary: ArrayLike) -> FloatArray:
    """The log-likelihood of each repeat buyer's mean spend (rows need x > 0, m > 0)."""
    p, q, gamma = _gamma_gamma_tuple(params)
    x, m = _spend_arrays(frequency, monetary)
    if np.any(x <= 0) or np.any(m <= 0):
        raise InvalidModelData("the Gamma-Gamma likelihood needs x > 0 and monetary > 0")
    px = p * x
    return (special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q)
            + q * math.log(gamma) + (px - 1.0) * np.log(m) + px * np.log(x)
            - (px + q) * np.log(gamma + m * x))


def _gamma_gamma_tuple(params: GammaGammaLike
                       ) -> tuple[float, float, float]:
    if isinstance(params, GammaGammaParams):
        return params.p, params.q, params.gamma
    p, q, gamma = (float(v) for v in params)
    return p, q, gamma


def expected_order_value(params: GammaGammaLike, frequency: ArrayLike,
                         monetary: ArrayLike) -> FloatArray:
    """E[average order value | x, m] = (gamma + m x) p / (p x + q - 1): a weighted mean of
    the population mean gamma p / (q - 1) and the customer's own mean m. For x = 0 it is
    the population mean. Needs q > 1 (a finite population mean)."""
    p, q, gamma = _gamma_gamma_tuple(params)
    x, m = _spend_arrays(frequency, monetary)
    if q <= 1.0:
        raise InvalidModelData(f"the Gamma-Gamma fit has q = {q:.3g} <= 1: the mean order "
                               f"value is infinite; fit on more repeat buyers")
    own = np.where(x > 0, m, 0.0)
    return (gamma + own * x) * p / (p * x + q - 1.0)


def simulate_gamma_gamma(rng: np.random.Generator, p: float, q: float, gamma: float,
                         frequency: ArrayLike) -> FloatArray:
    """Mean spend of x purchases per customer drawn from the Gamma-Gamma model (0 when
    x = 0): nu ~ Gamma(q, rate gamma), the sum of x Gamma(p, rate nu) spends is
    Gamma(p x, rate nu)."""
    x = np.asarray(frequency, dtype=float)
    nu = rng.gamma(q, 1.0 / gamma, size=x.shape)
    positive = x > 0
    mean = np.zeros_like(x)
    mean[positive] = rng.gamma(p * x[positive], 1.0 / nu[positive]) / x[positive]
    return mean


# --- Customer lifetime value ----------------------------------------------------------------


def customer_lifetime_value(bgnbd: BGNBDLike, gamma_gamma: GammaGammaLike,
                            frequency: ArrayLike, recency: ArrayLike, age: ArrayLike,
                            monetary: ArrayLike, *, periods: int, period_length: float,
                            discount_rate: float) -> FloatArray:
    """Discounted expected value of each customer's purchases over ``periods`` periods of
    ``period_length`` (in the BG/NBD time unit: 12 periods of 30 days is a year of monthly
    discounting) at ``discount_rate`` per period (see the module docstring)."""
    if periods < 1 or period_length <= 0 or not math.isfinite(period_length):
        raise InvalidModelData("CLV needs at least one period of a positive length")
    if discount_rate < 0 or not math.isfinite(discount_rate):
        raise InvalidModelData("the discount rate must be >= 0", "discountRate")
    aov = expected_order_value(gamma_gamma, frequency, monetary)
    value = np.zeros_like(aov)
    previous = np.zeros_like(aov)
    for k in range(1, periods + 1):
        cumulative = expected_purchases(bgnbd, k * period_length, frequency, recency, age)
        value += (cumulative - previous) / (1.0 + discount_rate) ** k
        previous = cumulative
    return value * aov
