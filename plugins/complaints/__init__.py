"""Complaints: a six-stage workflow with SLA targets and escalation, statistics, and a
crisis early warning on complaint counts.

This module holds the hook implementations only. The work is done beside it: ``workflow``
(the state machine), ``sla`` (due times, breach), ``service`` (the operations the API and
the CLI call), ``stats``, ``detection``, ``features`` (for churn), ``schema`` (GraphQL),
``cli`` and ``demo``. See docs/complaints.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from core import hookimpl
from core.lazy_cli import lazy_command

if TYPE_CHECKING:
    import datetime as dt
    import random
    from collections.abc import Sequence

    import click
    import pluggy
    from flask import Flask

    from core.models import Customer

# Kept light: `rapport --help` imports this module for its command. The modules that do
# the work are imported inside the hooks (once the app is built they are loaded anyway).

__version__ = "0.1.0"


@hookimpl
def rapport_add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    from plugins.complaints import hookspecs

    plugin_manager.add_hookspecs(hookspecs)


@hookimpl
def rapport_init_app(app: Flask) -> None:
    from plugins.complaints.config import EXTENSION, read_settings

    app.extensions[EXTENSION] = read_settings(app)


@hookimpl
def rapport_register_scopes() -> list[tuple[str, str]]:
    return [("complaints:read", "Read complaints, their timelines, SLA state and statistics"),
            ("complaints:write", "File complaints, move them through the workflow, assign them")]


@hookimpl
def rapport_interaction_kinds() -> list[tuple[str, str]]:
    return [("complaint", "A complaint filed by the customer (see the complaints plugin)")]


@hookimpl
def rapport_migration_dirs() -> list[str]:
    return [os.path.join(os.path.dirname(__file__), "migrations")]


@hookimpl(optionalhook=True)
def rapport_complaint_types() -> list[tuple[str, str]]:
    from plugins.complaints.config import DEFAULT_TYPES

    return DEFAULT_TYPES


@hookimpl(optionalhook=True)
def rapport_complaint_channels() -> list[tuple[str, str]]:
    from plugins.complaints.config import DEFAULT_CHANNELS

    return DEFAULT_CHANNELS


@hookimpl
def rapport_customers_merged(survivor: Customer, merged_ids: list[int]) -> None:
    from plugins.complaints import service

    service.merge_complaints(survivor.id, merged_ids)


@hookimpl
def rapport_customer_erased(customer: Customer) -> dict[str, Any] | None:
    from plugins.complaints import service

    return service.erase_personal_data(customer.id)


@hookimpl
def rapport_customer_export(customer: Customer) -> dict[str, Any] | None:
    from plugins.complaints import service

    return service.export_section(customer.id)


@hookimpl
def rapport_graphql_customer_fields() -> dict[str, Any]:
    from plugins.complaints import schema

    return schema.customer_fields()


@hookimpl
def rapport_graphql_query_fields() -> dict[str, Any]:
    from plugins.complaints import schema

    return schema.query_fields()


@hookimpl
def rapport_graphql_mutations() -> dict[str, Any]:
    from plugins.complaints import schema

    return schema.MUTATIONS


@hookimpl
def rapport_graphql_types() -> list[Any]:
    from plugins.complaints import schema

    return schema.NODE_TYPES


@hookimpl
def rapport_cli_commands() -> list[click.Command]:
    return [lazy_command("complaints", "plugins.complaints.cli:complaints_group",
                         "Complaints: SLA escalation, spike detection, statistics, SLA "
                         "targets.")]


@hookimpl(optionalhook=True)
def rapport_churn_features(customers: Any, as_of: dt.datetime) -> Any:
    """Complaints in the last 90 / 365 days, open complaints, last post-resolution
    satisfaction, breached SLAs (the churn plugin's hook, used when it is installed)."""
    from plugins.complaints import features

    return features.churn_features(customers, as_of)


@hookimpl
def rapport_demo_data(rng: random.Random, customers: Sequence[Customer], as_of: dt.datetime
                      ) -> None:
    from plugins.complaints import demo

    demo.seed_demo(rng, customers, as_of)


@hookimpl
def rapport_job_kinds() -> list[Any]:
    from plugins.complaints.jobs import COMPLAINT_JOB_KINDS

    return COMPLAINT_JOB_KINDS


@hookimpl
def rapport_event_types() -> list[tuple[str, str, dict[str, Any]]]:
    from plugins.complaints.events import EVENT_TYPES

    return EVENT_TYPES
