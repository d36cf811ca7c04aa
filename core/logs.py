"""Logging for servers, workers and the CLI: JSON lines (production) or text, each line
with the request id of the request, job or command that wrote it.

``RAPPORT_LOG_FORMAT`` (``json`` | ``text``) chooses; unset, production logs JSON and
development/test log text. ``RAPPORT_LOG_LEVEL`` sets the level (default ``INFO``).
The request id comes from ``core.context`` (set by the request hooks, the CLI, jobs and
deliveries), else from the current Flask request.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from flask import g, has_request_context
from pythonjsonlogger.json import JsonFormatter

from core.config import ConfigError

FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
#: Fields of every JSON line, in this order; ``extra={...}`` of a call adds its own.
_JSON_FIELDS = ("asctime", "levelname", "name", "message", "request_id")
_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger",
            "request_id": "requestId"}


def request_id() -> str | None:
    """The id of the request, job or command running here, if any."""
    if has_request_context():
        rid = g.get("rapport_request_id")
        if rid:
            return str(rid)
    try:
        from core import context
    except ImportError:  # pragma: no cover - core.context ships with core
        return None
    # ``context.current()`` invents a fresh id outside any block; a log line wants none then.
    active = getattr(context, "_current", None)
    found = active.get() if active is not None else None
    return found.request_id if found is not None else None


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id()
        return True


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        return super().format(record)


def log_settings(source: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """(format, level) from RAPPORT_LOG_FORMAT / RAPPORT_LOG_LEVEL / RAPPORT_ENV."""
    env = source if source is not None else os.environ
    run_env = str(env.get("RAPPORT_ENV", "production")).strip().lower()
    chosen = str(env.get("RAPPORT_LOG_FORMAT", "") or "").strip().lower()
    if not chosen:
        chosen = "json" if run_env == "production" else "text"
    if chosen not in FORMATS:
        raise ConfigError(f"RAPPORT_LOG_FORMAT={chosen!r}: use json or text")
    level = str(env.get("RAPPORT_LOG_LEVEL", "INFO") or "INFO").strip().upper()
    if level not in LEVELS:
        raise ConfigError(f"RAPPORT_LOG_LEVEL={level!r}: use one of {', '.join(LEVELS)}")
    return chosen, level


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(list(_JSON_FIELDS), rename_fields=_RENAMED,
                             datefmt="%Y-%m-%dT%H:%M:%S%z")
    return _Text(_TEXT)


def make_handler(log_format: str, stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestIdFilter())
    handler._rapport = True  # type: ignore[attr-defined] - ours, replaced on reconfiguration
    return handler


def configure_logging(source: Mapping[str, Any] | None = None, stream: Any = None) -> str:
    """Send every logger's records (root handler) to ``stream`` (default stderr) in the
    chosen format; calling it again replaces what it installed. Returns the format."""
    log_format, level = log_settings(source)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_rapport", False):
            root.removeHandler(handler)
    root.addHandler(make_handler(log_format, stream))
    root.setLevel(level)
    return log_format
