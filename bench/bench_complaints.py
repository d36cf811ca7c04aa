"""Complaint spike detection: detection delay and false alarms on simulated daily counts.

Daily Poisson counts, baseline 20 a day, 90 days, 1,000 seeds; rises of 1.5x to 2.5x.

No database: this measures the statistical test of ``plugins.complaints.detection`` (the
same function the ``rapport complaints detect`` job calls per series). Each seed draws a
spike-free series (every alarm is a false alarm) and a series whose rate rises to
2.5 x 20 from day 60 on (the delay is the first alarm on or after day 60). Day 60 is the
first day of the rise: a delay of 0 means the alarm came on that day.
"""

from __future__ import annotations

import random
import statistics
import time

from plugins.complaints import detection

SEEDS = 1000
DAYS = 90
RATE = 20.0
SPIKE_DAY = 60
MIN_VOLUME = 10


def _series(rng: random.Random, factor: float) -> list[int]:
    return [detection.poisson_variate(rng, RATE * (factor if day >= SPIKE_DAY else 1.0))
            for day in range(DAYS)]


def measure(sensitivity: float, factor: float) -> tuple[list[int | None], int]:
    """Per seed, the detection delay in days (None: missed), and the total false alarms."""
    delays: list[int | None] = []
    false_alarms = 0
    for seed in range(SEEDS):
        rng = random.Random(seed)
        false_alarms += len(detection.scan(_series(rng, 1.0), sensitivity, MIN_VOLUME))
        alarms = [d for d in detection.scan(_series(rng, factor), sensitivity, MIN_VOLUME)
                  if d >= SPIKE_DAY]
        delays.append(alarms[0] - SPIKE_DAY if alarms else None)
    return delays, false_alarms


def main() -> None:
    print(__doc__.strip().splitlines()[0])
    print(f"{SEEDS} seeds; baseline window {detection.BASELINE_DAYS} days, windows "
          f"{detection.WINDOWS} days, minimum volume {MIN_VOLUME}; tested days per series: "
          f"{DAYS - detection.BASELINE_DAYS - max(detection.WINDOWS) + 1}\n")
    print(f"{'sensitivity':>11} {'rise':>5} {'detected':>9} {'day 0':>7} {'day 1':>7} "
          f"{'later':>7} {'mean delay':>11} {'false alarms / 90 days':>23} {'seconds':>8}")
    for sensitivity in (3.0, 4.0, 5.0):
        for factor in (1.5, 2.0, 2.5):
            started = time.perf_counter()
            delays, false_alarms = measure(sensitivity, factor)
            found = [d for d in delays if d is not None]
            mean = f"{statistics.fmean(found):.2f}" if found else "n/a"
            default = " (default)" if sensitivity == 4.0 and factor == 2.5 else ""
            print(f"{sensitivity:>11.1f} {factor:>4.1f}x {len(found) / SEEDS:>9.1%} "
                  f"{found.count(0) / SEEDS:>7.1%} {found.count(1) / SEEDS:>7.1%} "
                  f"{sum(1 for d in found if d > 1) / SEEDS:>7.1%} {mean:>11} "
                  f"{false_alarms / SEEDS:>23.4f} {time.perf_counter() - started:>8.1f}"
                  f"{default}")


if __name__ == "__main__":
    main()
