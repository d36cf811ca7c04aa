"""``rapport import interactions`` against ``psql \\copy`` of the same CSV file.

A CSV of ``--rows`` interactions (default 1,000,000) for ``--customers`` customers (default
10,000) is written to a temporary folder. Each measured path gets a fresh PostgreSQL
database, all in the same run:

- Rapport: the schema (``rapport db upgrade``) and the customers (``rapport import
  customers``), then the timed ``rapport import interactions FILE`` in a child process,
  exactly as an operator runs it: validation on and every installed plugin enabled
  (RAPPORT_PLUGINS unset). Wall time of the whole command, and the child's own peak RSS
  (``os.wait4``).
- The same import with only core and the API (RAPPORT_PLUGINS empty): what the plugins'
  hooks cost.
- Baseline: ``psql \\copy`` of the same file into a bare table with the file's columns and
  types (no index, constraint or validation): the fastest honest way in.

Goals: Rapport's rate / COPY's rate >= 0.5; peak RSS <= 300 MB. Figures are printed,
never asserted. ``--profile`` imports once more under cProfile and prints where the time
goes.

    python -m bench.bench_import --rows 200000
    RAPPORT_BENCH_IMPORT_ROWS=200000 python -m bench import
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from bench import common

NAME = "import"
#: ``python -m bench`` runs every benchmark without options: the environment can size it.
ROWS = int(os.environ.get("RAPPORT_BENCH_IMPORT_ROWS", "1000000"))
CUSTOMERS = 10_000
RATE_GOAL = 0.5
RSS_GOAL_MB = 300.0
SEED = 20261123
#: A fixed key for the child processes of one run (a benchmark database is dropped after).
BENCH_ENCRYPTION_KEY = "YmVuY2gtb25seS1lbmNyeXB0aW9uLWtleS0wMDAwMDA="
#: Share of each kind in the generated file; refunds name an earlier purchase.
KINDS = (("purchase", 0.45), ("email", 0.15), ("call", 0.10), ("visit", 0.10),
         ("chat", 0.08), ("service", 0.05), ("note", 0.04), ("refund", 0.03))
CHANNELS = {"purchase": ("web", "app", "store"), "refund": ("web", "store"),
            "email": ("email",), "call": ("phone",), "visit": ("store",),
            "chat": ("web_chat",), "service": ("field", "store"), "note": ("",)}
STORES = ("Paris", "Lyon", "Berlin", "Madrid", "Boston", "")
COLUMNS = ("customer_external_id", "external_id", "kind", "occurred_at", "amount", "currency",
           "channel", "refers_to", "store")
BARE_TABLE = """
CREATE TABLE bench_interactions_copy (
    customer_external_id text, external_id text, kind text, occurred_at timestamptz,
    amount numeric, currency text, channel text, refers_to text, store text
)"""


# --- Input files ----------------------------------------------------------------------------


def write_customers(path: Path, customers: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(("external_id", "name", "email", "country", "city"))
        for n in range(customers):
            out.writerow((f"C{n:06d}", f"Customer {n}", f"customer{n}@example.com", "FR",
                          "Paris"))


def write_interactions(path: Path, rows: int, customers: int) -> None:
    """Chronological rows; a refund refers to its customer's latest purchase (same batch or
    an earlier one). Naive ISO times (UTC by the format's rule), an unknown ``store``
    column (payload)."""
    rng = random.Random(SEED)
    kinds = [k for k, _ in KINDS]
    weights = [w for _, w in KINDS]
    start = dt.datetime(2025, 1, 1)
    step = dt.timedelta(days=300) / rows
    last_purchase: dict[int, str] = {}
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(COLUMNS)
        for n in range(rows):
            customer = rng.randrange(customers)
            kind = rng.choices(kinds, weights)[0]
            if kind == "refund" and customer not in last_purchase:
                kind = "purchase"
            external_id = f"I{n:08d}"
            amount = currency = refers_to = ""
            if kind in ("purchase", "refund"):
                amount = f"{rng.randint(100, 50_000) / 100:.2f}"
                currency = "USD" if rng.random() < 0.95 else "EUR"
            if kind == "refund":
                refers_to = last_purchase.pop(customer)
            elif kind == "purchase":
                last_purchase[customer] = external_id
            out.writerow((f"C{customer:06d}", external_id, kind,
                          (start + step * n).isoformat(timespec="seconds"), amount, currency,
                          rng.choice(CHANNELS[kind]), refers_to, rng.choice(STORES)))


# --- Running and measuring ----------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    output: str


def run_measured(command: list[str], env: dict[str, str], log: Path) -> Measured:
    """Run ``command``; its wall time and its own peak RSS (``wait4``, not other children)."""
    with log.open("w+", encoding="utf-8") as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        output = out.read()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}):\n{output}")
    return Measured(seconds, usage.ru_maxrss / 1024, output)  # ru_maxrss is in KiB


def rapport_command(*args: str, profile: Path | None = None) -> list[str]:
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    return [sys.executable, *profiler, "-m", "core.cli", *args]


def child_env(database_url: str, plugins: str | None) -> dict[str, str]:
    """The import's environment; ``plugins`` None: every installed plugin."""
    env = {k: v for k, v in os.environ.items() if k != "RAPPORT_PLUGINS"}
    if plugins is not None:
        env["RAPPORT_PLUGINS"] = plugins
    return env | {"RAPPORT_DATABASE_URL": database_url, "RAPPORT_ENV": "production",
                  "RAPPORT_SECRET_KEY": "bench-only-secret",
                  "RAPPORT_ENCRYPTION_KEYS": BENCH_ENCRYPTION_KEY,
                  "RAPPORT_BLIND_INDEX_KEY": "bench-only-blind-index-key-" + "0" * 16}


def installed_plugins() -> list[str]:
    from core.plugins import ENTRY_POINT_GROUP

    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


def _engine(database_url: str) -> Engine:
    return create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))


def _count(database_url: str, table: str) -> int:
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
    finally:
        engine.dispose()


def _check_count(database_url: str, table: str, rows: int) -> None:
    stored = _count(database_url, table)
    if stored != rows:
        raise RuntimeError(f"{table} holds {stored} rows, expected {rows}")


@dataclass
class ImportRun:
    label: str
    customers: Measured
    interactions: Measured

    @property
    def summary(self) -> str:
        return next((line for line in self.interactions.output.splitlines()
                     if line.startswith("imported:")), "?")


def rapport_import(database: str, label: str, plugins: str | None, customers_csv: Path,
                   interactions_csv: Path, rows: int, options: list[str], work: Path,
                   profile: Path | None = None) -> ImportRun:
    """Schema and customers, then the timed interactions import, on a fresh database."""
    with common.fresh_database(database) as url:
        env = child_env(url, plugins)
        run_measured(rapport_command("db", "upgrade"), env, work / f"{database}-upgrade.log")
        customers = run_measured(rapport_command("import", "customers", str(customers_csv)),
                                 env, work / f"{database}-customers.log")
        interactions = run_measured(
            rapport_command("import", "interactions", str(interactions_csv), *options,
                            profile=profile), env, work / f"{database}-interactions.log")
        _check_count(url, "interactions", rows)
    return ImportRun(label, customers, interactions)


def copy_baseline(interactions_csv: Path, rows: int, work: Path) -> Measured:
    with common.fresh_database(f"{NAME}_copy") as url:
        engine = _engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text(BARE_TABLE))
        finally:
            engine.dispose()
        copied = run_measured(["psql", url, "-v", "ON_ERROR_STOP=1", "-c",
                               f"\\copy bench_interactions_copy FROM '{interactions_csv}' "
                               f"WITH (FORMAT csv, HEADER true)"], dict(os.environ),
                              work / "copy.log")
        _check_count(url, "bench_interactions_copy", rows)
    return copied


# --- The benchmark ------------------------------------------------------------------------


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_import",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS, help="interactions in the file")
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="the importer's --batch-size (default: its own default)")
    parser.add_argument("--profile", action="store_true",
                        help="import once more under cProfile and print where time goes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv or [])
    options = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    print(f"PostgreSQL {common.postgres_version()}; {common.machine()}")
    with tempfile.TemporaryDirectory(prefix="rapport-bench-import-") as folder:
        work = Path(folder)
        customers_csv, interactions_csv = work / "customers.csv", work / "interactions.csv"
        started = time.perf_counter()
        write_customers(customers_csv, args.customers)
        write_interactions(interactions_csv, args.rows, args.customers)
        print(f"generated {args.rows:,} interactions for {args.customers:,} customers "
              f"({interactions_csv.stat().st_size / 2**20:.0f} MB) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        files = (customers_csv, interactions_csv, args.rows, options, work)
        runs = [rapport_import(NAME, f"rapport import ({', '.join(installed_plugins())})",
                               None, *files),
                rapport_import(f"{NAME}_core", "rapport import (core + api only)", "",
                               *files)]
        copy = copy_baseline(interactions_csv, args.rows, work)
        _report(args.rows, runs, copy)
        if args.profile:
            profile = work / "import.prof"
            rapport_import(f"{NAME}_profile", "profile", None, *files, profile=profile)
            print("where the import's time goes (cProfile, all plugins, by own time):")
            pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)


def _report(rows: int, runs: list[ImportRun], copy: Measured) -> None:
    copy_rate = rows / copy.seconds
    table = [(run.label, run.interactions.seconds, round(rows / run.interactions.seconds),
              run.interactions.peak_rss_mb) for run in runs]
    table.append(("psql \\copy (bare table)", copy.seconds, round(copy_rate),
                  copy.peak_rss_mb))
    for run in runs:
        print(f"{run.label}: customers {run.customers.seconds:.1f} s; {run.summary}")
    common.print_table(("path", "seconds", "rows/s", "peak RSS MB"), table,
                       title=f"{rows:,} interaction rows")
    main_run = runs[0]
    rate_ratio = common.ratio(rows / main_run.interactions.seconds, copy_rate)
    rate_verdict = "meets" if rate_ratio >= RATE_GOAL else "MISSES"
    print(f"rate ratio rapport / copy: {rate_ratio:.3f} (goal >= {RATE_GOAL}: {rate_verdict})")
    print(f"peak RSS of the import: {main_run.interactions.peak_rss_mb:.0f} MB "
          f"(goal <= {RSS_GOAL_MB:.0f}: "
          f"{common.verdict(main_run.interactions.peak_rss_mb, RSS_GOAL_MB)})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
