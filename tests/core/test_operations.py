"""Operating Rapport: /healthz, /readyz, /metrics, JSON logs with the request id, the
gunicorn configuration and `rapport serve --production` (a real gunicorn, 2 workers)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import graphene
import pytest
from alembic.script import ScriptDirectory
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import text

from api import scoped
from core import context, create_app, hookimpl, metrics
from core.cli import cli
from core.config import ConfigError
from core.db import db
from core.logs import configure_logging
from core.migrate import alembic_config, upgrade
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.migrations import drop_everything

ROOT = Path(__file__).resolve().parents[2]


def sample(name: str, **labels: str) -> float:
    return float(REGISTRY.get_sample_value(name, labels) or 0.0)


class Probe:
    """A plugin whose fields tell what a resolver sees, or crash (a logged server error)."""

    name = "probe"

    @hookimpl
    def rapport_graphql_query_fields(self) -> dict[str, graphene.Field]:
        def request_id(root: Any, info: Any) -> str:
            logging.getLogger("rapport.probe").info("resolving requestId")
            return context.current().request_id

        def crash(root: Any, info: Any) -> str:
            raise RuntimeError("boom")

        return {
            "probeRequestId": scoped(graphene.Field(graphene.String, resolver=request_id),
                                     "customers:read"),
            "probeCrash": scoped(graphene.Field(graphene.String, resolver=crash),
                                 "customers:read"),
        }


# --- /healthz and /readyz -------------------------------------------------------------------


def test_healthz_needs_no_database_and_readyz_says_it_is_unreachable() -> None:
    # Nothing listens on port 9 of this machine: the connection is refused at once.
    app = create_app({"RAPPORT_ENV": "test", "RAPPORT_PLUGINS": [],
                      "RAPPORT_DATABASE_URL": "postgresql://rapport@127.0.0.1:9/nowhere"})
    client = app.test_client()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    started = time.perf_counter()
    ready = client.get("/readyz")
    assert time.perf_counter() - started < 5
    body = ready.get_json()
    assert ready.status_code == 503, body
    assert body["status"] == "failing"
    assert body["checks"]["database"]["status"] == "failing"
    assert "rapport@" not in json.dumps(body)  # no connection details leak


def test_readyz_wants_every_branch_at_head(make_app: AppFactory) -> None:
    app = make_app(enabled=["loyalty"])
    drop_everything(app)
    client = app.test_client()
    assert client.get("/readyz").status_code == 503  # no migrations at all
    upgrade(app)
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"]["database"]["status"] == "ok"
    assert "broker" not in ready.get_json()["checks"]

    with app.app_context(), db.engine.begin() as conn:
        script = ScriptDirectory.from_config(alembic_config(app, conn))
        core_head = script.get_revision("core@head")
        conn.execute(text("UPDATE alembic_version SET version_num = :older "
                          "WHERE version_num = :head"),
                     {"older": core_head.down_revision, "head": core_head.revision})
    missing = client.get("/readyz")
    body = missing.get_json()
    assert missing.status_code == 503, body
    error = body["checks"]["database"]["error"]
    assert f"core (needs {core_head.revision})" in error and "rapport db upgrade" in error
    assert "loyalty" not in error
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :head "
                          "WHERE version_num = :older"),
                     {"older": core_head.down_revision, "head": core_head.revision})
    assert client.get("/readyz").status_code == 200


def test_readyz_checks_the_broker_when_one_is_configured(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_BROKER_URL="redis://127.0.0.1:9/0")
    ready = app.test_client().get("/readyz")
    body = ready.get_json()
    assert ready.status_code == 503
    assert body["checks"]["broker"]["status"] == "failing"
    assert body["checks"]["broker"]["seconds"] < 3
    broker = os.environ.get("RAPPORT_TEST_BROKER_URL")
    if broker:
        live = make_app(RAPPORT_BROKER_URL=broker).test_client().get("/readyz").get_json()
        assert live["checks"]["broker"]["status"] == "ok", live


# --- /metrics -------------------------------------------------------------------------------


def test_metrics_need_the_scope_or_an_allowed_address(make_app: AppFactory) -> None:
    app = make_app()
    client = app.test_client()
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.get_json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    reader = admin_token(app, ("customers:read",))
    refused = client.get("/metrics", headers={"Authorization": f"Bearer {reader}"})
    assert refused.status_code == 403
    assert refused.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    scraper = admin_token(app, ("metrics:read",))
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {scraper}"})
    assert scraped.status_code == 200
    assert scraped.content_type.startswith("text/plain")
    assert "rapport_http_requests_total" in scraped.get_data(as_text=True)

    listed = make_app(RAPPORT_METRICS_ALLOWED_IPS="10.0.0.0/8, 127.0.0.1").test_client()
    assert listed.get("/metrics").status_code == 200  # the test client calls from 127.0.0.1
    elsewhere = make_app(RAPPORT_METRICS_ALLOWED_IPS="10.0.0.0/8").test_client()
    assert elsewhere.get("/metrics").status_code == 401
    with pytest.raises(ConfigError, match="RAPPORT_METRICS_ALLOWED_IPS"):
        make_app(RAPPORT_METRICS_ALLOWED_IPS="localhost")


def test_metrics_count_operations_errors_and_statuses(make_app: AppFactory) -> None:
    app = make_app()
    gql = GraphQL(app, admin_token(app))
    labels = {"operation": "CountedPlugins", "type": "query"}
    before = sample("rapport_graphql_request_duration_seconds_count", **labels)
    invalid = sample("rapport_graphql_errors_total", code="GRAPHQL_VALIDATION_FAILED")
    unauthenticated = sample("rapport_graphql_errors_total", code="UNAUTHENTICATED")
    status_400 = sample("rapport_http_requests_total", method="POST", route="/graphql",
                        status="400")

    gql("query CountedPlugins { plugins { name } }")
    gql("query CountedPlugins { plugins { name } }")
    assert gql.raw("query Broken { customers { nope } }").status_code == 400
    assert gql.raw("{ plugins { name } }", token=None).status_code == 401

    assert sample("rapport_graphql_request_duration_seconds_count", **labels) == before + 2
    assert sample("rapport_graphql_errors_total", code="GRAPHQL_VALIDATION_FAILED") == \
        invalid + 1
    assert sample("rapport_graphql_errors_total", code="UNAUTHENTICATED") == \
        unauthenticated + 1
    assert sample("rapport_http_requests_total", method="POST", route="/graphql",
                  status="400") == status_400 + 1
    exposed = app.test_client().get(
        "/metrics", headers={"Authorization": f"Bearer {gql.token}"}).get_data(as_text=True)
    assert 'rapport_graphql_request_duration_seconds_count{operation="CountedPlugins",' \
           'type="query"}' in exposed
    assert 'rapport_graphql_errors_total{code="GRAPHQL_VALIDATION_FAILED"}' in exposed


def test_operation_names_are_bounded(make_app: AppFactory,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    gql = GraphQL(app, admin_token(app))
    monkeypatch.setattr(metrics, "_operations", {"Known"})
    monkeypatch.setattr(metrics, "MAX_OPERATIONS", 1)
    other = sample("rapport_graphql_request_duration_seconds_count", operation="other",
                   type="query")
    gql("query Known { plugins { name } }")
    gql("query NeverSeenBefore { plugins { name } }")
    assert sample("rapport_graphql_request_duration_seconds_count", operation="other",
                  type="query") == other + 1
    assert sample("rapport_graphql_request_duration_seconds_count",
                  operation="NeverSeenBefore", type="query") == 0


@pytest.fixture
def no_outbox_lag() -> Iterator[None]:
    yield
    metrics.set_outbox_lag_callback(None)


def test_job_webhook_and_outbox_metrics(make_app: AppFactory, no_outbox_lag: None) -> None:
    jobs = sample("rapport_jobs_total", kind="churn.fit", outcome="failed")
    slow = sample("rapport_job_duration_seconds_bucket", kind="churn.fit", le="60.0")
    metrics.job_finished("churn.fit", "FAILED", 42.0)
    assert sample("rapport_jobs_total", kind="churn.fit", outcome="failed") == jobs + 1
    assert sample("rapport_job_duration_seconds_bucket", kind="churn.fit", le="60.0") == \
        slow + 1
    delivered = sample("rapport_webhook_deliveries_total", outcome="delivered")
    metrics.webhook_delivered("delivered", 0.2)
    assert sample("rapport_webhook_deliveries_total", outcome="delivered") == delivered + 1

    app = make_app(RAPPORT_METRICS_ALLOWED_IPS="127.0.0.1")
    client = app.test_client()
    # By default: core's outbox table, where nothing waits yet.
    assert "rapport_outbox_lag_seconds 0.0" in client.get("/metrics").get_data(as_text=True)
    seen: list[bool] = []

    def lag() -> float:
        seen.append(db.session.execute(text("SELECT 1")).scalar_one() == 1)
        return 12.5

    metrics.set_outbox_lag_callback(lag)
    assert "rapport_outbox_lag_seconds 12.5" in client.get("/metrics").get_data(as_text=True)
    assert seen == [True]  # called at scrape time, with the database at hand

    def broken() -> float:
        raise RuntimeError("no outbox table")

    metrics.set_outbox_lag_callback(broken)
    scraped = client.get("/metrics")
    assert scraped.status_code == 200
    assert "rapport_outbox_lag_seconds" not in scraped.get_data(as_text=True)


def test_operations_doc_lists_every_metric(make_app: AppFactory) -> None:
    documented = set(re.findall(r"^\| `(rapport_\w+)` \| (\w+) \|",
                                (ROOT / "docs" / "operations.md").read_text(), re.M))
    app = make_app(RAPPORT_METRICS_ALLOWED_IPS="127.0.0.1")
    exposed = app.test_client().get("/metrics").get_data(as_text=True)
    assert documented == set(re.findall(r"^# TYPE (rapport_\w+) (\w+)$", exposed, re.M))


# --- Logs and the request id ----------------------------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    yield stream
    for handler in list(root.handlers):
        if getattr(handler, "_rapport", False):
            root.removeHandler(handler)
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_log_lines_carry_the_request_id(make_app: AppFactory,
                                            log_stream: io.StringIO) -> None:
    assert configure_logging({"RAPPORT_LOG_FORMAT": "json"}, stream=log_stream) == "json"
    app = make_app(plugins=(Probe(),))
    gql = GraphQL(app, admin_token(app))

    given = gql.raw("{ probeRequestId }", headers={"X-Request-Id": "req-from-proxy.42"})
    assert given.headers["X-Request-Id"] == "req-from-proxy.42"
    assert given.get_json()["data"] == {"probeRequestId": "req-from-proxy.42"}

    made = gql.raw("{ probeRequestId }", headers={"X-Request-Id": "bad id; with spaces"})
    made_id = made.headers["X-Request-Id"]
    assert made_id != "bad id; with spaces" and len(made_id) == 32
    assert made.get_json()["data"] == {"probeRequestId": made_id}

    crashed = gql.raw("{ probeCrash }")
    crash_id = crashed.headers["X-Request-Id"]
    assert crashed.get_json()["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"

    lines = _lines(log_stream)
    resolving = [line for line in lines if line["message"] == "resolving requestId"]
    assert [line["requestId"] for line in resolving] == ["req-from-proxy.42", made_id]
    failure = next(line for line in lines if line["logger"] == "rapport.graphql")
    assert failure["level"] == "ERROR" and failure["requestId"] == crash_id
    assert "RuntimeError: boom" in failure["exc_info"]
    assert {"time", "level", "logger", "message", "requestId"} <= set(resolving[0])
    logging.getLogger("rapport.probe").warning("outside any request")
    assert _lines(log_stream)[-1]["requestId"] is None


def test_browser_apps_may_read_the_request_id(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_CORS_ORIGINS="https://app.example.com")
    answer = GraphQL(app, admin_token(app)).raw(
        "{ plugins { name } }", headers={"Origin": "https://app.example.com"})
    assert "X-Request-Id" in answer.headers["Access-Control-Expose-Headers"].split(", ")
    assert "X-Request-Id" in answer.headers["Access-Control-Allow-Headers"]
    assert len(answer.headers["X-Request-Id"]) == 32


def test_text_logs_and_the_format_setting(make_app: AppFactory,
                                          log_stream: io.StringIO) -> None:
    assert configure_logging({"RAPPORT_ENV": "development"}, stream=log_stream) == "text"
    assert configure_logging({"RAPPORT_ENV": "production"}, stream=log_stream) == "json"
    configure_logging({"RAPPORT_LOG_FORMAT": "text"}, stream=log_stream)
    with context.use(request_id="job-7"):
        logging.getLogger("rapport.jobs").warning("a job says")
    assert log_stream.getvalue().rstrip().endswith("WARNING rapport.jobs [job-7] a job says")
    with pytest.raises(ConfigError, match="RAPPORT_LOG_FORMAT"):
        configure_logging({"RAPPORT_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="RAPPORT_LOG_FORMAT"):
        make_app(RAPPORT_LOG_FORMAT="yaml")


# --- gunicorn -------------------------------------------------------------------------------


def _gunicorn_settings(tmp_path: Path, *environments: dict[str, str]
                       ) -> list[dict[str, Any]]:
    """Load the config the way gunicorn does (its own parser) once per environment, in a
    separate process: the file switches prometheus_client to multiprocess mode and pauses
    the collector, which this process must not undergo."""
    code = (
        "import json, os, sys\n"
        "from gunicorn.app.wsgiapp import WSGIApplication\n"
        "sys.argv = ['gunicorn', '--config', 'python:core.gunicorn_conf']\n"
        "base = dict(os.environ)\n"
        "for env in json.loads(sys.stdin.read()):\n"
        "    os.environ.clear(); os.environ.update(base); os.environ.update(env)\n"
        "    sys.modules.pop('core.gunicorn_conf', None)\n"
        "    cfg = WSGIApplication('%(prog)s').cfg\n"
        "    print(json.dumps({'workers': cfg.workers, 'threads': cfg.threads,\n"
        "        'worker_class': cfg.worker_class_str, 'bind': cfg.bind,\n"
        "        'preload_app': cfg.preload_app, 'timeout': cfg.timeout,\n"
        "        'wsgi_app': cfg.wsgi_app, 'logger_class': cfg.logger_class.__name__,\n"
        "        'metrics_dir': os.environ['PROMETHEUS_MULTIPROC_DIR']}))\n")
    base = {k: v for k, v in os.environ.items()
            if k not in ("RAPPORT_WORKERS", "WEB_CONCURRENCY", "RAPPORT_BIND", "PORT",
                         "RAPPORT_THREADS", "PROMETHEUS_MULTIPROC_DIR")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                          env={**base, "TMPDIR": str(tmp_path)},
                          input=json.dumps(environments), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.strip().splitlines()[-len(environments):]]


def test_gunicorn_config_loads(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_123.db").write_bytes(b"left by an earlier run")
    settings, platform, default = _gunicorn_settings(
        tmp_path, {"RAPPORT_WORKERS": "3", "RAPPORT_THREADS": "4",
         "RAPPORT_BIND": "127.0.0.1:9001,[::1]:9001",
         "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        {"WEB_CONCURRENCY": "5", "PORT": "8123"},
        {})
    assert settings == {
        "workers": 3, "threads": 4, "worker_class": "gthread",
        "bind": ["127.0.0.1:9001", "[::1]:9001"], "preload_app": True, "timeout": 30,
        "wsgi_app": "core.wsgi:app", "logger_class": "RapportLogger",
        "metrics_dir": str(metrics_dir)}
    assert list(metrics_dir.iterdir()) == []  # stale samples are not counted again

    assert (platform["workers"], platform["bind"]) == (5, ["0.0.0.0:8123"])
    assert platform["worker_class"] == "sync"
    cores = len(os.sched_getaffinity(0))
    assert default["workers"] == min(2 * cores + 1, 8)
    assert default["bind"] == ["127.0.0.1:8000"]
    assert Path(default["metrics_dir"]).parent == tmp_path
    assert Path(default["metrics_dir"]).name.startswith("rapport-metrics-")


def test_serve_production_help_and_usage(app: Flask) -> None:
    runner = app.test_cli_runner()
    shown = runner.invoke(cli, ["serve", "--production", "--help"])
    assert shown.exit_code == 0, shown.output
    assert "--production" in shown.output and "--workers" in shown.output
    misused = runner.invoke(cli, ["serve", "--workers", "2"])
    assert misused.exit_code == 2 and "--workers needs --production" in misused.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, body: dict[str, Any] | None = None, token: str | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_serve_production_runs_gunicorn_with_two_workers(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'served.db'}"
    settings = {"RAPPORT_ENV": "test", "RAPPORT_DATABASE_URL": database,
                "RAPPORT_PLUGINS": "", "RAPPORT_INSTANCE_PATH": str(tmp_path / "instance")}
    made = create_app(settings)
    upgrade(made)  # the Procfile's release step
    token = admin_token(made, ("admin",))
    with made.app_context():
        db.engine.dispose()
    port = _free_port()
    env = {**{k: v for k, v in os.environ.items()
              if not k.startswith("RAPPORT_") and k not in ("WEB_CONCURRENCY", "PORT")},
           **settings, "RAPPORT_LOG_FORMAT": "json",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    server = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "serve", "--production", "--port", str(port),
         "--workers", "2"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, headers, body = _get(f"{base}/healthz")
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "gunicorn did not start in 30 s"
                time.sleep(0.1)
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        assert len(headers["X-Request-Id"]) == 32
        status, _, body = _get(f"{base}/readyz")
        assert status == 200 and json.loads(body)["checks"]["database"]["status"] == "ok"
        for _ in range(6):
            status, headers, body = _get(f"{base}/graphql", {
                "query": "query Served { customers(first: 1) { totalCount } }"}, token)
            assert status == 200 and json.loads(body) == {
                "data": {"customers": {"totalCount": 0}}}, body
        status, _, body = _get(f"{base}/metrics", token=token)
        assert status == 200
        # Six requests spread over two processes, added up by the multiprocess collector.
        assert 'rapport_graphql_request_duration_seconds_count{operation="Served",' \
               'type="query"} 6.0' in body.decode()
    finally:
        server.send_signal(signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr
    # gunicorn writes its access lines to stdout, everything else to stderr.
    lines = [json.loads(line) for line in (stdout + stderr).splitlines()
             if line.startswith("{")]
    assert sum("Booting worker" in line["message"] for line in lines) == 2, stderr
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    assert [line["path"] for line in access].count("/graphql") == 6
    assert all(len(line["requestId"]) == 32 and line["status"] == 200 for line in access)
