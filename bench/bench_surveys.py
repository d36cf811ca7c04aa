"""Survey analysis: the full analysis of 100,000 responses x 20 rating items.

Goal: <= 5 s and <= 500 MB peak RSS for descriptive + correlation (with key drivers) +
factor analysis (parallel analysis, principal axis factoring, oblimin) + Cronbach's alpha
(4 scales) + k-means clusters (k chosen in 2..8), loading the responses from PostgreSQL
included (CONTRACTS.md "Benchmarks").

The responses come from a known 4-factor model (5 items a factor, loadings 0.55-0.8,
factor correlations 0.3, 1-5 scale, 2% of answers missing), built by
``plugins.surveys.stats.simulate``. Two measurements:

- end to end (the goal): the same rows are COPYed into ``surveys_response`` of a fresh
  PostgreSQL database (``RAPPORT_BENCH_DATABASE_URL``, bench/common.py; setup, untimed) as
  an anonymous survey defined through the service, then ``plugins.surveys.analysis
  .run_analysis`` (what ``Survey.analysis``, the report and ``analyse_survey`` call) is
  timed: load (``load_matrix``, one statement for the numbers) and compute, split;
- compute only: ``plugins.surveys.stats.analyse`` on the matrix in memory.

k is chosen on a random sample (stated in the printout), then one k-means runs on all
responses. The analysis runs single-threaded (the default ``AnalysisOptions.threads=1``:
steadier on a shared machine). Peak RSS is measured for the analyses alone: the
process's high-water mark is reset after the data are built (``/proc/self/clear_refs``).

    python -m bench surveys -- --rows 20000 [--no-database]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench import common
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


def copy_responses(url: str, survey_id: int, matrix: np.ndarray, keys: Sequence[str]) -> float:
    """COPY ``matrix`` into surveys_response as anonymous responses of ``survey_id``;
    returns the seconds the COPY took."""
    import psycopg

    documents = [json.dumps({k: int(v) for k, v in zip(keys, row) if v == v})
                 for row in matrix.tolist()]
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        with conn.cursor().copy(
                "COPY surveys_response (survey_id, anonymous, submitted_at, recorded_at, "
                "numbers, choices, texts) FROM STDIN") as copy:
            for n, document in enumerate(documents):
                stamp = f"2026-{1 + n % 12:02d}-{1 + n % 28:02d} 10:00:00+00"
                copy.write_row((survey_id, True, stamp, stamp, document, "{}", "{}"))
        conn.commit()
    return time.perf_counter() - started


def end_to_end(matrix: np.ndarray, items: Sequence[Item], scales: Sequence[ScaleSpec],
               overall: str, repeat: int) -> None:
    """Load from PostgreSQL + analyse, through the service, ``repeat`` times."""
    with common.fresh_database("surveys") as url:
        app = common.make_app(url, plugins=["surveys"])
        from core.db import db
        from plugins.surveys import service
        from plugins.surveys.analysis import run_analysis

        with app.app_context():
            survey = service.create_survey({
                "title": "bench", "anonymous": True, "overall_question_key": overall,
                "questions": [{"key": it.key, "text": it.key, "type": "rating",
                               "scale_min": it.scale_min, "scale_max": it.scale_max}
                              for it in items],
                "scales": [{"name": s.name, "items": [{"key": k} for k in s.items]}
                           for s in scales]})
            service.open_survey(survey.id)
            survey_id = survey.id
        copied = copy_responses(url, survey_id, matrix, [it.key for it in items])
        common.analyze(common.engine_of(app))
        print(f"{matrix.shape[0]:,} responses COPYed into surveys_response in {copied:.2f} s "
              f"(setup, not timed)")
        options = {"rotation": "oblimin"}
        exact = reset_peak()
        runs = []
        for _ in range(repeat):
            with app.app_context():
                started = time.perf_counter()
                run = run_analysis(survey_id, options=options)
                runs.append((time.perf_counter() - started, run.seconds["load"],
                             run.seconds["compute"], run.analysis.n_responses))
                db.session.remove()
        peak = peak_mb()
        common.dispose(app)
    ordered = sorted(runs)
    total, load, compute, rows = ordered[len(ordered) // 2]
    print_table(["part", "seconds (median run)"],
                [["load (PostgreSQL -> matrix, load_matrix)", round(load, 3)],
                 ["compute (stats.analyse)", round(compute, 3)],
                 ["total (run_analysis, end to end)", round(total, 3)]],
                title=f"End to end, {rows:,} responses from PostgreSQL {common.postgres_version()}"
                      f" ({repeat} runs: {', '.join(f'{r[0]:.2f}' for r in runs)} s)")
    how = ("peak RSS during the runs (VmHWM reset after the data were built)" if exact
           else "peak RSS of the whole process (could not reset VmHWM)")
    print(f"end to end: time {total:.2f} s vs goal {GOAL_SECONDS:.0f} s: "
          f"{verdict(total, GOAL_SECONDS)}")
    print(f"end to end: {how}: {peak:.0f} MB vs goal {GOAL_MB:.0f} MB: "
          f"{verdict(peak, GOAL_MB)}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench surveys")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-database", action="store_true",
                        help="Compute only (no PostgreSQL at hand).")
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
    print(f"\ncompute only: time {total:.2f} s vs goal {GOAL_SECONDS:.0f} s: "
          f"{verdict(total, GOAL_SECONDS)}")
    print(f"compute only: {how}: {peak:.0f} MB vs goal {GOAL_MB:.0f} MB: "
          f"{verdict(peak, GOAL_MB)}\n")
    if not args.no_database:
        end_to_end(matrix, items, scales, overall, args.repeat)
    if factors.suggested_parallel != FACTORS:
        raise AssertionError(f"parallel analysis found {factors.suggested_parallel} factors, "
                             f"the data have {FACTORS}")


if __name__ == "__main__":
    main()
