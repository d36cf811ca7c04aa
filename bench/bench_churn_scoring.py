"""Churn scoring at scale: fit, feature extraction and scoring of 1,000,000 customers.

Data: ``--customers`` customers (default 1,000,000) whose purchases follow a BG/NBD process
(lambda ~ Gamma(r, alpha), dropout after each repeat purchase with p ~ Beta(a, b), over
three years before the calibration date; amounts Gamma-Gamma), about 10 purchases per
customer (10,000,000 at full size), half an interaction of another kind per customer
(e-mail, call, visit, chat) and a few thousand churn records (customers who dropped out,
dated one to two and a half months after their last purchase). It is loaded with COPY
(psycopg 3) into the real tables of ``rapport_bench_churn`` on the server of
``RAPPORT_BENCH_DATABASE_URL`` (default postgresql://postgres@127.0.0.1:5432/test), after
``rapport db upgrade`` with every built-in plugin enabled (loyalty, complaints, surveys,
churn). The database is kept: a later run with the same size reuses the data (generation
is not what is measured; its time is printed apart). ``--regenerate`` forces a new load.

Measured, in a fresh child process (its own peak RSS, ``getrusage``), after dropping the
scores and model versions of earlier runs:

- ``fit_models(as_of=...)``: BTYD summaries + BG/NBD + Gamma-Gamma (+ the classifier on the
  churn records, as ``rapport churn fit`` does);
- ``score_customers()``: feature extraction and scoring of every customer, upserting
  ``churn_scores`` (``rapport churn score``);
- then, in another child, ``render_churn_report`` of the three years (the HTML report) on
  the scored database.

Goals (the issue's): feature extraction + scoring (``score_customers``) <= 60 s, peak RSS
<= 1 GB; the fit is timed apart, without a goal. With ``--features-only`` (or without
``plugins/churn/modeling.py``) the benchmark times feature extraction alone
(``feature_chunks`` and ``btyd_chunks`` over every customer, as of the calibration date).
Figures are printed, never asserted.

    python -m bench churn_scoring -- --customers 100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import multiprocessing
import queue as queue_module
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import create_engine, make_url, text

from bench import common

DATABASE = "rapport_bench_churn"
CUSTOMERS = 1_000_000
SEED = 20261124
AS_OF = dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc)
SPAN_DAYS = 3 * 365
MIN_AGE_DAYS = 30
#: The BG/NBD process the purchases come from (days), and the Gamma-Gamma amounts.
TRUE_BGNBD = {"r": 0.8, "alpha": 16.0, "a": 0.6, "b": 3.0}
TRUE_GAMMA_GAMMA = {"p": 6.0, "q": 4.0, "gamma": 15.0}
OTHER_PER_CUSTOMER = 0.5
OTHER_KINDS = ("email", "call", "visit", "chat")
CHURN_RECORDS_PER_MILLION = 5_000
BLOCK = 50_000
PLUGINS = ["loyalty", "complaints", "surveys", "churn"]
CHUNK = 20_000
TOTAL_GOAL_S = 60.0
RSS_GOAL_MB = 1024.0
TYPES = ("natural", "competitive", "negligence", "malicious")
REASONS = ("pricing", "competition", "core_service_failure", "service_encounter_failure",
           "inconvenience", "response_to_failure", "involuntary", "ethical", "other")


# --- Database and app ---------------------------------------------------------------------


def database_url() -> str:
    """The URL of ``rapport_bench_churn`` on the benchmark server, created if missing."""
    server = make_url(common._engine_url(common.server_url()))
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                               {"name": DATABASE}):
                conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    finally:
        admin.dispose()
    return server.set(drivername="postgresql", database=DATABASE).render_as_string(
        hide_password=False)


def make_app(url: str) -> Any:
    from core import create_app

    return create_app({"RAPPORT_ENV": "test", "RAPPORT_DATABASE_URL": url,
                       "RAPPORT_PLUGINS": PLUGINS})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


# --- Generation ---------------------------------------------------------------------------


@dataclass
class Block:
    """One block of simulated customers (ids ``first`` .. ``first + n - 1``)."""

    first: int
    start: np.ndarray            # first purchase, days after the start of the span
    purchase_customer: np.ndarray
    purchase_day: np.ndarray     # days after the start of the span (fractional)
    purchase_amount: np.ndarray  # cents
    dropped: np.ndarray          # bool per customer: dropped out before the end
    last_purchase: np.ndarray    # per customer


def simulate_block(rng: np.random.Generator, first: int, n: int) -> Block:
    """Purchases of ``n`` customers drawn from the BG/NBD process, purchase by purchase."""
    r, alpha, a, b = (TRUE_BGNBD[k] for k in ("r", "alpha", "a", "b"))
    start = rng.uniform(0, SPAN_DAYS - MIN_AGE_DAYS, n)
    rate = rng.gamma(r, 1.0 / alpha, n)
    dropout = rng.beta(a, b, n)
    customers, days = [np.arange(n)], [start.copy()]
    moment = start.copy()
    last = start.copy()
    dropped = np.zeros(n, dtype=bool)
    active = np.arange(n)
    while active.size:
        moment[active] += rng.exponential(1.0 / rate[active])
        active = active[moment[active] <= SPAN_DAYS]
        customers.append(active)
        days.append(moment[active].copy())
        last[active] = moment[active]
        leaving = rng.random(active.size) < dropout[active]
        dropped[active[leaving]] = True
        active = active[~leaving]
    who = np.concatenate(customers)
    p, q, gamma = (TRUE_GAMMA_GAMMA[k] for k in ("p", "q", "gamma"))
    scale = rng.gamma(q, 1.0 / gamma, n)  # nu per customer
    amounts = rng.gamma(p, 1.0 / scale[who])
    cents = np.maximum(1, np.round(amounts * 100)).astype(np.int64)
    return Block(first, start, who + first, np.concatenate(days), cents, dropped, last)


def _stamps(days: np.ndarray) -> list[str]:
    base = np.datetime64(AS_OF.replace(tzinfo=None), "s") - np.timedelta64(SPAN_DAYS, "D")
    moments = base + np.round(days * 86400.0).astype("timedelta64[s]")
    return np.datetime_as_string(moments, unit="s").tolist()  # type: ignore[no-any-return]


def _purchase_lines(block: Block) -> str:
    order = np.lexsort((block.purchase_day, block.purchase_customer))
    stamps = _stamps(block.purchase_day[order])
    units = (block.purchase_amount[order] * 100).tolist()  # Money: units of 10^-4
    return "".join(f"{c}\tpurchase\tweb\t{s}+00\t{u}\tUSD\t{{}}\tbench\t{s}+00\n"
                   for c, s, u in zip(block.purchase_customer[order].tolist(), stamps, units))


def _other_lines(rng: np.random.Generator, block: Block) -> str:
    n = block.start.size
    counts = rng.poisson(OTHER_PER_CUSTOMER, n)
    who = np.repeat(np.arange(n), counts)
    days = block.start[who] + rng.random(who.size) * (SPAN_DAYS - block.start[who])
    kinds = rng.integers(0, len(OTHER_KINDS), who.size).tolist()
    return "".join(f"{c}\t{OTHER_KINDS[k]}\tweb\t{s}+00\t\\N\t\\N\t{{}}\tbench\t{s}+00\n"
                   for c, k, s in zip((who + block.first).tolist(), kinds, _stamps(days)))


def _customer_lines(rng: np.random.Generator, block: Block) -> str:
    n = block.start.size
    genders = rng.choice(["female", "male", "\\N"], n, p=[0.47, 0.45, 0.08]).tolist()
    bands = rng.choice(["low", "middle", "high", "\\N"], n, p=[0.3, 0.4, 0.2, 0.1]).tolist()
    stamps = _stamps(block.start)
    return "".join(
        f"{i}\tCustomer {i}\tcustomer {i}\t{{}}\t"
        f"customer\tactive\t{g}\t{band}\t{s}+00\t{s}+00\n"
        for i, g, band, s in zip(range(block.first, block.first + n), genders, bands, stamps))


def _churn_lines(rng: np.random.Generator, block: Block) -> tuple[str, int]:
    """Churn records for some customers who dropped out 90+ days before the end."""
    eligible = np.flatnonzero(block.dropped & (block.last_purchase < SPAN_DAYS - 90))
    wanted = min(eligible.size, round(block.start.size * CHURN_RECORDS_PER_MILLION / 1e6))
    picked = np.sort(rng.choice(eligible, wanted, replace=False))
    days = np.minimum(block.last_purchase[picked] + rng.uniform(30, 75, picked.size),
                      SPAN_DAYS - 1)
    types = rng.choice(len(TYPES), picked.size, p=[0.4, 0.3, 0.25, 0.05]).tolist()
    reasons = rng.choice(len(REASONS), picked.size).tolist()
    lines = "".join(f"{c}\t{TYPES[t]}\t{REASONS[r]}\t{s}+00\t{s}+00\n"
                    for c, t, r, s in zip((picked + block.first).tolist(), types, reasons,
                                          _stamps(days)))
    return lines, picked.size


@dataclass
class Dataset:
    customers: int
    purchases: int
    others: int
    churn_records: int
    seconds: float
    reused: bool


def _secondary_indexes(cursor: Any, tables: tuple[str, ...]) -> list[tuple[str, str]]:
    cursor.execute("SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = "
                   "'public' AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM "
                   "pg_constraint c WHERE c.conname = i.indexname)", (list(tables),))
    return list(cursor.fetchall())


def _blocks(total: int) -> Iterator[tuple[int, int]]:
    for first in range(1, total + 1, BLOCK):
        yield first, min(BLOCK, total + 1 - first)


def load_dataset(app: Any, total: int, regenerate: bool) -> Dataset:
    """The data of ``total`` customers: reused when the database holds them, else loaded."""
    from core.db import db

    with app.app_context():
        raw = db.engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS bench_churn_dataset (customers bigint, "
                           "purchases bigint, others bigint, churn_records bigint, seed bigint,"
                           " seconds double precision)")
            cursor.execute("SELECT customers, purchases, others, churn_records, seconds "
                           "FROM bench_churn_dataset WHERE seed = %s", (SEED,))
            found = cursor.fetchone()
            raw.commit()
            if found and found[0] == total and not regenerate:
                return Dataset(*found, reused=True)
            return _generate(raw, cursor, total)
    finally:
        raw.close()


def _generate(raw: Any, cursor: Any, total: int) -> Dataset:
    began = time.perf_counter()
    rng = np.random.default_rng(SEED)
    cursor.execute("DELETE FROM bench_churn_dataset")
    cursor.execute("TRUNCATE customers, churn_model_versions RESTART IDENTITY CASCADE")
    tables = ("customers", "interactions", "churn_records")
    indexes = _secondary_indexes(cursor, tables)
    for name, _ in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    # The rows are consistent by construction: skip the per-row foreign-key triggers.
    cursor.execute("SET session_replication_role = replica")
    purchases = others = churned = 0
    for first, n in _blocks(total):
        block = simulate_block(rng, first, n)
        # No e-mails: scoring never reads them, and at rest they would need encrypting.
        with cursor.copy("COPY customers (id, name, name_normalized, "
                         "attributes, lifecycle_stage, status, gender, income_band, "
                         "created_at, updated_at) FROM STDIN") as copy:
            copy.write(_customer_lines(rng, block))
        columns = ("customer_id, kind, channel, occurred_at, amount, currency, payload, "
                   "source, recorded_at")
        with cursor.copy(f"COPY interactions ({columns}) FROM STDIN") as copy:
            copy.write(_purchase_lines(block))
            lines = _other_lines(rng, block)
            copy.write(lines)
        lines_churn, count = _churn_lines(rng, block)
        with cursor.copy("COPY churn_records (customer_id, type, reason, churned_at, "
                         "recorded_at) FROM STDIN") as copy:
            copy.write(lines_churn)
        purchases += block.purchase_customer.size
        others += lines.count("\n")
        churned += count
        print(f"  generated {first + n - 1:,} customers, {purchases + others:,} interactions",
              flush=True)
    cursor.execute("SET session_replication_role = DEFAULT")
    cursor.execute("UPDATE customers SET status = 'churned' WHERE id IN "
                   "(SELECT customer_id FROM churn_records)")
    for table in tables:
        cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                       f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)")
    print(f"  rebuilding {len(indexes)} indexes", flush=True)
    for _, definition in indexes:
        cursor.execute(definition)
    raw.commit()
    raw.driver_connection.autocommit = True
    cursor.execute("VACUUM ANALYZE")
    raw.driver_connection.autocommit = False
    seconds = time.perf_counter() - began
    cursor.execute("INSERT INTO bench_churn_dataset VALUES (%s, %s, %s, %s, %s, %s)",
                   (total, purchases, others, churned, SEED, seconds))
    raw.commit()
    return Dataset(total, purchases, others, churned, seconds, reused=False)


# --- Measurement (in child processes) -------------------------------------------------------


def has_modeling() -> bool:
    return importlib.util.find_spec("plugins.churn.modeling") is not None


def _reset_models(app: Any) -> None:
    from core.db import db

    with app.app_context():
        db.session.execute(text("TRUNCATE churn_scores, churn_model_versions RESTART IDENTITY "
                                "CASCADE"))
        db.session.commit()


def measure_scoring(url: str, queue: Any, features_only: bool = False) -> None:
    """fit_models + score_customers (or feature extraction alone), in this process."""
    from core.db import db

    app = make_app(url)
    figures: dict[str, Any] = {}
    with app.app_context():
        if has_modeling() and not features_only:
            from plugins.churn import modeling

            started = time.perf_counter()
            version = modeling.fit_models(as_of=AS_OF)
            db.session.commit()
            figures["fit_s"] = time.perf_counter() - started
            figures["params"] = dict(version.params or {})
            figures["metrics"] = dict(version.metrics or {})
            started = time.perf_counter()
            summary = modeling.score_customers(chunk_size=CHUNK)
            db.session.commit()
            figures["score_s"] = time.perf_counter() - started
            figures["summary"] = repr(summary)
            figures["scores"] = db.session.scalar(text("SELECT count(*) FROM churn_scores"))
        else:
            from plugins.churn.features import btyd_chunks, feature_chunks, feature_spec
            from plugins.churn.models import TimeUnit

            started = time.perf_counter()
            spec = feature_spec(AS_OF)
            rows = columns = 0
            for chunk in feature_chunks(spec, CHUNK):
                rows += chunk.values.shape[0]
                columns = chunk.values.shape[1]
            figures["features_s"] = time.perf_counter() - started
            figures["feature_rows"], figures["feature_columns"] = rows, columns
            db.session.rollback()
            started = time.perf_counter()
            buyers = sum(c.customer_ids.size for c in btyd_chunks(AS_OF, TimeUnit.DAY, CHUNK))
            figures["btyd_s"] = time.perf_counter() - started
            figures["btyd_rows"] = buyers
            db.session.rollback()
    figures["peak_rss_mb"] = peak_rss_mb()
    queue.put(figures)


def measure_features(url: str, queue: Any) -> None:
    measure_scoring(url, queue, features_only=True)


def measure_report(url: str, queue: Any) -> None:
    from plugins.churn.html_report import render_churn_report

    app = make_app(url)
    with app.app_context():
        started = time.perf_counter()
        page = render_churn_report((AS_OF - dt.timedelta(days=SPAN_DAYS)).date(),
                                   (AS_OF - dt.timedelta(days=1)).date())
        seconds = time.perf_counter() - started
    queue.put({"report_s": seconds, "report_kb": len(page.encode()) / 1024,
               "peak_rss_mb": peak_rss_mb()})


def in_child(target: Any, url: str) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(url, queue))
    process.start()
    while True:
        try:
            figures: dict[str, Any] = queue.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not process.is_alive():
                raise RuntimeError(f"{target.__name__} failed (exit code "
                                   f"{process.exitcode}; its traceback is above)") from None
    process.join()
    return figures


def _params_row(params: dict[str, Any]) -> str:
    bgnbd = params.get("bgnbd", params)
    values = []
    for key, true in TRUE_BGNBD.items():
        got = bgnbd.get(key) if isinstance(bgnbd, dict) else None
        values.append(f"{key} {got:.3f} (true {true})" if isinstance(got, (int, float))
                      else f"{key} ? (true {true})")
    return ", ".join(values)


def _metrics_row(metrics: dict[str, Any]) -> str:
    """The classifier's headline metrics and the training counts (not the reliability
    bins)."""
    parts = [f"{key} {value}" for key, value in (metrics.get("training") or {}).items()
             if key in ("customers", "labelled", "churned")]
    for name, found in (metrics.get("classifier") or {}).items():
        if isinstance(found, dict):
            parts += [f"{name} {key} {found[key]:.3f}" for key in ("roc_auc", "pr_auc",
                                                                   "base_rate")
                      if isinstance(found.get(key), float)]
    return ", ".join(parts + [str(note) for note in metrics.get("notes") or []]) or "none"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_churn_scoring")
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--regenerate", action="store_true",
                        help="Load the data again even when the database holds it.")
    parser.add_argument("--features-only", action="store_true",
                        help="Time feature extraction alone (feature_chunks, btyd_chunks).")
    args = parser.parse_args(argv or [])
    print(__doc__.strip().splitlines()[0])
    print(f"PostgreSQL {common.postgres_version()}; {common.machine()}; plugins "
          f"{', '.join(PLUGINS)}\n", flush=True)
    url = database_url()
    app = make_app(url)
    from core.migrate import upgrade

    upgrade(app)
    data = load_dataset(app, args.customers, args.regenerate)
    how = "reused from an earlier run (generated in" if data.reused else "generated in"
    print(f"data: {data.customers:,} customers, {data.purchases:,} purchases, {data.others:,} "
          f"other interactions, {data.churn_records:,} churn records; {how} "
          f"{data.seconds:.1f} s{')' if data.reused else ''}\n", flush=True)
    _reset_models(app)
    common.dispose(app)

    figures = in_child(measure_features if args.features_only else measure_scoring, url)
    rss = figures["peak_rss_mb"]
    if "fit_s" in figures:
        score = figures["score_s"]
        common.print_table(
            ["step", "seconds"],
            [["fit_models (BTYD summaries, BG/NBD, Gamma-Gamma, classifier; no goal)",
              figures["fit_s"]],
             [f"score_customers: feature extraction + scoring + writing (goal <= "
              f"{TOTAL_GOAL_S:.0f} s: {common.verdict(score, TOTAL_GOAL_S)})", score],
             ["fit + score (for the record)", figures["fit_s"] + score]],
            title=f"Fit and score, {data.customers:,} customers")
        print(f"scores stored: {figures['scores']:,}; summary: {figures['summary']}")
        print(f"BG/NBD: {_params_row(figures['params'])}")
        print(f"metrics: {_metrics_row(figures['metrics'])}")
    else:
        total = figures["features_s"] + figures["btyd_s"]
        print("feature extraction alone" + ("" if has_modeling() else
                                            " (plugins/churn/modeling.py is not there yet)"))
        common.print_table(
            ["step", "rows", "seconds"],
            [[f"feature_chunks ({figures['feature_columns']} columns)",
              figures["feature_rows"], figures["features_s"]],
             ["btyd_chunks (day)", figures["btyd_rows"], figures["btyd_s"]],
             [f"total (goal <= {TOTAL_GOAL_S:.0f} s: {common.verdict(total, TOTAL_GOAL_S)})",
              "", total]])
    print(f"peak RSS of the measuring process: {rss:.0f} MB (goal <= {RSS_GOAL_MB:.0f} MB: "
          f"{common.verdict(rss, RSS_GOAL_MB)})\n", flush=True)

    if importlib.util.find_spec("plugins.churn.html_report") is not None \
            and not args.features_only:
        report = in_child(measure_report, url)
        print(f"HTML report of the {SPAN_DAYS // 365} years: {report['report_s']:.1f} s, "
              f"{report['report_kb']:.0f} kB, peak RSS {report['peak_rss_mb']:.0f} MB")
