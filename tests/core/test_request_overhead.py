"""What a read-only request costs: API keys from a 5-second cache, no pre-ping, no
BEGIN/ROLLBACK, orjson answers (core.auth, core.connections, core.timeouts, core.http)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

import graphene
import pytest
from flask import Flask, jsonify
from sqlalchemy import event, func, select, text, update

from api import scoped
from core import auth, hookimpl
from core.changes import record
from core.db import db
from core.http import json_response
from core.models import Agent, ApiKey, AuditEntry, Customer
from core.services import transaction
from core.services.customers import create_customer
from core.services.staff import create_agent
from tests.conftest import AppFactory, GraphQL, admin_token

CUSTOMERS = "{ customers(first: 1) { totalCount } }"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(auth, "clock", fake)
    return fake


def _elsewhere(statement: Any) -> None:
    """Run a change as another process would: not through this process's ORM session."""
    with db.engine.begin() as conn:
        conn.execute(statement)


# --- API keys from a short-lived cache --------------------------------------------------------


def test_a_revocation_elsewhere_takes_effect_within_five_seconds(app: Flask,
                                                                 clock: Clock) -> None:
    gql = GraphQL(app, admin_token(app))
    assert gql(CUSTOMERS)["customers"]["totalCount"] == 0
    _elsewhere(update(ApiKey).values(revoked_at=dt.datetime.now(dt.timezone.utc)))
    clock.now += 4.9  # this worker still trusts what it read 4.9 s ago
    assert gql.raw(CUSTOMERS).status_code == 200
    clock.now += 0.1
    response = gql.raw(CUSTOMERS)
    assert response.status_code == 401
    assert "revoked" in response.get_json()["errors"][0]["message"]


def test_scope_and_agent_changes_elsewhere_take_effect_within_five_seconds(
        app: Flask, clock: Clock) -> None:
    create_agent({"name": "Ann", "email": "ann@shop.io", "role": "admin"})
    with app.app_context():
        _, secret = auth.create_api_key("ann", ["customers:read"], agent_email="ann@shop.io")
    gql = GraphQL(app, secret)
    assert gql(CUSTOMERS)["customers"]["totalCount"] == 0
    _elsewhere(update(ApiKey).values(scopes=["interactions:read"]))
    clock.now += 5
    assert gql.raw(CUSTOMERS).status_code == 403
    _elsewhere(update(ApiKey).values(scopes=["customers:read"]))
    _elsewhere(update(Agent).values(active=False))
    clock.now += 5
    assert gql.raw(CUSTOMERS).status_code == 401


def test_a_change_in_this_process_takes_effect_at_once(app: Flask, clock: Clock) -> None:
    agent = create_agent({"name": "Bo", "email": "bo@shop.io", "role": "admin"})
    with app.app_context():
        _, secret = auth.create_api_key("bo", ["customers:read"], agent_email="bo@shop.io")
    gql = GraphQL(app, secret)
    assert gql(CUSTOMERS)["customers"]["totalCount"] == 0
    with transaction():
        agent.active = False
    assert gql.raw(CUSTOMERS).status_code == 401  # the clock has not moved


def test_a_cached_key_costs_no_statement_and_last_use_is_kept(
        app: Flask, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    gql = GraphQL(app, admin_token(app))
    gql(CUSTOMERS)
    first = db.session.scalar(select(ApiKey.last_used_at))
    assert first is not None
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        gql(CUSTOMERS)
        clock.now += 60  # the cache expired: the key is read again, not written
        gql(CUSTOMERS)
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    # core.auth's lookup reads the key with its agent (the rate limiter has its own).
    assert sum("api_keys" in s and "agents" in s for s in statements) == 1, statements
    assert not any(s.lstrip().upper().startswith("UPDATE") for s in statements)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=6)
    monkeypatch.setattr(auth, "utcnow", lambda: later)
    gql(CUSTOMERS)  # a cached key whose last use is older than 5 minutes: written
    db.session.expire_all()
    assert db.session.scalar(select(ApiKey.last_used_at)) == later


def test_an_unknown_or_wrong_secret_is_never_served_from_the_cache(app: Flask,
                                                                   clock: Clock) -> None:
    token = admin_token(app)
    gql = GraphQL(app, token)
    gql(CUSTOMERS)
    prefix = token.split("_")[1]
    wrong = f"rpk_{prefix}_{'x' * 43}"
    assert gql.raw(CUSTOMERS, token=wrong).status_code == 401


# --- Round trips ----------------------------------------------------------------------------


def _trace(app: Flask) -> Any:
    """The frontend messages libpq sends while the block runs (PostgreSQL only)."""
    import psycopg.pq as pq

    files: list[Any] = []

    def checkout(dbapi: Any, record: Any, proxy: Any) -> None:
        trace = tempfile.NamedTemporaryFile("w+")  # noqa: SIM115 - closed by the caller
        files.append(trace)
        dbapi.pgconn.trace(trace.fileno())
        dbapi.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    def checkin(dbapi: Any, record: Any) -> None:
        if dbapi is not None:
            dbapi.pgconn.untrace()

    def messages() -> list[str]:
        found = []
        traced = list(files)
        files.clear()
        for trace in traced:
            trace.seek(0)
            for line in trace:
                fields = line.split("\t")
                if fields[0] == "F" and fields[2].strip() in ("Query", "Sync"):
                    found.append(fields[3].strip() if fields[2].strip() == "Query"
                                 else "statement")
            trace.close()
        return found

    with app.app_context():
        event.listen(db.engine.pool, "checkout", checkout, insert=True)
        event.listen(db.engine.pool, "checkin", checkin)
    return messages


def test_a_read_only_request_makes_one_round_trip_per_statement(make_app: AppFactory,
                                                                dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("round trips to PostgreSQL")
    app = make_app()
    gql = GraphQL(app, admin_token(app))
    query = "{ customers(first: 5) { edges { node { id name } } } }"
    gql(query)  # the key is read, its last use written, the connection's limit set
    messages = _trace(app)
    gql(query)
    # No ping, BEGIN, SET LOCAL, key lookup or ROLLBACK: the customers query alone.
    assert messages() == ["statement"]
    # A mutation still runs in one transaction, with its limit.
    gql('mutation { createCustomer(input: {name: "Ada"}) { customer { id } } }')
    sent = messages()
    assert sent[0].startswith('"BEGIN') and '"COMMIT"' in sent, sent


def test_a_read_only_request_keeps_its_statement_time_limit(make_app: AppFactory) -> None:
    app = make_app(plugins=(Probe(),), RAPPORT_STATEMENT_TIMEOUT_MS=1234)
    gql = GraphQL(app, admin_token(app))
    assert gql("{ probeTimeout }") == {"probeTimeout": "1234" if _pg(app) else "none"}
    with app.app_context():  # a job or the CLI on the same pooled connection: its own
        assert _timeout() == ("0" if _pg(app) else "none")


def test_a_killed_connection_is_replaced_without_a_ping(make_app: AppFactory) -> None:
    app = make_app()
    gql = GraphQL(app, admin_token(app))
    assert gql(CUSTOMERS)["customers"]["totalCount"] == 0
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("PostgreSQL connections")
        database = db.engine.url.database
        with db.engine.connect() as conn:
            mine = conn.scalar(text("SELECT pg_backend_pid()"))
        db.session.remove()
        from tests.conftest import _admin_engine

        admin = _admin_engine()
        try:
            with admin.connect() as conn:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :db AND pid = :pid"),
                             {"db": database, "pid": mine})
                for _ in range(100):
                    if not conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE "
                                            "pid = :pid"), {"pid": mine}):
                        break
                    time.sleep(0.05)
        finally:
            admin.dispose()
    time.sleep(0.1)  # the server's goodbye reaches the socket
    assert gql(CUSTOMERS)["customers"]["totalCount"] == 0
    assert app.test_client().get("/readyz").status_code in (200, 503)  # answers, no 500


# --- Writes inside a read-only request --------------------------------------------------------


def _pg(app: Flask) -> bool:
    with app.app_context():
        return db.engine.dialect.name == "postgresql"


def _timeout() -> str:
    if db.engine.dialect.name != "postgresql":
        return "none"
    value = str(db.session.scalar(text("SELECT setting FROM pg_settings "
                                       "WHERE name = 'statement_timeout'")))
    db.session.rollback()
    return value


class Probe:
    """Test-only query fields: the limit a read sees, and reads that write."""

    __name__ = "probe"

    @hookimpl
    def rapport_graphql_query_fields(self) -> dict[str, graphene.Field]:
        return {
            "probeTimeout": scoped(graphene.Field(graphene.String,
                                                  resolver=lambda root, info: _timeout()),
                                   "customers:read"),
            "probeAtomicWrite": scoped(graphene.Field(graphene.Int, resolver=_atomic_write),
                                       "customers:read"),
            "probeBareWrite": scoped(graphene.Field(graphene.Int, resolver=_bare_write),
                                     "customers:read"),
            "probeStatementWrite": scoped(graphene.Field(
                graphene.Int, resolver=_statement_write), "customers:read"),
            "probePendingThenFail": scoped(graphene.Field(
                graphene.Int, resolver=_pending_then_fail), "customers:read"),
            "probePendingThenWrite": scoped(graphene.Field(
                graphene.Int, resolver=_pending_then_write), "customers:read"),
        }


def _atomic_write(root: Any, info: Any) -> int:
    db.session.scalar(select(func.count()).select_from(Customer))  # a read first
    with transaction():
        create_customer({"name": "Written"})
        record("probe.write", [])
    return 1


def _bare_write(root: Any, info: Any) -> int:
    db.session.scalar(select(func.count()).select_from(Customer))
    db.session.add(AuditEntry(actor={}, operation="probe.bare", object_ids=[],
                              request_id="probe"))
    db.session.flush()
    db.session.commit()
    return 1


def _statement_write(root: Any, info: Any) -> int:
    """A write by statement (no flush), then a failure: nothing may stay."""
    db.session.scalar(select(func.count()).select_from(Customer))
    record("probe.statement", [])
    raise RuntimeError("the resolver fails after its write")


def _pending(operation: str) -> None:
    db.session.scalar(select(func.count()).select_from(Customer))
    db.session.add(AuditEntry(actor={}, operation=operation, object_ids=[],
                              request_id="probe"))


def _pending_then_fail(root: Any, info: Any) -> int:
    """An object added before a transaction that fails: it goes with the transaction."""
    _pending("probe.pending-failed")
    with transaction():
        raise RuntimeError("the transaction fails")


def _pending_then_write(root: Any, info: Any) -> int:
    _pending("probe.pending-kept")
    with transaction():
        record("probe.pending-write", [])
    return 1


def _audit_count(app: Flask, operation: str) -> int:
    with app.app_context():
        return int(db.session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.operation == operation)) or 0)


def test_writes_of_a_query_commit_with_their_transaction_or_not_at_all(
        make_app: AppFactory) -> None:
    app = make_app(plugins=(Probe(),))
    gql = GraphQL(app, admin_token(app))
    failed = gql.raw("{ probeStatementWrite }").get_json()
    assert failed["errors"] and _audit_count(app, "probe.statement") == 0
    failed = gql.raw("{ probePendingThenFail }").get_json()
    assert failed["errors"] and _audit_count(app, "probe.pending-failed") == 0
    assert gql("{ probePendingThenWrite }") == {"probePendingThenWrite": 1}
    assert _audit_count(app, "probe.pending-kept") == 1
    assert _audit_count(app, "probe.pending-write") == 1


def test_a_query_that_writes_in_a_transaction_commits_it_whole(make_app: AppFactory) -> None:
    app = make_app(plugins=(Probe(),))
    gql = GraphQL(app, admin_token(app))
    assert gql("{ probeAtomicWrite }") == {"probeAtomicWrite": 1}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Customer)) == 1
        assert db.session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.operation == "probe.write")) == 1


def test_a_query_that_writes_outside_a_transaction_is_refused(make_app: AppFactory) -> None:
    app = make_app(plugins=(Probe(),))
    if not _pg(app):
        pytest.skip("SQLite requests run in a transaction")
    gql = GraphQL(app, admin_token(app))
    body = gql.raw("{ probeBareWrite }").get_json()
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.operation == "probe.bare")) == 0


# --- orjson answers ---------------------------------------------------------------------------


@dataclass
class _Point:
    x: decimal.Decimal
    at: dt.date


def test_json_answers_match_flask_jsonify(app: Flask) -> None:
    payloads: list[Any] = [
        {"data": {"amount": decimal.Decimal("12.3400"), "big": decimal.Decimal("1E+3"),
                  "at": dt.datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=dt.timezone.utc),
                  "naive": dt.datetime(2026, 1, 2, 3, 4, 5), "day": dt.date(2026, 2, 3),
                  "id": uuid.UUID(int=7), "point": _Point(decimal.Decimal("1.5"),
                                                           dt.date(2025, 1, 1)),
                  "list": [1, 2.5, True, None, "a\"b\\c\n\t</script>"],
                  "order": {"z": 1, "a": 2}}},
        {"huge": 2**70, "nonstr": {1: "one"}},  # orjson refuses: Flask's encoder answers
    ]
    with app.test_request_context():
        for payload in payloads:
            assert json_response(payload).get_data() == jsonify(payload).get_data()
        text_payload = {"name": "Zoë 東京 \u2028"}
        fast = json_response(text_payload)
        assert fast.mimetype == "application/json"
        assert json.loads(fast.get_data()) == text_payload == json.loads(
            jsonify(text_payload).get_data())
