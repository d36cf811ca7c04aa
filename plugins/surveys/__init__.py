"""Surveys: questionnaires (NPS, rating, choice and text questions), responses collected
through GraphQL or imported from CSV, and the response matrix the analyses run on.

This module holds the hook implementations only. The work is done beside it: ``service``
(define, open, close, submit; merge, erase, export), ``answers`` (each answer against its
question), ``data`` (the response matrix), ``importer`` and ``cli`` (CSV import),
``features`` (for churn), ``schema`` (GraphQL) and ``demo``; the analyses: ``stats``
(numbers), ``analysis`` (load + analyse + save clusters), ``analysis_schema`` (GraphQL),
``report`` (HTML) served by ``routes`` and ``cli``; the loyalty matrix: ``loyalty``
(attitude x behaviour, and the customer filter field) and ``loyalty_schema`` (GraphQL).
See docs/surveys.md.
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
    from flask import Blueprint

    from core.models import Customer

# Kept light: `rapport --help` imports this module for its command. The modules that do
# the work are imported inside the hooks (once the app is built they are loaded anyway).

__version__ = "0.1.0"


@hookimpl
def rapport_add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    from plugins.surveys import hookspecs

    plugin_manager.add_hookspecs(hookspecs)


@hookimpl
def rapport_register_scopes() -> list[tuple[str, str]]:
    return [("surveys:read", "Read surveys, their responses and analyses"),
            ("surveys:write", "Create, edit, open and close surveys; see collection tokens; "
                              "import responses"),
            ("surveys:respond", "Submit survey responses (nothing else: for collection "
                                "front ends)")]


@hookimpl
def rapport_migration_dirs() -> list[str]:
    return [os.path.join(os.path.dirname(__file__), "migrations")]


@hookimpl
def rapport_customers_merged(survivor: Customer, merged_ids: list[int]) -> None:
    from plugins.surveys import service

    service.merge_responses(survivor.id, merged_ids)


@hookimpl
def rapport_customer_erased(customer: Customer) -> dict[str, Any] | None:
    from plugins.surveys import service

    return service.erase_personal_data(customer.id)


@hookimpl
def rapport_customer_export(customer: Customer) -> dict[str, Any] | None:
    from plugins.surveys import service

    return service.export_section(customer.id)


@hookimpl
def rapport_graphql_customer_fields() -> dict[str, Any]:
    from plugins.surveys import schema

    return schema.customer_fields()


@hookimpl
def rapport_graphql_query_fields() -> dict[str, Any]:
    from plugins.surveys import schema

    return schema.query_fields()


@hookimpl
def rapport_customer_filters() -> list[Any]:
    """``loyaltyQuadrant``: the customers in one quadrant of the loyalty matrix."""
    from plugins.surveys.loyalty_schema import FILTER_FIELDS

    return FILTER_FIELDS


@hookimpl
def rapport_graphql_mutations() -> dict[str, Any]:
    from plugins.surveys import schema

    return schema.MUTATIONS


@hookimpl
def rapport_graphql_types() -> list[Any]:
    from plugins.surveys import schema

    return schema.NODE_TYPES


@hookimpl(optionalhook=True)
def rapport_churn_features(customers: Any, as_of: dt.datetime) -> Any:
    """Latest NPS, latest overall satisfaction (0-1), days since the last response (the
    churn plugin's hook, used when it is installed)."""
    from plugins.surveys import features

    return features.churn_features(customers, as_of)


@hookimpl
def rapport_demo_data(rng: random.Random, customers: Sequence[Customer], as_of: dt.datetime
                      ) -> None:
    from plugins.surveys import demo

    demo.seed_demo(rng, customers, as_of)


@hookimpl
def rapport_cli_commands() -> list[click.Command]:
    return [lazy_command("surveys", "plugins.surveys.cli:surveys_group",
                         "Surveys: import responses, write the analysis report.")]


@hookimpl
def rapport_register_routes() -> list[Blueprint]:
    """``GET /reports/surveys/<id>.html``: the HTML report (surveys:read)."""
    from plugins.surveys import routes

    return [routes.blueprint]


@hookimpl
def rapport_event_types() -> list[tuple[str, str, dict[str, Any]]]:
    from plugins.surveys.events import EVENT_TYPES

    return EVENT_TYPES
