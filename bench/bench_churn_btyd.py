"""BG/NBD fit: plugins.churn.btyd against the ``lifetimes`` package on the same customers.

100,000 customers drawn from the BG/NBD model itself (r=0.25, alpha=10 days, a=0.8,
b=2.5; ages uniform over 30 to 730 days; seed 2026), in two forms: whole days (what the
churn features give: repeat purchase days, recency and age in days) and the simulator's
continuous times. No database: both sides fit the same arrays in this process.

Our fit time is the median of several runs (input checks, the grouping of identical
customers and the standard errors included). ``lifetimes`` (0.11.3, where it is
installed) runs ``BetaGeoFitter(penalizer_coef=0).fit`` on the same arrays, fewer times.
Both optima are evaluated with both codes' log-likelihood formulas: they must agree (the
benchmark fails if the two maxima differ by more than 0.01 per 1,000 customers).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import Timing, machine, print_table, ratio, timeit
from plugins.churn import btyd

TRUE_PARAMS = (0.25, 10.0, 0.8, 2.5)
SEED = 2026
GOAL = 5.0


def customers(n: int, whole_days: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    ages = rng.uniform(30.0, 730.0, n)
    x, recency, age = btyd.simulate_bgnbd(rng, *TRUE_PARAMS, ages)
    if whole_days:
        return x, np.floor(recency), np.ceil(age)
    return x, recency, age


def _lifetimes() -> Any | None:
    try:
        from lifetimes import BetaGeoFitter
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        print(f"lifetimes is not importable ({type(exc).__name__}: {exc}); "
              f"only our figures follow\n")
        return None
    return BetaGeoFitter


def _lifetimes_total(fitter_class: Any, params: tuple[float, ...], x: np.ndarray,
                     recency: np.ndarray, age: np.ndarray) -> float:
    """lifetimes' own objective at ``params``, as a total log-likelihood in our time unit
    (it works on times scaled by c = 1 / max(T): each customer's density gains c^-x)."""
    c = 1.0 / age.max()
    r, alpha, a, b = params
    mean_negative = fitter_class._negative_log_likelihood(
        np.log([r, alpha * c, a, b]), x.astype(int), recency * c, age * c,
        np.ones_like(recency), 0.0)
    return float(-mean_negative * len(x) + x.sum() * math.log(c))


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[Timing, Any]:
    result = fn()
    return timeit(fn, repeat=repeat, warmup=0), result


def run(n: int, whole_days: bool, repeat: int, lifetimes_repeat: int,
        fitter_class: Any | None) -> list[Any]:
    x, recency, age = customers(n, whole_days)
    ours_timing, ours = _timed(lambda: btyd.fit_bgnbd(x, recency, age), repeat)
    ours_params = (ours.r, ours.alpha, ours.a, ours.b)
    distinct = len(np.unique(np.column_stack([x, recency, age]), axis=0))
    label = "whole days" if whole_days else "continuous"
    rows: list[Any] = [[f"rapport ({label})", ours_timing, ours.log_likelihood, *ours_params,
                        ours.optimiser.iterations]]
    print(f"{label}: {n:,} customers, {distinct:,} distinct (x, t_x, T), "
          f"{ours.n_repeat_buyers:,} repeat buyers")
    if fitter_class is None:
        return rows
    theirs_timing, theirs = _timed(lambda: fitter_class(penalizer_coef=0.0).fit(
        x, recency, age), lifetimes_repeat)
    theirs_params = tuple(float(theirs.params_[k]) for k in ("r", "alpha", "a", "b"))
    at_theirs = float(btyd.bgnbd_log_likelihood(theirs_params, x, recency, age).sum())
    rows.append([f"lifetimes ({label})", theirs_timing, at_theirs, *theirs_params, "-"])
    by_lifetimes = (_lifetimes_total(fitter_class, ours_params, x, recency, age),
                    _lifetimes_total(fitter_class, theirs_params, x, recency, age))
    print(f"  log-likelihood, our formula:       ours {ours.log_likelihood:,.4f}  "
          f"lifetimes' optimum {at_theirs:,.4f}")
    print(f"  log-likelihood, lifetimes' formula: ours {by_lifetimes[0]:,.4f}  "
          f"lifetimes' optimum {by_lifetimes[1]:,.4f}")
    speedup = ratio(theirs_timing.median, ours_timing.median)
    print(f"  speed ratio lifetimes / rapport: {speedup:.1f}x (goal >= {GOAL:.0f}x: "
          f"{'meets' if speedup >= GOAL else 'MISSES'})")
    tolerance = 0.01 * n / 1000
    if abs(ours.log_likelihood - at_theirs) > tolerance or \
            abs(by_lifetimes[0] - ours.log_likelihood) > tolerance:
        raise AssertionError(f"the two fits disagree: {ours.log_likelihood} (ours) against "
                             f"{at_theirs} (lifetimes), {by_lifetimes} by lifetimes' formula")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench churn_btyd")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7, help="runs of our fit")
    parser.add_argument("--lifetimes-repeat", type=int, default=3, help="runs of lifetimes")
    args = parser.parse_args(argv or [])
    print(__doc__.strip().splitlines()[0])
    print(", ".join(f"{k} {v}" for k, v in machine().items()))
    print(f"true parameters r, alpha, a, b = {TRUE_PARAMS}\n")
    started = time.perf_counter()
    rows: list[Any] = []
    fitter_class = _lifetimes()
    for whole_days in (True, False):
        rows += run(args.customers, whole_days, args.repeat, args.lifetimes_repeat,
                    fitter_class)
    print()
    print_table(["fit", "median ms", "p90 ms", "log-likelihood", "r", "alpha", "a", "b",
                 "iterations"],
                [[row[0], row[1].median_ms, row[1].p90_ms, round(row[2], 2),
                  *(f"{v:.4f}" for v in row[3:7]), row[7]] for row in rows])
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
