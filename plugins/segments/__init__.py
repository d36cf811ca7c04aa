"""Segments: saved customer filters with a name, and value tiers from RFM scores.

This module holds the hook implementations only: ``filters`` (the ``segment`` and
``valueTier`` fields it adds to the core customer filter), ``service`` (saved segments),
``tiers`` (the ``segments.tiers`` job), ``schema`` (GraphQL), ``cli``, ``events``.
See docs/segments.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core import hookimpl
from core.lazy_cli import lazy_command

if TYPE_CHECKING:
    import datetime as dt
    import random

    import click

    from core.models import Customer

# Kept light: `rapport --help` imports this module for its command.

__version__ = "0.1.0"


@hookimpl
def rapport_register_scopes() -> list[tuple[str, str]]:
    return [("segments:read", ("Read saved segments and value tiers; filter customers by "
                               "them")),
            ("segments:write", ("Create, change and delete saved segments; recompute value "
                                "tiers"))]


@hookimpl
def rapport_migration_dirs() -> list[str]:
    return [os.path.join(os.path.dirname(__file__), "migrations")]


@hookimpl
def rapport_customer_filters() -> list[Any]:
    from plugins.segments.filters import FILTER_FIELDS

    return FILTER_FIELDS


@hookimpl
def rapport_event_types() -> list[tuple[str, str, dict[str, Any]]]:
    from plugins.segments.events import EVENT_TYPES

    return EVENT_TYPES


@hookimpl
def rapport_job_kinds() -> list[Any]:
    from plugins.segments.tiers import JOB_KINDS

    return JOB_KINDS


@hookimpl
def rapport_cli_commands() -> list[click.Command]:
    return [lazy_command("segments", "plugins.segments.cli:segments_group",
                         "Saved segments and value tiers.")]


@hookimpl
def rapport_customer_export(customer: Customer) -> dict[str, Any] | None:
    from plugins.segments import tiers

    return tiers.export_section(customer.id)


@hookimpl
def rapport_customer_erased(customer: Customer) -> dict[str, Any] | None:
    from plugins.segments import tiers

    return tiers.erase(customer.id)


@hookimpl
def rapport_demo_data(rng: random.Random, customers: Sequence[Customer], as_of: dt.datetime
                      ) -> None:
    from plugins.segments import demo

    demo.seed_demo(customers, as_of)


@hookimpl
def rapport_graphql_customer_fields() -> dict[str, Any]:
    from plugins.segments import schema

    return schema.customer_fields()


@hookimpl
def rapport_graphql_query_fields() -> dict[str, Any]:
    from plugins.segments import schema

    return schema.query_fields()


@hookimpl
def rapport_graphql_mutations() -> dict[str, Any]:
    from plugins.segments import schema

    return schema.MUTATIONS


@hookimpl
def rapport_graphql_types() -> list[Any]:
    from plugins.segments import schema

    return schema.NODE_TYPES
