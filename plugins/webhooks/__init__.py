"""Webhooks: subscriptions to Rapport's events, delivered as signed HTTP POSTs following the
Standard Webhooks specification, with retries, a dead letter and safe targets.

This module holds the hook implementations only: ``service`` (subscriptions), ``delivery``
(fan-out of relayed events, the ``webhooks.deliver`` job), ``targets`` (server-side request
forgery checks), ``schema`` (GraphQL). See docs/webhooks.md.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask

from core import hookimpl

from plugins.webhooks import delivery, schema
from plugins.webhooks.config import EXTENSION, read_settings

__version__ = "0.1.0"


@hookimpl
def rapport_init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = read_settings(app)
    # httpx logs every request at INFO: one line per delivery attempt. Attempts are
    # recorded (webhookDeliveries) and counted (metrics) instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@hookimpl
def rapport_register_scopes() -> list[tuple[str, str]]:
    return [("webhooks:read", "Read webhook subscriptions and their delivery attempts"),
            ("webhooks:write", "Create, change, delete, ping webhooks; rotate their secrets; "
                               "redeliver")]


@hookimpl
def rapport_migration_dirs() -> list[str]:
    return [os.path.join(os.path.dirname(__file__), "migrations")]


@hookimpl
def rapport_events_relayed(events: list[dict[str, Any]]) -> None:
    delivery.fan_out(events)


@hookimpl
def rapport_job_kinds() -> list[Any]:
    return delivery.JOB_KINDS


@hookimpl
def rapport_graphql_query_fields() -> dict[str, Any]:
    return schema.query_fields()


@hookimpl
def rapport_graphql_mutations() -> dict[str, Any]:
    return schema.MUTATIONS


@hookimpl
def rapport_graphql_types() -> list[Any]:
    return schema.NODE_TYPES
