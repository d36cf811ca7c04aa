"""Care: the care loop of a customer-service team.

- Tasks for staff (calls, visits, greetings, follow-ups), assigned by default to the
  customer's owner (``service``).
- Rules: "when this event happens, do that", run from relayed events with the vocabulary
  every plugin contributes (``rapport_rule_triggers``, ``rapport_rule_actions``; ``rules``).
- The at-risk loop: each month a follow-up for the owner of every customer at risk of
  churning, tracked until the customer returns or is lost (``at_risk``).
- Occasions: each day, ``customer.occasion.upcoming`` for the birthdays and customer
  anniversaries a week ahead, so rules and webhooks greet customers (``occasions``).
- Incidents: crises handled in stages (warning, response, recovery, review), opened from
  core alerts (``incidents``).

This module holds the hook implementations only. See docs/care.md.
"""

from __future__ import annotations

import os
from typing import Any

import pluggy

from core import hookimpl

__version__ = "0.1.0"


@hookimpl
def rapport_add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    from plugins.care import hookspecs

    plugin_manager.add_hookspecs(hookspecs)


@hookimpl
def rapport_register_scopes() -> list[tuple[str, str]]:
    return [("tasks:read", "Read tasks and at-risk follow-ups"),
            ("tasks:write", "Create, change, complete and cancel tasks"),
            ("rules:read", "Read rules, their runs and the rule vocabulary"),
            ("rules:write", "Create, change, enable, disable and delete rules"),
            ("incidents:read", "Read incidents (crises) and their stages"),
            ("incidents:write", "Open incidents and move them through their stages")]


@hookimpl
def rapport_migration_dirs() -> list[str]:
    return [os.path.join(os.path.dirname(__file__), "migrations")]


@hookimpl
def rapport_cli_commands() -> list[Any]:
    from core.lazy_cli import lazy_command

    return [lazy_command("care", "plugins.care.cli:care_group",
                         "Care: the monthly at-risk run, the daily occasions run and the "
                         "rule runs.")]


@hookimpl
def rapport_event_types() -> list[tuple[str, str, dict[str, Any]]]:
    from plugins.care.events import EVENT_TYPES

    return EVENT_TYPES


@hookimpl
def rapport_events_relayed(events: list[dict[str, Any]]) -> None:
    from plugins.care import at_risk, rules

    at_risk.on_events(events)
    rules.fan_out(events)


@hookimpl
def rapport_job_kinds() -> list[Any]:
    from plugins.care import at_risk, occasions, rules

    return [*rules.JOB_KINDS, *at_risk.JOB_KINDS, *occasions.JOB_KINDS]


@hookimpl
def rapport_rule_actions() -> list[Any]:
    from plugins.care.actions import RULE_ACTIONS

    return RULE_ACTIONS


@hookimpl
def rapport_rule_triggers() -> list[Any]:
    from plugins.care.actions import RULE_TRIGGERS

    return RULE_TRIGGERS


@hookimpl
def rapport_demo_data(rng: Any, customers: Any, as_of: Any) -> None:
    from plugins.care import demo

    demo.seed_demo(rng, customers, as_of)


@hookimpl
def rapport_customers_merged(survivor: Any, merged_ids: list[int]) -> None:
    from plugins.care import service

    service.merge_customers(survivor.id, merged_ids)


@hookimpl
def rapport_customers_reassigned(assignments: dict[int, int],
                                 previous: dict[int, int | None]) -> None:
    from plugins.care import service

    service.reassign_customers(assignments, previous)


@hookimpl
def rapport_customer_erased(customer: Any) -> dict[str, Any]:
    from plugins.care import service

    return service.erase_customer(customer.id)


@hookimpl
def rapport_customer_export(customer: Any) -> dict[str, Any] | None:
    from plugins.care import service

    return service.export_customer(customer.id)


@hookimpl
def rapport_graphql_query_fields() -> dict[str, Any]:
    from plugins.care import incident_schema, rule_schema, schema

    return {**schema.query_fields(), **rule_schema.query_fields(),
            **incident_schema.query_fields()}


@hookimpl
def rapport_graphql_mutations() -> dict[str, Any]:
    from plugins.care import incident_schema, rule_schema, schema

    return {**schema.MUTATIONS, **rule_schema.MUTATIONS, **incident_schema.MUTATIONS}


@hookimpl
def rapport_graphql_types() -> list[Any]:
    from plugins.care import incident_schema, rule_schema, schema

    return [*schema.NODE_TYPES, *rule_schema.NODE_TYPES, *incident_schema.NODE_TYPES]


@hookimpl
def rapport_graphql_customer_fields() -> dict[str, Any]:
    from plugins.care import schema

    return schema.customer_fields()
