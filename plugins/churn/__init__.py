"""Churn: churn records and reactivation, win-back campaigns, the monthly churn report
with a churn-rate jump alert, and the features and BTYD summaries the churn models learn
from (computed in SQL, with every installed plugin's ``rapport_churn_features``).

This module holds the hook implementations only. The work is done beside it: ``service``
(the operations the API, the importer and the CLI call), ``features``, ``report``,
``importer``, ``modeling`` (fitting and scoring), ``schema`` (GraphQL), ``cli`` and
``demo``. See docs/churn.md.
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

    from core.models import Customer, Interaction

# Kept light: `rapport --help` imports this module for its command. The modules that do
# the work are imported inside the hooks (once the app is built they are loaded anyway).

__version__ = "0.1.0"


@hookimpl
def rapport_add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    from plugins.churn import hookspecs

    plugin_manager.add_hookspecs(hookspecs)


@hookimpl
def rapport_init_app(app: Flask) -> None:
    from plugins.churn import modeling

    app.extensions[modeling.EXTENSION] = modeling.read_settings(app)


@hookimpl
def rapport_register_scopes() -> list[tuple[str, str]]:
    return [("churn:read", "Read churn records, scores, the churn report and win-back data"),
            ("churn:write", "Mark customers churned or reactivated, run win-back campaigns")]


@hookimpl
def rapport_migration_dirs() -> list[str]:
    return [os.path.join(os.path.dirname(__file__), "migrations")]


@hookimpl
def rapport_interaction_recorded(interaction: Interaction) -> None:
    """A purchase after the churn date brings a churned customer back."""
    from plugins.churn import service

    if interaction.kind == service.PURCHASE:
        service.reactivate_on_purchases([interaction.id])


@hookimpl
def rapport_interactions_recorded(interaction_ids: list[int]) -> None:
    from plugins.churn import service

    service.reactivate_on_purchases(interaction_ids)


@hookimpl
def rapport_customer_updated(customer: Customer, changes: dict[str, tuple[Any, Any]]) -> None:
    """A start date (customerSince) after the customer's churn date is refused."""
    if "customer_since" in changes:
        from plugins.churn import service

        service.check_customer_since(customer.id, changes["customer_since"][1])


@hookimpl
def rapport_customers_merged(survivor: Customer, merged_ids: list[int]) -> None:
    from plugins.churn import service

    service.merge_churn_data(survivor.id, merged_ids)


@hookimpl
def rapport_customer_erased(customer: Customer) -> dict[str, Any] | None:
    from plugins.churn import service

    return service.erase_personal_data(customer.id)


@hookimpl
def rapport_customer_export(customer: Customer) -> dict[str, Any] | None:
    from plugins.churn import service

    return service.export_section(customer.id)


@hookimpl
def rapport_graphql_customer_fields() -> dict[str, Any]:
    from plugins.churn import schema

    return schema.customer_fields()


@hookimpl
def rapport_graphql_query_fields() -> dict[str, Any]:
    from plugins.churn import schema

    return schema.query_fields()


@hookimpl
def rapport_graphql_mutations() -> dict[str, Any]:
    from plugins.churn import schema

    return schema.MUTATIONS


@hookimpl
def rapport_graphql_types() -> list[Any]:
    from plugins.churn import schema

    return schema.NODE_TYPES


@hookimpl
def rapport_cli_commands() -> list[click.Command]:
    return [lazy_command("churn", "plugins.churn.cli:churn_group",
                         "Churn: import churn records, check the churn rate, the monthly "
                         "report.")]


@hookimpl
def rapport_demo_data(rng: random.Random, customers: Sequence[Customer], as_of: dt.datetime
                      ) -> None:
    from plugins.churn import demo

    demo.seed_demo(rng, customers, as_of)


@hookimpl
def rapport_register_routes() -> list[Any]:
    """``GET /reports/churn.html``: the HTML report (churn:read)."""
    from plugins.churn import routes

    return [routes.blueprint]


@hookimpl
def rapport_job_kinds() -> list[Any]:
    from plugins.churn.jobs import CHURN_JOB_KINDS

    return CHURN_JOB_KINDS


@hookimpl
def rapport_event_types() -> list[tuple[str, str, dict[str, Any]]]:
    from plugins.churn.events import EVENT_TYPES

    return EVENT_TYPES


@hookimpl(optionalhook=True)
def rapport_care_at_risk_customers(min_risk: float) -> Any:
    """The care plugin's monthly at-risk run: customers of the current scores with risk at
    least ``min_risk``, not already marked churned."""
    from sqlalchemy import select

    from plugins.churn.modeling import current_version_id, still_customer
    from plugins.churn.models import ChurnScore

    return select(ChurnScore.customer_id.label("customer_id"),
                  ChurnScore.risk.label("risk")).where(
        ChurnScore.model_version_id == current_version_id(), ChurnScore.risk >= min_risk,
        still_customer())
