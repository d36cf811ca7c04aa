"""The shifted-beta-geometric model (plugins.churn.sbg) against independent values: the
published fits of Fader & Hardie (2007), likelihoods and projections written out here as
products and series, and cohorts simulated subscriber by subscriber by this file's own
loop (not the module's simulator)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from plugins.churn import btyd, sbg

#: Fader & Hardie (2007), "How to project customer retention", table 1: subscribers still
#: active at the start of years 0..7 of a 1,000-subscriber cohort, and the published fits
#: on those seven years.
REGULAR = [1000, 631, 468, 382, 326, 289, 262, 241]
HIGH_END = [1000, 869, 743, 653, 593, 551, 517, 491]
PUBLISHED = {"regular": (REGULAR, 0.704, 1.182, -1680.3),
             "high_end": (HIGH_END, 0.668, 3.806, -1611.2)}


def cohort_rows(survivors: list[int]) -> tuple[list[int], list[bool]]:
    tenure: list[int] = []
    churned: list[bool] = []
    for t in range(1, len(survivors)):
        lost = survivors[t - 1] - survivors[t]
        tenure += [t] * lost
        churned += [True] * lost
    tenure += [len(survivors) - 1] * survivors[-1]
    churned += [False] * survivors[-1]
    return tenure, churned


def beta_fn(a: float, b: float) -> float:
    return math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


def survival_by_product(alpha: float, beta: float, t: int) -> float:
    """S(t) as the product of the retention rates (beta + i - 1) / (alpha + beta + i - 1)."""
    value = 1.0
    for i in range(1, t + 1):
        value *= (beta + i - 1) / (alpha + beta + i - 1)
    return value


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_reproduces_the_published_fits(name: str) -> None:
    survivors, alpha, beta, log_likelihood = PUBLISHED[name]
    tenure, churned = cohort_rows(survivors)
    fit = sbg.fit_sbg(tenure, churned, "year")
    assert fit.alpha == pytest.approx(alpha, abs=0.0005)
    assert fit.beta == pytest.approx(beta, abs=0.0005)
    assert fit.log_likelihood == pytest.approx(log_likelihood, abs=0.05)
    assert fit.n_customers == 1000 and fit.n_churned == 1000 - survivors[-1]
    assert fit.max_tenure == 7 and fit.optimiser.converged


def test_log_likelihood_equals_a_computation_by_hand() -> None:
    """ln L from P(T = 1) = alpha / (alpha + beta), P(T = t) = P(T = t - 1) (beta + t - 2) /
    (alpha + beta + t - 1) and S(t) = the product of retention rates."""
    tenure, churned = cohort_rows(REGULAR)
    fit = sbg.fit_sbg(tenure, churned, "year")
    a, b = fit.alpha, fit.beta
    by_hand = 0.0
    p = a / (a + b)
    for t in range(1, 8):
        if t > 1:
            p *= (b + t - 2) / (a + b + t - 1)
        by_hand += (REGULAR[t - 1] - REGULAR[t]) * math.log(p)
    by_hand += REGULAR[7] * math.log(survival_by_product(a, b, 7))
    assert fit.log_likelihood == pytest.approx(by_hand, rel=1e-10)
    per_row = sbg.sbg_log_likelihood((a, b), tenure, churned)
    assert per_row.sum() == pytest.approx(by_hand, rel=1e-10)
    # The maximum: moving either parameter lowers ln L.
    for da, db in ((0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01)):
        assert sbg.sbg_log_likelihood((a + da, b + db), tenure, churned).sum() < by_hand


def simulate_cohort(rng: np.random.Generator, alpha: float, beta: float, size: int,
                    periods: int) -> tuple[list[int], list[bool]]:
    """Period by period: each subscriber flips a coin of its own theta at the end of each
    period until it leaves or the observation ends."""
    tenure: list[int] = []
    churned: list[bool] = []
    for theta in rng.beta(alpha, beta, size):
        completed = 0
        left = False
        while completed < periods:
            completed += 1
            if rng.random() < theta:
                left = True
                break
        tenure.append(completed)
        churned.append(left)
    return tenure, churned


@pytest.mark.parametrize("alpha,beta,periods", [(0.7, 1.2, 12), (3.0, 8.0, 24),
                                                (1.5, 4.0, 6)])
def test_recovers_known_parameters_from_simulated_cohorts(alpha: float, beta: float,
                                                          periods: int) -> None:
    rng = np.random.default_rng(int(alpha * 100 + beta * 10 + periods))
    tenure: list[int] = []
    churned: list[bool] = []
    # Cohorts that started at different times are observed for different lengths.
    for observed in range(1, periods + 1):
        t, c = simulate_cohort(rng, alpha, beta, 1000, observed)
        tenure += t
        churned += c
    fit = sbg.fit_sbg(tenure, churned, "month")
    errors = fit.optimiser.standard_errors
    assert errors is not None
    assert abs(fit.alpha - alpha) < 3 * errors[0] and abs(fit.alpha - alpha) < 0.2 * alpha
    assert abs(fit.beta - beta) < 3 * errors[1] and abs(fit.beta - beta) < 0.2 * beta


def test_module_simulator_matches_the_model() -> None:
    rng = np.random.default_rng(5)
    tenure, churned = sbg.simulate_sbg(rng, 0.7, 1.2, 200_000, 5)
    share_alive = np.mean(~churned)
    expected = survival_by_product(0.7, 1.2, 5)
    assert share_alive == pytest.approx(expected, abs=4 * math.sqrt(expected / 200_000))


def test_projections_against_closed_forms_and_series() -> None:
    a, b = 0.704, 1.182
    assert sbg.survival((a, b), np.arange(6)).tolist() == pytest.approx(
        [survival_by_product(a, b, t) for t in range(6)], rel=1e-12)
    assert sbg.churn_probability((a, b), [1, 2]).tolist() == pytest.approx(
        [a / (a + b), a / (a + b) * b / (a + b + 1)], rel=1e-12)
    assert sbg.churn_probability((a, b), [3]).tolist() == pytest.approx(
        [beta_fn(a + 1, b + 2) / beta_fn(a, b)], rel=1e-10)
    assert sbg.retention_curve((a, b), 3).tolist() == pytest.approx(
        [b / (a + b), (b + 1) / (a + b + 1), (b + 2) / (a + b + 2)], rel=1e-12)
    # Heavy tail: alpha <= 1 has no finite mean lifetime.
    assert math.isinf(float(sbg.expected_remaining_lifetime((a, b), 3)))
    # alpha > 1: the mean of 1 / theta under Beta(alpha, beta + n), by a long sum.
    a2, b2, n = 3.0, 8.0, 4
    # E[T - n | T > n] = sum_{j >= 0} S(n + j) / S(n), the ratios built up one rate at a time.
    by_sum, ratio = 0.0, 1.0
    for j in range(200_000):
        by_sum += ratio
        ratio *= (b2 + n + j) / (a2 + b2 + n + j)
    assert float(sbg.expected_remaining_lifetime((a2, b2), n)) == pytest.approx(by_sum, rel=1e-4)


@pytest.mark.parametrize("n", [0, 1, 6])
def test_derl_and_clv_by_a_discounted_series(n: int) -> None:
    """DERL = sum_{k>=1} S(n + k) / S(n) / (1 + d)^(k - 1), summed term by term."""
    a, b, d = 0.704, 1.182, 0.1
    base = survival_by_product(a, b, n)
    by_sum = sum(survival_by_product(a, b, n + k) / base / (1 + d) ** (k - 1)
                 for k in range(1, 600))
    derl = float(sbg.discounted_expected_residual_lifetime((a, b), n, d))
    assert derl == pytest.approx(by_sum, rel=1e-9)
    assert float(sbg.subscriber_lifetime_value((a, b), n, 25.0, d)) == pytest.approx(
        25.0 * by_sum, rel=1e-9)


def test_longer_tenure_is_worth_more() -> None:
    derl = sbg.discounted_expected_residual_lifetime((0.704, 1.182), np.arange(10), 0.1)
    assert np.all(np.diff(derl) > 0)


def test_group_fits_keep_the_reason_of_a_thin_group() -> None:
    tenure, churned = cohort_rows(HIGH_END)
    groups = ["gold"] * len(tenure) + ["trial"] * 5
    fits = sbg.fit_sbg_by_group(groups, tenure + [1, 2, 1, 3, 1],
                                churned + [True, False, True, True, False], "year")
    assert isinstance(fits["gold"], sbg.SBGParams)
    assert fits["gold"].alpha == pytest.approx(0.668, abs=0.0005)
    assert isinstance(fits["trial"], str) and "at least 20" in fits["trial"]


def test_params_round_trip_through_json() -> None:
    tenure, churned = cohort_rows(REGULAR)
    fit = sbg.fit_sbg(tenure, churned, "year")
    again = sbg.SBGParams.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert again == fit


@pytest.mark.parametrize("tenure,churned,error,text", [
    ([1, 2] * 20, [True] * 39 + [2], btyd.InvalidModelData, "true or false"),
    ([1.5] + [1] * 39, [True] * 40, btyd.InvalidModelData, "whole number"),
    ([0] + [2] * 39, [True] * 40, btyd.InvalidModelData, "at least 1 completed"),
    ([1, 2] * 5, [True, False] * 5, btyd.InsufficientData, "at least 20"),
    ([3] * 40, [False] * 40, btyd.InsufficientData, "churned"),
    ([1] * 40, [True, False] * 20, btyd.InsufficientData, "2 or more"),
])
def test_bad_or_thin_data_are_typed_errors(tenure: list[float], churned: list[object],
                                           error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        sbg.fit_sbg(tenure, churned, "month")


def test_unknown_period_is_refused() -> None:
    tenure, churned = cohort_rows(REGULAR)
    with pytest.raises(btyd.InvalidModelData, match="period"):
        sbg.fit_sbg(tenure, churned, "week")  # type: ignore[arg-type]
