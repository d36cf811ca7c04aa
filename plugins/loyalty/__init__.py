"""Loyalty: a points ledger with earn rules, tiers, expiry and a rewards catalog.

This module holds the hook implementations only. The work is done beside it: ``ledger``
(every balance change), ``earning`` and ``tiers`` (the hooks' set-based work),
``programme`` and ``service`` (the operations the API and the CLI call), ``report``,
``features`` (for churn), ``schema`` (GraphQL), ``cli`` and ``demo``. See docs/loyalty.md.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from collections.abc import Sequence
from typing import Any

import click
from flask import Flask

from core import hookimpl
from core.db import utcnow
from core.models import Customer, Interaction

from plugins.loyalty import demo, earning, features, schema, service
from plugins.loyalty.cli import loyalty_group
from plugins.loyalty.config import EXTENSION, loyalty_settings, read_settings

__version__ = "0.1.0"


@hookimpl
def rapport_init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = read_settings(app)


@hookimpl
def rapport_register_scopes() -> list[tuple[str, str]]:
    return [("loyalty:read", "Read loyalty accounts, the programme and reports"),
            ("loyalty:write", "Configure the programme; redeem and adjust points")]


@hookimpl
def rapport_migration_dirs() -> list[str]:
    return [os.path.join(os.path.dirname(__file__), "migrations")]


@hookimpl
def rapport_cli_commands() -> list[click.Command]:
    return [loyalty_group]


@hookimpl
def rapport_demo_data(rng: random.Random, customers: Sequence[Customer], as_of: dt.datetime
                      ) -> None:
    demo.seed_demo(rng, customers, as_of)


@hookimpl
def rapport_interaction_recorded(interaction: Interaction) -> None:
    refund = interaction.kind == "refund"
    earning.earn_and_reverse([interaction.id], utcnow(), loyalty_settings(), earn=not refund,
                             reverse=refund)


@hookimpl
def rapport_interactions_recorded(interaction_ids: list[int]) -> None:
    earning.earn_and_reverse(interaction_ids, utcnow(), loyalty_settings())


@hookimpl
def rapport_customers_merged(survivor: Customer, merged_ids: list[int]) -> None:
    service.merge_accounts(survivor.id, merged_ids)


@hookimpl
def rapport_customer_erased(customer: Customer) -> dict[str, Any] | None:
    return service.erase_personal_data(customer.id)


@hookimpl
def rapport_customer_export(customer: Customer) -> dict[str, Any] | None:
    return service.export_section(customer.id)


@hookimpl
def rapport_graphql_customer_fields() -> dict[str, Any]:
    return schema.customer_fields()


@hookimpl
def rapport_graphql_query_fields() -> dict[str, Any]:
    return schema.query_fields()


@hookimpl
def rapport_graphql_mutations() -> dict[str, Any]:
    return schema.MUTATIONS


@hookimpl
def rapport_graphql_types() -> list[Any]:
    return schema.NODE_TYPES


@hookimpl(optionalhook=True)
def rapport_churn_features(customers: Any, as_of: dt.datetime) -> Any:
    """Balance, tier rank, days since last earn / redemption, points expiring in 30 days
    (the churn plugin's hook, used when it is installed)."""
    return features.churn_features(customers, as_of)


@hookimpl
def rapport_job_kinds() -> list[Any]:
    from plugins.loyalty.jobs import LOYALTY_JOB_KINDS

    return LOYALTY_JOB_KINDS


@hookimpl
def rapport_event_types() -> list[tuple[str, str, dict[str, Any]]]:
    from plugins.loyalty.events import EVENT_TYPES

    return EVENT_TYPES
