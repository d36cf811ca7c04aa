"""Helpers shared by the benchmarks: timing, a scratch PostgreSQL database, apps, tables.

Timing uses ``time.perf_counter`` over repeated runs after a warm-up and reports the
median and the 90th percentile. Figures are printed, never asserted: a benchmark fails
only when its results are wrong (e.g. two paths that should agree return different data).
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Engine

#: The server to create the scratch databases on (any database of it; we connect to it to
#: run CREATE DATABASE / DROP DATABASE).
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/test"


# --- Timing ---------------------------------------------------------------------------------


@dataclass
class Timing:
    """Samples in seconds."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]

    @property
    def median_ms(self) -> float:
        return self.median * 1000

    @property
    def p90_ms(self) -> float:
        return self.p90 * 1000


def timeit(fn: Callable[[], Any], repeat: int = 30, warmup: int = 3) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times timed."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Timing(samples)


def compare(cases: Mapping[str, Callable[[], Any]], repeat: int = 30, warmup: int = 3
            ) -> dict[str, Timing]:
    """Time several callables interleaved (a, b, a, b, ...) so drift hits all alike."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(values) for name, values in samples.items()}


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")


def verdict(value: float, goal: float) -> str:
    """'meets' or 'misses' a "<= goal" target (for the printout, not an assertion)."""
    return "meets" if value <= goal else "MISSES"


# --- Output ---------------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                title: str | None = None) -> None:
    """A small aligned table: text left-aligned, numbers right-aligned."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    body = [[cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows if i < len(row))
               for i in range(len(headers))]
    widths = [max(len(str(h)), *(len(r[i]) for r in body if i < len(r))) if body else len(h)
              for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if numeric[i] else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    if title:
        print(title)
    print(line([str(h) for h in headers]))
    print(line(["-" * w for w in widths]))
    for row in body:
        print(line(row))
    print(flush=True)


# --- Databases ------------------------------------------------------------------------------


def server_url() -> str:
    return os.environ.get("RAPPORT_BENCH_DATABASE_URL") or DEFAULT_SERVER_URL


def _engine_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@contextmanager
def fresh_database(name: str) -> Iterator[str]:
    """A new, empty PostgreSQL database ``rapport_bench_<name>``; dropped at the end.

    Yields its URL (``postgresql://...``, as ``RAPPORT_DATABASE_URL`` takes it). A database
    left over by an interrupted run is dropped first.
    """
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"benchmark database names are [a-z0-9_]+ (got {name!r})")
    database = f"rapport_bench_{name}"
    server = make_url(_engine_url(server_url()))
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        url = server.set(drivername="postgresql", database=database)
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def postgres_version() -> str:
    engine = create_engine(_engine_url(server_url()))
    try:
        with engine.connect() as conn:
            return str(conn.scalar(text("SHOW server_version")))
    finally:
        engine.dispose()


# --- Apps -----------------------------------------------------------------------------------

#: ``plugins=ALL_PLUGINS``: RAPPORT_PLUGINS unset, i.e. every plugin installed in this
#: environment is enabled (even if the shell sets RAPPORT_PLUGINS).
ALL_PLUGINS = object()


def make_app(database_url: str, plugins: Any = (), **config: Any) -> Any:
    """A Rapport app (RAPPORT_ENV=test) on ``database_url`` with its tables created.

    ``plugins``: the RAPPORT_PLUGINS list (default: none beyond the always-on API), or
    ``ALL_PLUGINS`` for every installed plugin. Tables come from the models of core and
    the enabled plugins (as the test suite creates them).
    """
    from core import create_app
    from core.db import db, tables_for_plugins

    settings: dict[str, Any] = {"RAPPORT_ENV": "test", "RAPPORT_DATABASE_URL": database_url,
                                **config}
    if plugins is ALL_PLUGINS:
        saved = os.environ.pop("RAPPORT_PLUGINS", None)
        try:
            app = create_app(settings)
        finally:
            if saved is not None:
                os.environ["RAPPORT_PLUGINS"] = saved
    else:
        app = create_app({**settings, "RAPPORT_PLUGINS": list(plugins)})
    with app.app_context():
        tables = tables_for_plugins(app.extensions["rapport"].enabled_plugins)
        db.metadata.create_all(db.engine, tables=tables)
    return app


def enabled_plugins(app: Any) -> list[str]:
    return sorted(app.extensions["rapport"].enabled_plugins)


def admin_key(app: Any) -> str:
    """A new admin API key's secret (core.auth.create_api_key), exempt from rate limits:
    the figures measure the server, not the limiter (bench/RESULTS.md says so)."""
    from core.auth import create_api_key

    with app.app_context():
        _, secret = create_api_key("bench", ["admin"], rate_limit="unlimited")
    return secret


def engine_of(app: Any) -> Engine:
    from core.db import db

    with app.app_context():
        return db.engine


@contextmanager
def count_statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements run on ``engine`` in the block (before_cursor_execute)."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def analyze(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))


def machine() -> dict[str, str]:
    """CPU count, memory and CPU model, for the printout."""
    info = {"cpus": str(os.cpu_count())}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
            info["memory"] = f"{kb / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return info


def dispose(*apps: Any) -> None:
    """Close the apps' connection pools (before their database is dropped)."""
    from core.db import db

    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
