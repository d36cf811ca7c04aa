"""Survey analysis: the full analysis of 100,000 responses x 20 rating items.

Goal: <= 5 s and <= 500 MB peak RSS for descriptive + correlation (with key drivers) +
factor analysis (parallel analysis, principal axis factoring, oblimin) + Cronbach's alpha
(4 scales) + k-means clusters (k chosen in 2..8).

No database: the responses come from a known 4-factor model (5 items a factor, loadings
0.55-0.8, factor correlations 0.3, 1-5 scale, 2% of answers missing), built by
``plugins.surveys.stats.simulate``, and go to ``plugins.surveys.stats.analyse`` as the
matrix ``load_matrix`` gives. k is chosen on a random sample (stated in the printout),
then one k-means runs on all responses. The analysis runs single-threaded (the default
``AnalysisOptions.threads=1``: steadier on a shared machine). Peak RSS is measured for
the analysis alone: the process's high-water mark is reset after the data are built
(``/proc/self/clear_refs``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.common import machine, print_table, verdict
from plugins.surveys.stats import AnalysisOptions, Item, ScaleSpec, SurveyAnalysis, analyse
from plugins.surveys.stats.simulate import factor_responses, simple_structure

GOAL_SECONDS = 5.0
GOAL_MB = 500.0
FACTORS = 4
PARTS = ("descriptive", "correlation", "factors", "reliability", "clusters")


def survey(rows: int, items: int, seed: int = 0
           ) -> tuple[np.ndarray, list[Item], list[ScaleSpec], str]:
    per_factor = [items // FACTORS + (1 if f < items % FACTORS else 0) for f in range(FACTORS)]
    pattern = simple_structure(per_factor, 0.7)
    pattern[pattern > 0] = np.random.default_rng(seed).uniform(0.55, 0.8, items)
    phi = np.full((FACTORS, FACTORS), 0.3) + 0.7 * np.eye(FACTORS)
    matrix = factor_responses(rows, pattern, phi, scale=(1, 5), missing=0.02,
                              seed=seed).ratings
    keys = [f"q{j + 1}" for j in range(items)]
    meta = [Item(k, "RATING", 1, 5) for k in keys]
    scales, start = [], 0
    for factor, count in enumerate(per_factor):
        members = tuple(keys[start:start + count])
        scales.append(ScaleSpec(f"factor {factor + 1}", members))
        start += count
    return matrix, meta, scales, keys[0]


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_mb() -> float:
    value = _status_mb("VmHWM")
    if value is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return value


def measure(matrix: np.ndarray, items: Sequence[Item], scales: Sequence[ScaleSpec],
            overall: str, repeat: int) -> tuple[list[float], SurveyAnalysis, float, str]:
    """Seconds per run, the median run's analysis, peak RSS (MB) and how it was measured."""
    options = AnalysisOptions(rotation="oblimin")
    analyse(matrix[:2000], items, scales, overall, options)  # imports and caches, untimed
    exact = reset_peak()
    runs: list[tuple[float, SurveyAnalysis]] = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = analyse(matrix, items, scales, overall, options)
        runs.append((time.perf_counter() - started, result))
    how = ("peak RSS during the analyses (VmHWM reset after the data were built)" if exact
           else "peak RSS of the whole process (could not reset VmHWM)")
    ordered = sorted(runs, key=lambda run: run[0])
    return [r[0] for r in runs], ordered[len(ordered) // 2][1], peak_mb(), how


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench surveys")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv or [])
    print(__doc__.strip().splitlines()[0])
    print(", ".join(f"{k} {v}" for k, v in machine().items())
          + ", load average %.1f %.1f %.1f (other work on the machine slows k-means most)"
          % os.getloadavg())
    started = time.perf_counter()
    matrix, items, scales, overall = survey(args.rows, args.items)
    built = time.perf_counter() - started
    baseline = _status_mb("VmRSS")
    print(f"{args.rows:,} responses x {args.items} items built in {built:.2f} s; RSS with the "
          f"data and libraries loaded: {baseline or 0:.0f} MB\n")
    seconds, analysis, peak, how = measure(matrix, items, scales, overall, args.repeat)
    total = statistics.median(seconds)
    print_table(["analysis", "seconds (median run)"],
                [[part, round(analysis.seconds[part], 3)] for part in PARTS]
                + [["total (analyse)", round(total, 3)]],
                title=f"Split of the full analysis ({args.repeat} runs: "
                      f"{', '.join(f'{s:.2f}' for s in seconds)} s)")
    factors, clusters = analysis.factors, analysis.clusters
    print(f"factors: {factors.n_factors} (parallel analysis {factors.suggested_parallel}, "
          f"Kaiser {factors.suggested_kaiser}; true {FACTORS}), KMO {factors.kmo:.3f}, "
          f"{factors.n_used:,} responses ({factors.missing_rule})")
    print(f"clusters: {clusters.selection}")
    print(f"alpha per scale: "
          + ", ".join(f"{r.cronbach_alpha:.3f}" for r in analysis.reliability if r.available))
    print(f"\ntime {total:.2f} s vs goal {GOAL_SECONDS:.0f} s: {verdict(total, GOAL_SECONDS)}")
    print(f"{how}: {peak:.0f} MB vs goal {GOAL_MB:.0f} MB: {verdict(peak, GOAL_MB)}")
    if factors.suggested_parallel != FACTORS:
        raise AssertionError(f"parallel analysis found {factors.suggested_parallel} factors, "
                             f"the data have {FACTORS}")


if __name__ == "__main__":
    main()
