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
- Baseline: ``psql \\copy`` of the same rows into the same ``interactions`` table (its
  indexes, foreign keys and check), in a database prepared the same way (schema and
  customers). COPY cannot look up external ids, so the rows are written beforehand, untimed,
  in the table's own shape (customer ids, ids and ``refers_to_id`` resolved, amounts in
  units of 10^-4, the ``store`` column as the JSON payload); no validation. The sequence is
  moved past the copied ids after the timed part.

The three paths run interleaved, ``--rounds`` times (default 3), each on a fresh database;
the median of each is reported. Goals: Rapport's rate / COPY's rate >= 0.5; peak RSS
<= 150 MB. Figures are printed, never asserted. ``--profile`` imports once more under
cProfile and prints where the time goes.

    python -m bench.bench_import --rows 200000
    RAPPORT_BENCH_IMPORT_ROWS=200000 python -m bench import
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
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
RSS_GOAL_MB = 150.0
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
#: The baseline's columns of ``interactions`` (``agent_id`` stays NULL).
TABLE_COLUMNS = ("id", "customer_id", "kind", "channel", "occurred_at", "amount", "currency",
                 "payload", "source", "external_id", "refers_to_id", "recorded_at")


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


def table_rows_file(interactions_csv: Path, customer_ids: dict[str, int], target: Path
                    ) -> None:
    """The file's rows in the shape of the ``interactions`` table (untimed preparation)."""
    ids: dict[str, int] = {}
    recorded = dt.datetime.now(dt.timezone.utc).isoformat()
    with interactions_csv.open(newline="", encoding="utf-8") as source, \
            target.open("w", newline="", encoding="utf-8") as out:
        rows, writer = csv.DictReader(source), csv.writer(out)
        for n, row in enumerate(rows, 1):
            ids[row["external_id"]] = n
            amount = (str(int(Decimal(row["amount"]) * 10_000)) if row["amount"] else "")
            payload = json.dumps({"store": row["store"]} if row["store"] else {})
            writer.writerow((n, customer_ids[row["customer_external_id"]], row["kind"],
                             row["channel"], row["occurred_at"] + "+00:00", amount,
                             row["currency"], payload, "default", row["external_id"],
                             ids[row["refers_to"]] if row["refers_to"] else "", recorded))


def copy_baseline(database: str, customers_csv: Path, interactions_csv: Path, rows: int,
                  work: Path) -> Measured:
    """``psql \\copy`` into the real ``interactions`` table of a prepared database."""
    with common.fresh_database(database) as url:
        env = child_env(url, None)
        run_measured(rapport_command("db", "upgrade"), env, work / f"{database}-upgrade.log")
        run_measured(rapport_command("import", "customers", str(customers_csv)), env,
                     work / f"{database}-customers.log")
        engine = _engine(url)
        try:
            with engine.connect() as conn:
                customer_ids = {e: i for e, i in conn.execute(text(
                    "SELECT external_id, customer_id FROM customer_external_ids"))}
            table_csv = work / "interactions-table.csv"
            table_rows_file(interactions_csv, customer_ids, table_csv)
            copied = run_measured(
                ["psql", url, "-v", "ON_ERROR_STOP=1", "-c",
                 f"\\copy interactions ({', '.join(TABLE_COLUMNS)}) FROM '{table_csv}' "
                 f"WITH (FORMAT csv)"], dict(os.environ), work / "copy.log")
            with engine.begin() as conn:
                conn.execute(text("SELECT setval(pg_get_serial_sequence('interactions', "
                                  "'id'), (SELECT max(id) FROM interactions))"))
        finally:
            engine.dispose()
        _check_count(url, "interactions", rows)
    return copied


# --- The benchmark ------------------------------------------------------------------------


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_import",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS, help="interactions in the file")
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="the importer's --batch-size (default: its own default)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the three paths (medians reported)")
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
        every = f"rapport import ({', '.join(installed_plugins())})"
        alls: list[ImportRun] = []
        cores: list[ImportRun] = []
        copies: list[Measured] = []
        for round_number in range(args.rounds):
            # A, B, C then C, A, B...: no path always runs first on a warm or cold server.
            steps = [lambda: copies.append(copy_baseline(f"{NAME}_copy", customers_csv,
                                                         interactions_csv, args.rows, work)),
                     lambda: alls.append(rapport_import(NAME, every, None, *files)),
                     lambda: cores.append(rapport_import(f"{NAME}_core",
                                                         "rapport import (core + api only)",
                                                         "", *files))]
            shift = round_number % len(steps)
            for step in steps[shift:] + steps[:shift]:
                step()
            print(f"round {round_number + 1}: copy {copies[-1].seconds:.2f} s, all plugins "
                  f"{alls[-1].interactions.seconds:.2f} s, core "
                  f"{cores[-1].interactions.seconds:.2f} s; load {os.getloadavg()[0]:.1f}",
                  flush=True)
        _report(args.rows, [_median_run(alls), _median_run(cores)], _median(copies))
        if args.profile:
            profile = work / "import.prof"
            rapport_import(f"{NAME}_profile", "profile", None, *files, profile=profile)
            print("where the import's time goes (cProfile, all plugins, by own time):")
            pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)


def _median(measured: list[Measured]) -> Measured:
    return sorted(measured, key=lambda m: m.seconds)[len(measured) // 2]


def _median_run(runs: list[ImportRun]) -> ImportRun:
    return sorted(runs, key=lambda r: r.interactions.seconds)[len(runs) // 2]


def _report(rows: int, runs: list[ImportRun], copy: Measured) -> None:
    copy_rate = rows / copy.seconds
    table = [(run.label, run.interactions.seconds, round(rows / run.interactions.seconds),
              run.interactions.peak_rss_mb) for run in runs]
    table.append(("psql \\copy into interactions", copy.seconds, round(copy_rate),
                  copy.peak_rss_mb))
    for run in runs:
        print(f"{run.label}: customers {run.customers.seconds:.1f} s; {run.summary}")
    common.print_table(("path", "seconds", "rows/s", "peak RSS MB"), table,
                       title=f"{rows:,} interaction rows (medians; load "
                             f"{os.getloadavg()[0]:.1f})")
    main_run = runs[0]
    rate_ratio = common.ratio(rows / main_run.interactions.seconds, copy_rate)
    rate_verdict = "meets" if rate_ratio >= RATE_GOAL else "MISSES"
    print(f"rate ratio rapport / copy: {rate_ratio:.3f} (goal >= {RATE_GOAL}: {rate_verdict})")
    print(f"peak RSS of the import: {main_run.interactions.peak_rss_mb:.0f} MB "
          f"(goal <= {RSS_GOAL_MB:.0f}: "
          f"{common.verdict(main_run.interactions.peak_rss_mb, RSS_GOAL_MB)})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
