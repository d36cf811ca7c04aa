"""Prometheus metrics: what the API serves, plus a small API the job runner, the webhook
deliverer and the outbox relay call.

Under gunicorn every worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
(core/gunicorn_conf.py sets it before anything imports prometheus_client) and /metrics
adds them up; without it (``rapport serve``, the test suite, a worker process) the
samples live in this process. docs/operations.md lists every metric.

Label values that come from clients (GraphQL operation names) are bounded: past
``MAX_OPERATIONS`` distinct names a process reports the rest as ``other``, so a client
cannot grow the series without limit.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator

from flask import g, has_app_context, has_request_context
from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram,
    disable_created_metrics, generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("rapport.metrics")
# The *_created series double the output and no dashboard of ours reads them.
disable_created_metrics()

MAX_OPERATIONS = 200
UNKNOWN = "unknown"
OTHER = "other"
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,99}")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)

HTTP_REQUESTS = Counter("rapport_http_requests", "HTTP requests answered, by route and status.",
                        ("method", "route", "status"))
HTTP_DURATION = Histogram("rapport_http_request_duration_seconds",
                          "Time to answer an HTTP request, by route.", ("route",),
                          buckets=LATENCY_BUCKETS)
GRAPHQL_DURATION = Histogram(
    "rapport_graphql_request_duration_seconds",
    "GraphQL requests by operation name and type (query, mutation); _count is the number "
    "of requests.", ("operation", "type"), buckets=LATENCY_BUCKETS)
GRAPHQL_ERRORS = Counter("rapport_graphql_errors",
                         "Errors in GraphQL answers, by extensions.code.", ("code",))
JOBS = Counter("rapport_jobs", "Jobs finished, by kind and outcome.", ("kind", "outcome"))
JOB_DURATION = Histogram("rapport_job_duration_seconds", "Job run time, by kind.", ("kind",),
                         buckets=JOB_BUCKETS)
WEBHOOK_DELIVERIES = Counter("rapport_webhook_deliveries",
                             "Webhook delivery attempts, by outcome.", ("outcome",))
WEBHOOK_DURATION = Histogram("rapport_webhook_delivery_duration_seconds",
                             "Time of one webhook delivery attempt.", ("outcome",),
                             buckets=LATENCY_BUCKETS)

_operations: set[str] = set()
_operations_lock = threading.Lock()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


# --- Called by the job runner, the webhook deliverer, the outbox relay ----------------------


def job_finished(kind: str, outcome: str, seconds: float) -> None:
    """A job of ``kind`` ended: ``outcome`` is its final status in lower case
    (``succeeded``, ``failed``, ``cancelled``)."""
    JOBS.labels(kind, outcome.lower()).inc()
    JOB_DURATION.labels(kind).observe(max(seconds, 0.0))


def webhook_delivered(outcome: str, seconds: float) -> None:
    """One delivery attempt ended: ``outcome`` such as ``delivered``, ``failed`` (will be
    retried), ``dead_lettered``, ``disabled``."""
    WEBHOOK_DELIVERIES.labels(outcome.lower()).inc()
    WEBHOOK_DURATION.labels(outcome.lower()).observe(max(seconds, 0.0))


OutboxLag = Callable[[], "float | None"]
_outbox_lag: OutboxLag | None = None


def set_outbox_lag_callback(fn: OutboxLag | None) -> None:
    """Replace how the outbox lag is measured: ``fn()`` returns the age in seconds of the
    oldest undelivered event (0 when none is waiting) or None when it cannot tell. It is
    called at each scrape of /metrics, inside the app context, so it may query the
    database; it should be one indexed query. None restores the default: core's outbox
    table (``core.outbox.lag_seconds``)."""
    global _outbox_lag
    _outbox_lag = fn


def _core_outbox_lag() -> float | None:
    from sqlalchemy.exc import SQLAlchemyError

    from core.db import db
    from core.outbox import lag_seconds

    if not has_app_context():
        return None
    try:
        return lag_seconds()
    except SQLAlchemyError:  # a database not migrated yet: no outbox table, no gauge
        db.session.rollback()
        return None


class _OutboxLagCollector(Collector):
    """Computed when scraped, in the scraping process: a value no worker has to keep."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fn = _outbox_lag or _core_outbox_lag
        try:
            value = fn()
        except Exception:  # noqa: BLE001 - a broken gauge must not break the whole scrape
            log.exception("the outbox lag callback failed")
            return
        if value is None:
            return
        gauge = GaugeMetricFamily("rapport_outbox_lag_seconds",
                                  "Age of the oldest outbox event not yet relayed.")
        gauge.add_metric([], float(value))
        yield gauge


# --- Called by the GraphQL view and the request hooks ---------------------------------------


def graphql_request() -> None:
    """Mark this HTTP request as a GraphQL request (its operation is not known yet)."""
    if has_request_context():
        g.rapport_graphql_operation = (UNKNOWN, UNKNOWN)


def graphql_operation(name: str | None, operation_type: str | None) -> None:
    """Name the operation of this GraphQL request (None: an anonymous operation)."""
    if not has_request_context():
        return
    label = name if name is not None and _NAME.fullmatch(name) else "anonymous"
    if label not in _operations:
        with _operations_lock:
            if label not in _operations:
                if len(_operations) >= MAX_OPERATIONS:
                    label = OTHER
                else:
                    _operations.add(label)
    g.rapport_graphql_operation = (label, operation_type or UNKNOWN)


def graphql_errors(codes: Iterable[str]) -> None:
    for code in codes:
        GRAPHQL_ERRORS.labels(code if _NAME.fullmatch(code) else OTHER).inc()


def observe_request(method: str, route: str | None, status: int, seconds: float) -> None:
    """Count one answered HTTP request (called once per request by core.operations)."""
    route_label = route or "unmatched"
    HTTP_REQUESTS.labels(method if method in _HTTP_METHODS else OTHER, route_label,
                         str(status)).inc()
    HTTP_DURATION.labels(route_label).observe(seconds)
    operation = g.get("rapport_graphql_operation") if has_request_context() else None
    if operation is not None:
        GRAPHQL_DURATION.labels(*operation).observe(seconds)


# --- Exposition -----------------------------------------------------------------------------


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric of this server (all gunicorn workers)."""
    directory = multiprocess_dir()
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        registry.register(_OutboxLagCollector())
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY) + generate_latest(_LAG_REGISTRY), CONTENT_TYPE_LATEST


_LAG_REGISTRY = CollectorRegistry()
_LAG_REGISTRY.register(_OutboxLagCollector())

