"""Fixtures: every test runs on SQLite and on PostgreSQL, with an explicit plugin set.

PostgreSQL comes from RAPPORT_TEST_DATABASE_URL; without it the PostgreSQL variants skip,
unless RAPPORT_REQUIRE_POSTGRES=1 (CI), where a missing or unreachable server fails.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, event, text

from core import create_app
from core.db import db, tables_for_plugins

#: pytest-xdist runs the suite in several processes ("gw0", "gw1", ...). Each gets its own
#: PostgreSQL database and its own Redis database, so no two processes share state (the
#: fixtures TRUNCATE between tests; queue tests start worker processes on the broker).
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def _worker_database(url: str) -> str:
    if not url or not XDIST_WORKER:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{parts.path.lstrip('/')}_{XDIST_WORKER}"))


def _worker_redis(url: str) -> str:
    """Redis database ``base - n`` (modulo the 16 databases) for worker ``gw<n>``."""
    if not url.startswith(("redis://", "rediss://")) or not XDIST_WORKER:
        return url
    parts = urlsplit(url)
    base = int(parts.path.lstrip("/") or 0)
    index = int(XDIST_WORKER.removeprefix("gw"))
    return urlunsplit(parts._replace(path=f"/{(base - index) % 16}"))


BASE_PG_URL = os.environ.get("RAPPORT_TEST_DATABASE_URL", "")
PG_URL = _worker_database(BASE_PG_URL)
REQUIRE_PG = os.environ.get("RAPPORT_REQUIRE_POSTGRES") == "1"
# Set before any test module reads them (this file is imported first).
for _name in ("RAPPORT_TEST_BROKER_URL", "RAPPORT_TEST_REDIS_URL"):
    if os.environ.get(_name):
        os.environ[_name] = _worker_redis(os.environ[_name])


@event.listens_for(Engine, "connect")
def _sqlite_without_fsync(dbapi_connection: Any, connection_record: Any) -> None:
    """Test databases are thrown away: SQLite need not wait for the disk at each commit
    (and each DDL statement). Transactions, locks and the rollback journal are unchanged;
    only durability across a power loss goes, which no test relies on. Measured: creating
    every plugin's tables 0.6-0.8 s -> 0.1 s, seeding 300 rows through the services -0.4 s."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()


def _admin_engine() -> Any:
    return create_engine(BASE_PG_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                         isolation_level="AUTOCOMMIT")


def _worker_database_name() -> str:
    return urlsplit(PG_URL).path.lstrip("/")


def _create_worker_database() -> None:
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            name = _worker_database_name()
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
            # A commit does not wait for its WAL to reach the disk (the PostgreSQL side of
            # the SQLite files' synchronous=OFF): only a crash of the server could lose the
            # last commits of a throw-away database. Visibility, locks and isolation are
            # unchanged.
            conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    finally:
        engine.dispose()


def _postgres_reachable() -> str | None:
    if not PG_URL:
        return "RAPPORT_TEST_DATABASE_URL is not set"
    try:
        engine = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL at RAPPORT_TEST_DATABASE_URL is unreachable: {exc}"
    return None


_PG_PROBLEM: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _PG_PROBLEM
    if XDIST_WORKER and BASE_PG_URL:
        try:
            _create_worker_database()
        except Exception as exc:  # noqa: BLE001 - reported as "unreachable" below
            _PG_PROBLEM = f"cannot create this worker's database: {exc}"
    _PG_PROBLEM = _PG_PROBLEM or _postgres_reachable()
    if _PG_PROBLEM and REQUIRE_PG:
        raise pytest.UsageError(f"RAPPORT_REQUIRE_POSTGRES=1 but {_PG_PROBLEM}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if XDIST_WORKER and BASE_PG_URL and not _PG_PROBLEM:
        engine = _admin_engine()
        try:
            with engine.connect() as conn:
                conn.execute(text(
                    f'DROP DATABASE IF EXISTS "{_worker_database_name()}" WITH (FORCE)'))
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    if _PG_PROBLEM:
        pytest.skip(f"PostgreSQL tests skipped: {_PG_PROBLEM}")
    if request.node.get_closest_marker("sqlite_only"):
        pytest.skip("SQLite only")
    return PG_URL


@pytest.fixture
def dialect(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


AppFactory = Callable[..., Flask]


#: An SQLite database file with the tables of a set, per table set (one per process).
_SQLITE_TEMPLATES: dict[tuple[str, ...], Path] = {}


def _create_tables(engine: Any, tables: list[Any], templates: pytest.TempPathFactory) -> None:
    """The tables of an app. A new SQLite file is a copy of a file made once per process for
    the same tables (creating them costs 30-100 ms, the copy 1 ms); otherwise, as a second
    app on the same database, ``create_all`` adds the tables missing."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if path and path != ":memory:" and not os.path.exists(path):
        key = tuple(t.name for t in tables)
        template = _SQLITE_TEMPLATES.get(key)
        if template is None:
            template = templates.mktemp("sqlite-template") / "template.db"
            maker = create_engine(f"sqlite:///{template}")
            try:
                db.metadata.create_all(maker, tables=tables)
            finally:
                maker.dispose()
            _SQLITE_TEMPLATES[key] = template
        shutil.copyfile(template, path)
        return
    db.metadata.create_all(engine, tables=tables)


@pytest.fixture
def make_app(database_url: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[AppFactory]:
    """Build an app on this test's database with an explicit plugin set (default: API only)."""
    made: list[tuple[Flask, list[Any]]] = []

    def factory(enabled: list[str] | None = None, plugins: tuple[object, ...] = (),
                **config: Any) -> Flask:
        settings = {"RAPPORT_ENV": "test", "RAPPORT_DATABASE_URL": database_url,
                    "RAPPORT_PLUGINS": enabled or [], **config}
        app = create_app(settings, plugins=plugins)
        with app.app_context():
            tables = tables_for_plugins(app.extensions["rapport"].enabled_plugins)
            _create_tables(db.engine, tables, tmp_path_factory)
        made.append((app, tables))
        return app

    yield factory
    for app, tables in made:
        _stop_background_work(app)
        with app.app_context():
            db.session.remove()
            if db.engine.dialect.name == "postgresql":
                names = ", ".join(f'"{t.name}"' for t in tables)
                with db.engine.begin() as conn:
                    conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            db.engine.dispose()


def _stop_background_work(app: Flask) -> None:
    """Stop an app's embedded outbox relay and job threads: on PostgreSQL every test of a
    process shares one database, and a relay left running would take (and mark delivered)
    the next test's events for its own, stale consumers."""
    from core import jobs, outbox

    state = app.extensions.get(outbox.EXTENSION)
    if state is not None and state.relay is not None:
        state.relay.stop()
    jobs.wait_for_threads(app)


@pytest.fixture
def app(make_app: AppFactory) -> Iterator[Flask]:
    application = make_app()
    with application.app_context():
        yield application


class GraphQL:
    """Posts GraphQL documents through the test client with an API key."""

    def __init__(self, app: Flask, token: str | None):
        self.client = app.test_client()
        self.token = token

    def raw(self, query: str, variables: dict[str, Any] | None = None, *,
            token: str | None = "default", headers: dict[str, str] | None = None) -> Any:
        token = self.token if token == "default" else token
        all_headers = {"Authorization": f"Bearer {token}"} if token else {}
        all_headers.update(headers or {})
        return self.client.post("/graphql", json={"query": query, "variables": variables},
                                headers=all_headers)

    def __call__(self, query: str, variables: dict[str, Any] | None = None, **kwargs: Any
                 ) -> dict[str, Any]:
        response = self.raw(query, variables, **kwargs)
        body = response.get_json()
        assert response.status_code == 200, body
        assert "errors" not in body, body["errors"]
        return body["data"]  # type: ignore[no-any-return]


def admin_token(app: Flask, scopes: tuple[str, ...] = ("admin",)) -> str:
    from core.auth import create_api_key

    with app.app_context():
        _, secret = create_api_key("tests", scopes)
    return secret


@pytest.fixture
def gql(app: Flask) -> GraphQL:
    return GraphQL(app, admin_token(app))


def wait_for_a_lock_wait(engine: Any, tries: int = 100) -> bool:
    """Poll (every 50 ms, ``tries`` times) until a session of this PostgreSQL database waits
    on a lock: a concurrent test's other side has reached its wait. True if one did."""
    with engine.connect() as probe:
        for _ in range(tries):
            # pg_stat_activity is read once per transaction unless the snapshot is cleared.
            probe.execute(text("SELECT pg_stat_clear_snapshot()"))
            if probe.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")).scalar_one():
                return True
            threading.Event().wait(0.05)
    return False


@contextmanager
def count_statements(app: Flask) -> Iterator[list[str]]:
    """Collect the SQL statements the block runs (for N+1 tests)."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


#: Rows written by a ``seeded`` seed, per (name, dialect): {table: rows}, sequences, value.
_SEEDS: dict[tuple[str, str], tuple[dict[str, list[dict[str, Any]]], dict[str, Any], Any]] = {}


def seeded(name: str, seed: Callable[[], Any]) -> Any:
    """Fill this test's (fresh, empty) database with ``seed`` and return its value.

    The first call of a process runs ``seed`` through the services and keeps the rows it
    wrote; later calls with the same name copy those rows into their own fresh database in
    one bulk insert per table (and set PostgreSQL's sequences where the seed left them), a
    fraction of the cost of seeding again. Each test still starts from its own database
    holding exactly what ``seed`` writes. Call it in an app context, before anything else
    writes; ``seed`` must not depend on anything but its inputs (it is not run again)."""
    engine = db.engine
    dialect = engine.dialect.name
    from flask import current_app

    tables = tables_for_plugins(current_app.extensions["rapport"].enabled_plugins)
    with engine.connect() as conn:
        filled = [t.name for t in tables if conn.execute(t.select().limit(1)).first()]
    assert not filled, f"seeded({name!r}) needs an empty database; rows in {filled}"
    key = (name, dialect)
    if key not in _SEEDS:
        value = seed()
        db.session.commit()
        with engine.connect() as conn:
            rows = {t.name: [dict(r._mapping) for r in conn.execute(t.select())]
                    for t in tables}
            sequences = {}
            if dialect == "postgresql":
                for t in tables:
                    for column in t.primary_key.columns:
                        sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                                {"t": t.name, "c": column.name}).scalar()
                        if sequence:
                            sequences[sequence] = tuple(conn.execute(text(
                                f"SELECT last_value, is_called FROM {sequence}")).one())
        _SEEDS[key] = ({n: r for n, r in rows.items() if r}, sequences, value)
        return value
    rows, sequences, value = _SEEDS[key]
    with engine.begin() as conn:
        for t in tables:
            if rows.get(t.name):
                conn.execute(t.insert(), rows[t.name])
        for sequence, (last, called) in sequences.items():
            conn.execute(text("SELECT setval(:s, :v, :c)"),
                         {"s": sequence, "v": last, "c": called})
    return value
