"""What operators and load balancers talk to: /healthz, /readyz, /metrics, plus the
request hooks every route gets (request id, X-Request-Id, HTTP metrics).

- ``/healthz`` (liveness): the process answers; touches nothing else. No auth.
- ``/readyz`` (readiness): the database answers, its migrations are at the head of core's
  branch and of every enabled plugin's branch, and the broker answers when
  ``RAPPORT_BROKER_URL`` is set; 503 with the failing checks otherwise. No auth: it says
  nothing an attacker could use beyond "not ready", and load balancers send no key.
- ``/metrics`` (Prometheus): a key with ``metrics:read`` (or admin), or a caller whose
  address is in ``RAPPORT_METRICS_ALLOWED_IPS`` (addresses or networks), or in development
  the local machine.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from core import context, metrics
from core.app import rapport
from core.config import ConfigError, Settings
from core.http import error_response
from core.logs import log_settings

log = logging.getLogger("rapport.operations")
blueprint = Blueprint("operations", __name__)

#: Each readiness check gives up after this many seconds (connect and query alike), so a
#: probe answers well within a load balancer's usual 5 s timeout.
CHECK_TIMEOUT = 2.0
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- Request hooks --------------------------------------------------------------------------


def _begin_request() -> None:
    g.rapport_started = time.perf_counter()
    rid = context.sane_request_id(request.headers.get("X-Request-Id")) or \
        context.new_request_id()
    g.rapport_request_id = rid
    # The whole request runs in a context carrying this id: the GraphQL view's own block
    # inherits it, so audit rows, events, jobs and log lines name the same request.
    scope = context.use(request_id=rid)
    scope.__enter__()
    g.rapport_context_scope = scope


def _end_request(response: Response) -> Response:
    rid = g.get("rapport_request_id")
    if rid:
        response.headers["X-Request-Id"] = rid
    started = g.get("rapport_started")
    if started is not None:
        rule = request.url_rule.rule if request.url_rule is not None else None
        metrics.observe_request(request.method, rule, response.status_code,
                                time.perf_counter() - started)
    return response


def _teardown_request(exc: BaseException | None) -> None:
    scope: AbstractContextManager[Any] | None = g.pop("rapport_context_scope", None)
    if scope is not None:
        scope.__exit__(None, None, None)


# --- /healthz and /readyz -------------------------------------------------------------------


@blueprint.route("/healthz", methods=["GET", "HEAD"])
def healthz() -> Any:
    return jsonify(status="ok")


def _probe_engine(app: Flask) -> Engine:
    """A pool-less engine with short timeouts on the app's database: a probe must not wait
    behind busy requests for a pooled connection, nor for a server that does not answer."""
    engine: Engine | None = app.extensions.get("rapport_probe_engine")
    if engine is None:
        url = app.config["SQLALCHEMY_DATABASE_URI"]
        timeout_ms = int(CHECK_TIMEOUT * 1000)
        if url.startswith("sqlite"):
            connect_args: dict[str, Any] = {"timeout": CHECK_TIMEOUT}
        else:
            connect_args = {"connect_timeout": max(1, int(CHECK_TIMEOUT)),
                            "options": f"-c statement_timeout={timeout_ms}"}
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
        app.extensions["rapport_probe_engine"] = engine
    return engine


def _expected_heads(app: Flask) -> dict[str, str]:
    """The head revision of every enabled branch -> its branch label (computed once:
    reading the migration scripts imports every one of them)."""
    heads: dict[str, str] | None = app.extensions.get("rapport_migration_heads")
    if heads is None:
        from alembic.script import ScriptDirectory

        from core.migrate import alembic_config

        script = ScriptDirectory.from_config(alembic_config(app, None))
        heads = {}
        for head in script.get_heads():
            labels = script.get_revision(head).branch_labels
            heads[head] = ", ".join(sorted(labels)) or head
        app.extensions["rapport_migration_heads"] = heads
    return heads


def check_database(app: Flask) -> dict[str, Any]:
    from alembic.runtime.migration import MigrationContext

    with _probe_engine(app).connect() as connection:
        connection.execute(text("SELECT 1"))
        current = set(MigrationContext.configure(connection).get_current_heads())
    pending = {head: branch for head, branch in _expected_heads(app).items()
               if head not in current}
    if pending:
        raise NotReady("migrations are not at head for " + "; ".join(
            f"{branch} (needs {head})" for head, branch in sorted(pending.items()))
            + ": run 'rapport db upgrade'")
    return {"status": "ok"}


def broker_url(app: Flask) -> str | None:
    settings = rapport(app).settings
    url = getattr(settings, "broker_url", None) or settings.extra.get("RAPPORT_BROKER_URL")
    return str(url) if url else None


def check_broker(url: str) -> dict[str, Any]:
    """Open a connection to the broker through kombu (Celery's transport layer, which the
    app uses to send jobs whenever a broker is configured), within CHECK_TIMEOUT."""
    from kombu import Connection

    with Connection(url, connect_timeout=CHECK_TIMEOUT,
                    transport_options={"socket_timeout": CHECK_TIMEOUT,
                                       "socket_connect_timeout": CHECK_TIMEOUT,
                                       "max_retries": 0}) as connection:
        connection.ensure_connection(max_retries=0, timeout=CHECK_TIMEOUT)
        # Redis connects lazily: talk to it, so a dead server cannot pass.
        client = getattr(connection.default_channel, "client", None)
        if client is not None and hasattr(client, "ping"):
            client.ping()
    return {"status": "ok"}


class NotReady(Exception):
    """A readiness check failed; the message says why (no secrets in it)."""


def _run(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = check()
    except NotReady as exc:
        result = {"status": "failing", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; say which kind
        log.warning("readiness check failed: %s", exc)
        result = {"status": "failing", "error": f"{type(exc).__name__}: unreachable or "
                                                  f"failing (details in the server log)"}
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


@blueprint.route("/readyz", methods=["GET", "HEAD"])
def readyz() -> Any:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    checks = {"database": _run(lambda: check_database(app))}
    url = broker_url(app)
    if url:
        checks["broker"] = _run(lambda: check_broker(url))
    ready = all(c["status"] == "ok" for c in checks.values())
    return jsonify(status="ok" if ready else "failing", checks=checks), 200 if ready else 503


# --- /metrics -------------------------------------------------------------------------------


def allowed_networks(app: Flask) -> tuple[Network, ...]:
    networks: tuple[Network, ...] = app.extensions["rapport_metrics_networks"]
    return networks


def _parse_networks(raw: Any) -> tuple[Network, ...]:
    networks = []
    for item in str(raw or "").split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as exc:
                raise ConfigError(f"RAPPORT_METRICS_ALLOWED_IPS: {item.strip()!r} is not an "
                                  f"IP address or network (e.g. 10.0.0.0/8)") from exc
    return tuple(networks)


def _metrics_forbidden() -> tuple[Response, int] | None:
    from core.auth import AuthError, authenticate

    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        address = None
    networks = allowed_networks(current_app)
    if address is not None and any(address in network for network in networks):
        return None
    try:
        principal = authenticate(request.headers.get("Authorization"), request.remote_addr)
    except AuthError as exc:
        return error_response(401, exc.code, exc.message)
    if not principal.allows("metrics:read"):
        return error_response(403, "FORBIDDEN", "This key lacks the metrics:read scope.")
    return None


@blueprint.route("/metrics", methods=["GET"])
def metrics_endpoint() -> Any:
    refused = _metrics_forbidden()
    if refused is not None:
        return refused
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


def init_app(app: Flask, settings: Settings) -> None:
    """Install the request hooks and routes; validate this module's settings.

    Called before any plugin adds its own hooks, so every request (even one a later hook
    refuses, e.g. rate-limited) gets its id and is counted.
    """
    log_settings({"RAPPORT_ENV": settings.env, **settings.extra})
    app.extensions["rapport_metrics_networks"] = _parse_networks(
        settings.extra.get("RAPPORT_METRICS_ALLOWED_IPS"))
    app.before_request(_begin_request)
    app.after_request(_end_request)
    app.teardown_request(_teardown_request)
    app.register_blueprint(blueprint)
