"""BG/NBD, Gamma-Gamma and CLV (plugins.churn.btyd) against values worked out
independently: closed forms written out here, finite differences, and data simulated from
the models by a purchase-by-purchase simulator of this file (not the module's)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import optimize

from plugins.churn import btyd

#: Days; the true parameters of the simulations (in the range published for CDNOW, with
#: alpha in days).
R, ALPHA, A, B = 0.25, 10.0, 0.8, 2.5
P, Q, GAMMA = 6.0, 4.0, 15.0


@dataclass
class Simulated:
    """Per customer: calibration summary, holdout purchases, alive at T, true mean spend."""

    x: np.ndarray
    tx: np.ndarray
    age: np.ndarray
    holdout: np.ndarray
    alive: np.ndarray
    mean_spend: np.ndarray
    monetary: np.ndarray


def simulate_purchases(seed: int, n: int, holdout: float = 0.0) -> Simulated:
    """Purchase by purchase: exponential gaps of rate lambda ~ Gamma(R, ALPHA); after each
    repeat purchase a coin of probability p ~ Beta(A, B) ends the customer. Spends of each
    repeat purchase are drawn one by one (Gamma(P, nu), nu ~ Gamma(Q, GAMMA))."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(30.0, 365.0, n)
    rates = rng.gamma(R, 1.0 / ALPHA, n)
    dropouts = rng.beta(A, B, n)
    nus = rng.gamma(Q, 1.0 / GAMMA, n)
    x, tx, later = np.zeros(n), np.zeros(n), np.zeros(n)
    alive = np.ones(n, dtype=bool)
    monetary = np.zeros(n)
    for i in range(n):
        clock, end = 0.0, age[i] + holdout
        while True:
            clock += rng.exponential(1.0 / rates[i])
            if clock > end:
                break
            if clock <= age[i]:
                x[i] += 1
                tx[i] = clock
            else:
                later[i] += 1
            if rng.random() < dropouts[i]:
                alive[i] = clock > age[i]
                break
        if x[i] > 0:
            monetary[i] = rng.gamma(P, 1.0 / nus[i], int(x[i])).mean()
    return Simulated(x, tx, age, later, alive, P / nus, monetary)


@pytest.fixture(scope="module")
def population() -> Simulated:
    return simulate_purchases(seed=7, n=12_000, holdout=90.0)


@pytest.fixture(scope="module")
def fitted(population: Simulated) -> btyd.BGNBDParams:
    return btyd.fit_bgnbd(population.x, population.tx, population.age)


# --- BG/NBD ---------------------------------------------------------------------------------


def test_log_likelihood_of_one_customer_worked_by_hand() -> None:
    # x = 2 repeat purchases, the last at day 30, observed for 40 days; r=0.5, alpha=5,
    # a=0.8, b=2.4. L = A1 A2 (A3 + A4) of Fader, Hardie & Lee (2005), eq. 6.
    r, alpha, a, b, x, tx, age = 0.5, 5.0, 0.8, 2.4, 2, 30.0, 40.0
    a1 = math.gamma(r + x) * alpha ** r / math.gamma(r)
    a2 = math.gamma(a + b) * math.gamma(b + x) / (math.gamma(b) * math.gamma(a + b + x))
    a3 = (1 / (alpha + age)) ** (r + x)
    a4 = a / (b + x - 1) * (1 / (alpha + tx)) ** (r + x)
    expected = math.log(a1 * a2 * (a3 + a4))
    got = btyd.bgnbd_log_likelihood((r, alpha, a, b), [x, 0], [tx, 0], [age, age])
    assert got[0] == pytest.approx(expected, rel=1e-12)
    # x = 0: only A1 A2 A3 with x = 0, i.e. (alpha / (alpha + T))^r.
    assert got[1] == pytest.approx(r * math.log(alpha / (alpha + age)), rel=1e-12)


def test_fit_recovers_known_parameters(population: Simulated, fitted: btyd.BGNBDParams
                                       ) -> None:
    """12,000 simulated customers, seed 7: each estimate within 3 of its standard errors
    and within 15 % of the truth (a and b are the least precise: SE about 7 %)."""
    errors = fitted.optimiser.standard_errors
    assert errors is not None and fitted.optimiser.converged
    for name, truth, estimate, error in zip("r alpha a b".split(), (R, ALPHA, A, B),
                                            (fitted.r, fitted.alpha, fitted.a, fitted.b),
                                            errors):
        assert abs(estimate - truth) < 3 * error, name
        assert estimate == pytest.approx(truth, rel=0.15), name
    assert fitted.n_customers == 12_000
    assert fitted.n_repeat_buyers == int(np.count_nonzero(population.x))


def test_fit_reaches_the_maximum_it_reports(population: Simulated,
                                            fitted: btyd.BGNBDParams) -> None:
    per_customer = btyd.bgnbd_log_likelihood(fitted, population.x, population.tx,
                                             population.age)
    assert fitted.log_likelihood == pytest.approx(per_customer.sum(), rel=1e-10)
    best = np.array([fitted.r, fitted.alpha, fitted.a, fitted.b])
    for i in range(4):
        for factor in (0.97, 1.03):
            moved = best.copy()
            moved[i] *= factor
            total = btyd.bgnbd_log_likelihood(tuple(moved), population.x, population.tx,
                                              population.age).sum()
            assert total < fitted.log_likelihood


def test_analytic_gradient_matches_finite_differences(population: Simulated) -> None:
    data = btyd._RFMData.of(population.x, population.tx / 100, population.age / 100)
    point = np.log([0.3, 0.12, 0.7, 2.0])
    analytic = btyd._bgnbd_objective(point, data)[1]
    numeric = optimize.approx_fprime(point, lambda v: btyd._bgnbd_objective(v, data)[0],
                                     1e-7)
    assert analytic == pytest.approx(numeric, abs=1e-6)


def test_probability_alive_is_one_without_repeat_purchases(fitted: btyd.BGNBDParams) -> None:
    alive = btyd.probability_alive(fitted, [0, 0, 3], [0, 0, 5], [10, 400, 300])
    assert alive[:2].tolist() == [1.0, 1.0]
    assert 0 < alive[2] < 1


def test_probability_alive_closed_form_and_monte_carlo(population: Simulated,
                                                       fitted: btyd.BGNBDParams) -> None:
    r, alpha, a, b = fitted.r, fitted.alpha, fitted.a, fitted.b
    x, tx, age = 4, 20.0, 200.0
    expected = 1 / (1 + a / (b + x - 1) * ((alpha + age) / (alpha + tx)) ** (r + x))
    assert btyd.probability_alive(fitted, [x], [tx], [age])[0] == pytest.approx(expected)
    # E[P(alive) | history] = P(alive), so within groups of histories the mean predicted
    # probability matches the share of simulated customers still active at T.
    predicted = btyd.probability_alive(fitted, population.x, population.tx, population.age)
    for group in _history_groups(population):
        share = population.alive[group].mean()
        tolerance = 4 * math.sqrt(share * (1 - share) / group.sum()) + 0.01
        assert abs(predicted[group].mean() - share) <= tolerance


def _history_groups(population: Simulated) -> list[np.ndarray]:
    x = population.x
    gap = population.age - population.tx
    return [x == 0, (x >= 1) & (x <= 2) & (gap < 60), (x >= 1) & (x <= 2) & (gap >= 60),
            (x >= 3) & (gap < 60), (x >= 3) & (gap >= 60)]


def test_expected_purchases_match_monte_carlo(population: Simulated,
                                              fitted: btyd.BGNBDParams) -> None:
    predicted = btyd.expected_purchases(fitted, 90.0, population.x, population.tx,
                                        population.age)
    assert predicted.sum() == pytest.approx(population.holdout.sum(), rel=0.05)
    for group in _history_groups(population):
        mean, spread = population.holdout[group].mean(), population.holdout[group].std()
        tolerance = 4 * spread / math.sqrt(group.sum()) + 0.05 * mean
        assert abs(predicted[group].mean() - mean) < tolerance


def test_expected_purchases_at_zero_horizon_is_zero(fitted: btyd.BGNBDParams) -> None:
    assert btyd.expected_purchases(fitted, 0.0, [0, 5], [0, 50], [100, 100]) == \
        pytest.approx([0.0, 0.0], abs=1e-12)


def test_new_customer_expectation_matches_simulation() -> None:
    """The module's own vectorised simulator (used by the benchmark) gives, for a fixed
    age, mean repeat purchases equal to the closed form E[X(t)]."""
    params = (R, ALPHA, A, B)
    rng = np.random.default_rng(3)
    for days in (30.0, 365.0):
        x, _, _ = btyd.simulate_bgnbd(rng, *params, np.full(200_000, days))
        expected = btyd.expected_purchases_new_customer(params, days)[0]
        assert x.mean() == pytest.approx(expected, rel=0.03)


def test_week_unit_gives_the_same_model(population: Simulated,
                                        fitted: btyd.BGNBDParams) -> None:
    weeks = btyd.fit_bgnbd(population.x, btyd.days_to_unit(population.tx, "week"),
                           btyd.days_to_unit(population.age, "week"), time_unit="week")
    assert weeks.time_unit == "week"
    assert (weeks.r, weeks.a, weeks.b) == pytest.approx((fitted.r, fitted.a, fitted.b),
                                                        rel=1e-4)
    assert weeks.alpha == pytest.approx(fitted.alpha / 7, rel=1e-4)
    # The densities differ by the Jacobian of the time change: 7^x per customer.
    assert weeks.log_likelihood == pytest.approx(
        fitted.log_likelihood + population.x.sum() * math.log(7), rel=1e-8)
    in_days = btyd.expected_purchases(fitted, 28.0, [3], [40.0], [100.0])
    in_weeks = btyd.expected_purchases(weeks, 4.0, [3], [40 / 7], [100 / 7])
    assert in_weeks == pytest.approx(in_days, rel=1e-3)


def test_params_round_trip_through_json_dict(population: Simulated,
                                             fitted: btyd.BGNBDParams) -> None:
    again = btyd.BGNBDParams.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again == fitted
    spend = btyd.fit_gamma_gamma(population.x, population.monetary)
    assert btyd.GammaGammaParams.from_dict(json.loads(json.dumps(spend.to_dict()))) == spend


# --- Bad input ------------------------------------------------------------------------------


def test_too_few_customers_is_a_typed_error() -> None:
    with pytest.raises(btyd.InsufficientData, match="at least 20 customers") as caught:
        btyd.fit_bgnbd([1, 2, 0], [3, 5, 0], [10, 10, 10])
    assert caught.value.errors[0].code == "INSUFFICIENT_DATA"


def test_no_repeat_buyer_is_a_typed_error() -> None:
    with pytest.raises(btyd.InsufficientData, match="repeat purchase"):
        btyd.fit_bgnbd(np.zeros(50), np.zeros(50), np.full(50, 30.0))


@pytest.mark.parametrize("x, tx, age, message", [
    ([1, -1], [1, 0], [5, 5], "frequency must be a whole number"),
    ([1.5, 1], [1, 1], [5, 5], "frequency must be a whole number"),
    ([1, 1], [6, 1], [5, 5], "recency must be at most the age"),
    ([0, 1], [2, 1], [5, 5], "recency must be 0"),
    ([1, 1], [1, 1], [5, -1], "age must be >= 0"),
    ([1, 1], [1, float("nan")], [5, 5], "recency has a missing"),
    ([1, 1], [1], [5, 5], "different lengths"),
])
def test_invalid_arrays_are_refused(x: list[float], tx: list[float], age: list[float],
                                    message: str) -> None:
    with pytest.raises(btyd.InvalidModelData, match=message):
        btyd.fit_bgnbd(x, tx, age)


def test_first_purchase_on_the_calibration_day_and_missing_spend_are_accepted(
        population: Simulated, fitted: btyd.BGNBDParams) -> None:
    # T = 0 (first purchase on the as_of day) adds ln 1 = 0 to the likelihood; the
    # feature query gives monetary NaN to customers without a repeat day.
    x = np.r_[population.x, 0.0]
    refit = btyd.fit_bgnbd(x, np.r_[population.tx, 0.0], np.r_[population.age, 0.0])
    assert refit.log_likelihood == pytest.approx(fitted.log_likelihood, rel=1e-9)
    assert refit.alpha == pytest.approx(fitted.alpha, rel=1e-5)
    monetary = np.where(population.x > 0, population.monetary, np.nan)
    spend = btyd.fit_gamma_gamma(population.x, monetary)
    assert spend.n_customers == int(np.count_nonzero(population.x))
    assert btyd.expected_order_value(spend, [0, 2], [np.nan, 10.0])[0] == pytest.approx(
        spend.gamma * spend.p / (spend.q - 1))


def test_unknown_time_unit_is_refused() -> None:
    with pytest.raises(btyd.InvalidModelData, match="time unit"):
        btyd.fit_bgnbd([1] * 30, [1] * 30, [2] * 30, time_unit="month")  # type: ignore[arg-type]


def test_unidentified_model_does_not_converge() -> None:
    # Everyone bought on the last day: nothing tells how customers drop out, so a runs to 0.
    x = np.arange(1, 41, dtype=float)
    age = np.full(40, 100.0)
    with pytest.raises(btyd.FitNotConverged, match="did not converge") as caught:
        btyd.fit_bgnbd(x, age, age)
    assert caught.value.errors[0].code == "NOT_CONVERGED"
    loose = btyd.fit_bgnbd(x, age, age, require_convergence=False)
    assert not loose.optimiser.converged and loose.optimiser.at_bound


# --- Gamma-Gamma ----------------------------------------------------------------------------


def test_gamma_gamma_log_likelihood_worked_by_hand() -> None:
    # 3 purchases of mean 12.5 with p=6, q=4, gamma=15: the density of the mean of x
    # Gamma(p, nu) spends, integrated over nu ~ Gamma(q, gamma), written out.
    p, q, gamma, x, m = 6.0, 4.0, 15.0, 3, 12.5
    density = (math.gamma(p * x + q) / (math.gamma(p * x) * math.gamma(q))
               * gamma ** q * m ** (p * x - 1) * x ** (p * x) / (gamma + m * x) ** (p * x + q))
    got = btyd.gamma_gamma_log_likelihood((p, q, gamma), [x], [m])
    assert got[0] == pytest.approx(math.log(density), rel=1e-12)


@pytest.fixture(scope="module")
def spenders() -> Simulated:
    """10,000 repeat buyers with 1 to 20 purchases, each purchase's amount drawn."""
    rng = np.random.default_rng(11)
    n = 10_000
    x = rng.integers(1, 21, n)
    nus = rng.gamma(Q, 1.0 / GAMMA, n)
    owner = np.repeat(np.arange(n), x)
    monetary = np.bincount(owner, weights=rng.gamma(P, 1.0 / nus[owner])) / x
    empty = np.zeros(n)
    return Simulated(x.astype(float), empty, empty, empty, empty.astype(bool), P / nus,
                     monetary)


def test_gamma_gamma_recovers_known_parameters(spenders: Simulated) -> None:
    """Seed 11: each estimate within 3 standard errors of the truth. p and gamma trade off
    against each other (standard errors about 11 % even on 10,000 buyers), so they are
    also held within 30 %, q within 5 % and the mean order value gamma p / (q - 1), which
    the data pin down, within 3 %."""
    fit = btyd.fit_gamma_gamma(spenders.x, spenders.monetary)
    assert fit.optimiser.converged and fit.optimiser.standard_errors is not None
    for name, truth, estimate, error, relative in zip(
            "p q gamma".split(), (P, Q, GAMMA), (fit.p, fit.q, fit.gamma),
            fit.optimiser.standard_errors, (0.3, 0.05, 0.3)):
        assert abs(estimate - truth) < 3 * error, name
        assert estimate == pytest.approx(truth, rel=relative), name
    assert fit.gamma * fit.p / (fit.q - 1) == pytest.approx(GAMMA * P / (Q - 1), rel=0.03)
    per_customer = btyd.gamma_gamma_log_likelihood(fit, spenders.x, spenders.monetary)
    assert fit.log_likelihood == pytest.approx(per_customer.sum(), rel=1e-10)
    assert fit.warning is None


def test_gamma_gamma_is_unit_free(spenders: Simulated) -> None:
    fit = btyd.fit_gamma_gamma(spenders.x, spenders.monetary)
    cents = btyd.fit_gamma_gamma(spenders.x, spenders.monetary * 100)
    assert (cents.p, cents.q) == pytest.approx((fit.p, fit.q), rel=1e-4)
    assert cents.gamma == pytest.approx(fit.gamma * 100, rel=1e-4)


def test_expected_order_value_matches_monte_carlo(spenders: Simulated) -> None:
    fit = btyd.fit_gamma_gamma(spenders.x, spenders.monetary)
    predicted = btyd.expected_order_value(fit, spenders.x, spenders.monetary)
    # E[true mean spend p / nu | x, m] = the prediction, so group means agree.
    for low, high in ((0, 12), (12, 20), (20, 1e9)):
        group = (spenders.monetary >= low) & (spenders.monetary < high)
        truth = spenders.mean_spend[group]
        tolerance = 4 * truth.std() / math.sqrt(group.sum()) + 0.02 * truth.mean()
        assert abs(predicted[group].mean() - truth.mean()) < tolerance
    # A customer without repeat purchases gets the population mean gamma p / (q - 1).
    assert btyd.expected_order_value(fit, [0], [0])[0] == pytest.approx(
        fit.gamma * fit.p / (fit.q - 1))


def test_gamma_gamma_warns_when_spend_follows_frequency() -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(1, 20, 500).astype(float)
    nus = rng.gamma(Q, 1.0 / GAMMA, 500)
    monetary = rng.gamma(P * x, 1.0 / nus) / x * x ** 0.8
    fit = btyd.fit_gamma_gamma(x, monetary)
    assert fit.frequency_monetary_correlation > btyd.CORRELATION_WARNING
    assert fit.warning is not None and "independent" in fit.warning


def test_gamma_gamma_needs_repeat_buyers() -> None:
    with pytest.raises(btyd.InsufficientData, match="at least 20 repeat buyers"):
        btyd.fit_gamma_gamma([0] * 30 + [1] * 5, [0] * 30 + [10] * 5)
    with pytest.raises(btyd.InvalidModelData, match="monetary must be >= 0"):
        btyd.fit_gamma_gamma([1] * 30, [-1] + [10] * 29)


# --- CLV ------------------------------------------------------------------------------------


def test_clv_matches_simulated_holdout_value(population: Simulated,
                                             fitted: btyd.BGNBDParams) -> None:
    spend = btyd.fit_gamma_gamma(population.x, population.monetary)
    clv = btyd.customer_lifetime_value(fitted, spend, population.x, population.tx,
                                       population.age, population.monetary, periods=3,
                                       period_length=30.0, discount_rate=0.0)
    # Without discounting, value = expected purchases in 90 days x expected order value;
    # the simulation's value is holdout purchases x the customer's true mean spend.
    simulated = population.holdout * population.mean_spend
    assert clv.mean() == pytest.approx(simulated.mean(), rel=0.08)


def test_clv_discounts_each_period(fitted: btyd.BGNBDParams) -> None:
    spend = (P, Q, GAMMA)
    history = ([4.0], [50.0], [120.0], [20.0])
    cumulative = [btyd.expected_purchases(fitted, 30.0 * k, *history[:3])[0]
                  for k in (1, 2, 3)]
    aov = (GAMMA + 20.0 * 4) * P / (P * 4 + Q - 1)
    by_hand = aov * (cumulative[0] / 1.01 + (cumulative[1] - cumulative[0]) / 1.01 ** 2
                     + (cumulative[2] - cumulative[1]) / 1.01 ** 3)
    got = btyd.customer_lifetime_value(fitted, spend, *history, periods=3,
                                       period_length=30.0, discount_rate=0.01)
    assert got[0] == pytest.approx(by_hand, rel=1e-12)
    with pytest.raises(btyd.InvalidModelData, match="discount rate"):
        btyd.customer_lifetime_value(fitted, spend, *history, periods=3,
                                     period_length=30.0, discount_rate=-0.1)
