"""gunicorn settings for Rapport: ``gunicorn -c python:core.gunicorn_conf`` (what
``rapport serve --production`` runs). Every value comes from the environment; gunicorn's
own command-line options still win over this file. docs/operations.md explains each.

| variable | meaning | default |
|---|---|---|
| ``RAPPORT_BIND`` | address(es) to listen on, comma-separated | ``0.0.0.0:$PORT`` if ``PORT`` is set, else ``127.0.0.1:8000`` |
| ``RAPPORT_WORKERS`` / ``WEB_CONCURRENCY`` | worker processes | 2 x cores + 1, at most 8 |
| ``RAPPORT_THREADS`` | threads per worker (``gthread`` worker when > 1) | 1 |
| ``RAPPORT_WORKER_TIMEOUT`` | seconds before a silent worker is killed and replaced | 30 |
| ``RAPPORT_MAX_REQUESTS`` | recycle a worker after this many requests (0: never) | 0 |
| ``PROMETHEUS_MULTIPROC_DIR`` | where workers write their metrics (wiped at start) | a new temporary folder |
"""

from __future__ import annotations

import gc
import glob
import os
import shutil
import tempfile
from typing import Any

# Workers write their samples to files that /metrics adds up. prometheus_client decides
# the storage when first imported, so this runs before anything imports it (the app is
# loaded after this file). Files left by an earlier run would be counted again: wipe them.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    for _stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(_stale)
    _OWN_METRICS_DIR = None
else:
    _OWN_METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="rapport-metrics-")

from gunicorn import glogging  # noqa: E402 - after the metrics folder is chosen

from core.logs import RequestIdFilter, formatter, log_settings  # noqa: E402

MAX_DEFAULT_WORKERS = 8


def _positive(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} must be an integer") from None
    if value < minimum:
        raise SystemExit(f"{name}={raw!r} must be at least {minimum}")
    return value


def default_workers() -> int:
    """2 x cores + 1 (a sync worker waits on the database about half the time), capped:
    each worker holds its own connection pool and a copy of what it allocates."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(2 * cores + 1, MAX_DEFAULT_WORKERS)


def default_bind() -> list[str]:
    if os.environ.get("RAPPORT_BIND", "").strip():
        return [b.strip() for b in os.environ["RAPPORT_BIND"].split(",") if b.strip()]
    if os.environ.get("PORT", "").strip():  # platforms (Heroku, Render, ...) set PORT
        return [f"0.0.0.0:{_positive('PORT', 8000)}"]
    return ["127.0.0.1:8000"]


LOG_FORMAT, LOG_LEVEL = log_settings()

wsgi_app = "core.wsgi:app"
bind = default_bind()
workers = _positive("RAPPORT_WORKERS", _positive("WEB_CONCURRENCY", default_workers()))
threads = _positive("RAPPORT_THREADS", 1)
worker_class = "gthread" if threads > 1 else "sync"
timeout = _positive("RAPPORT_WORKER_TIMEOUT", 30)
graceful_timeout = timeout
keepalive = 5
max_requests = _positive("RAPPORT_MAX_REQUESTS", 0, minimum=0)
max_requests_jitter = max_requests // 10
# Load the app once in the master; workers are forked from it and share its memory pages.
preload_app = True
accesslog = "-"
errorlog = "-"
loglevel = LOG_LEVEL.lower()
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms [%({x-request-id}o)s]'
# gunicorn's control socket lives at one path per user: two servers on a machine (the API
# and a benchmark baseline, two test runs) would take it from each other. Signals do the
# same work (HUP reload, TTIN/TTOU workers).
control_socket_disable = True


class RapportLogger(glogging.Logger):
    """gunicorn's logger with Rapport's format: JSON lines (access lines as fields, with
    the request id the app put in X-Request-Id) or text."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):
                    handler.setFormatter(formatter(LOG_FORMAT))
                    handler.addFilter(RequestIdFilter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if LOG_FORMAT != "json":
            super().access(resp, req, environ, request_time)
            return
        if not self.access_log_enabled:
            return
        headers = resp.headers.items() if hasattr(resp.headers, "items") else resp.headers
        request_id = next((v for k, v in headers if k.lower() == "x-request-id"), None)
        status = str(resp.status).split(None, 1)[0]
        self.access_log.info("request", extra={
            "request_id": request_id,
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": int(status) if status.isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "durationMs": round(request_time.total_seconds() * 1000, 1),
            "remoteAddr": environ.get("REMOTE_ADDR"),
            "userAgent": environ.get("HTTP_USER_AGENT"),
        })


logger_class = RapportLogger

# Memory shared with the workers (copy-on-write) stays shared only if nothing writes to
# it: the collector's bookkeeping would, on every object it scans. So: no collection while
# the app loads (it would leave freed holes in pages), everything loaded moved to the
# permanent generation before the first fork, and again before each later fork (a worker
# replaced after a crash or max_requests).
gc.disable()


def when_ready(server: Any) -> None:
    gc.freeze()
    gc.enable()


def pre_fork(server: Any, worker: Any) -> None:
    gc.freeze()


def child_exit(server: Any, worker: Any) -> None:
    # Its live gauges must not be reported any more (counters and histograms are kept).
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)
