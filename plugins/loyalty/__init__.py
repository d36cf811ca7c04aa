"""Loyalty: a points ledger with earn rules, tiers, expiry and a rewards catalog.

This module holds the hook implementations only. The work is done beside it: ``ledger``
(every balance change), ``earning`` and ``tiers`` (the hooks' set-based work),
``programme`` and ``service`` (the operations the API and the CLI call), ``report``,
``features`` (for churn), ``schema`` (GraphQL), ``cli`` and ``demo``. See docs/loyalty.md.
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
    from flask import Flask

    from core.models import Customer, Interaction

# Kept light: `rapport --help` imports this module for its command. The modules that do
# the work are imported inside the hooks (once the app is built they are loaded anyway).

__version__ = "0.1.0"


@hookimpl
def rapport_init_app(app: Flask) -> None:
    from plugins.loyalty.config import EXTENSION, read_settings

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
    return [lazy_command("loyalty", "plugins.loyalty.cli:loyalty_group",
                         "The loyalty programme: expiry and tier jobs, the report.")]


@hookimpl
def rapport_demo_data(rng: random.Random, customers: Sequence[Customer], as_of: dt.datetime
                      ) -> None:
    from plugins.loyalty import demo

    demo.seed_demo(rng, customers, as_of)


@hookimpl
def rapport_interaction_recorded(interaction: Interaction) -> None:
    from core.db import utcnow
    from plugins.loyalty import earning
    from plugins.loyalty.config import loyalty_settings

    refund = interaction.kind == "refund"
    earning.earn_and_reverse([interaction.id], utcnow(), loyalty_settings(), earn=not refund,
                             reverse=refund)


@hookimpl
def rapport_interactions_recorded(interaction_ids: list[int]) -> None:
    from core.db import utcnow
    from plugins.loyalty import earning
    from plugins.loyalty.config import loyalty_settings

    earning.earn_and_reverse(interaction_ids, utcnow(), loyalty_settings())


@hookimpl
def rapport_customers_merged(survivor: Customer, merged_ids: list[int]) -> None:
    from plugins.loyalty import service

    service.merge_accounts(survivor.id, merged_ids)


@hookimpl
def rapport_customer_erased(customer: Customer) -> dict[str, Any] | None:
    from plugins.loyalty import service

    return service.erase_personal_data(customer.id)


@hookimpl
def rapport_customer_export(customer: Customer) -> dict[str, Any] | None:
    from plugins.loyalty import service

    return service.export_section(customer.id)


@hookimpl
def rapport_graphql_customer_fields() -> dict[str, Any]:
    from plugins.loyalty import schema

    return schema.customer_fields()


@hookimpl
def rapport_graphql_query_fields() -> dict[str, Any]:
    from plugins.loyalty import schema

    return schema.query_fields()


@hookimpl
def rapport_graphql_mutations() -> dict[str, Any]:
    from plugins.loyalty import schema

    return schema.MUTATIONS


@hookimpl
def rapport_graphql_types() -> list[Any]:
    from plugins.loyalty import schema

    return schema.NODE_TYPES


@hookimpl
def rapport_rule_actions() -> list[Any]:
    """``loyalty.adjust_points`` for the care plugin's rules (unused when it is off)."""
    from plugins.loyalty.rule_actions import RULE_ACTIONS

    return RULE_ACTIONS


@hookimpl(optionalhook=True)
def rapport_churn_features(customers: Any, as_of: dt.datetime) -> Any:
    """Balance, tier rank, days since last earn / redemption, points expiring in 30 days
    (the churn plugin's hook, used when it is installed)."""
    from plugins.loyalty import features

    return features.churn_features(customers, as_of)


@hookimpl
def rapport_job_kinds() -> list[Any]:
    from plugins.loyalty.jobs import LOYALTY_JOB_KINDS

    return LOYALTY_JOB_KINDS


@hookimpl
def rapport_event_types() -> list[tuple[str, str, dict[str, Any]]]:
    from plugins.loyalty.events import EVENT_TYPES

    return EVENT_TYPES
