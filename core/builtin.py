"""Core's own contributions, registered as a plugin through the same hooks a partner uses."""

from __future__ import annotations

from typing import Any

from core.hookspecs import hookimpl

CORE_SCOPES = [
    ("customers:read", "Read customer profiles, segments and duplicates"),
    ("customers:write", "Create and update customers, define customer attributes"),
    ("customers:merge", "Merge duplicate customers (moves every domain's data to the survivor)"),
    ("customers:erase", "Erase a customer's personal data everywhere (right to be forgotten)"),
    ("customers:export", "Export a customer's data: the sections of the domains the key "
                         "can read"),
    ("customers:reassign", "Give customers a new owner (reassignCustomers, updateCustomer's "
                           "ownerId): their open tasks and follow-ups move with them"),
    ("interactions:read", "Read interaction timelines"),
    ("interactions:write", "Record interactions"),
    ("agents:read", "Read staff members"),
    ("agents:write", "Create and change staff members (deactivate, team, role)"),
    ("agents:act-as", "Send X-Rapport-Agent: act on behalf of a staff member (recorded)"),
    ("audit:read", "Read the audit log"),
    ("alerts:read", "Read alerts"),
    ("alerts:write", "Acknowledge alerts"),
    ("metrics:read", "Scrape the Prometheus metrics at /metrics"),
    ("schema:read", "Introspect the GraphQL schema when RAPPORT_GRAPHQL_INTROSPECTION=scope"),
    ("jobs:read", "Read jobs (of the domains the key can read) and schedules"),
    ("jobs:write", "Start and cancel jobs (with the job kind's own write scope) and edit "
                   "schedules"),
    ("admin", "Everything, including API keys and plugin settings"),
]

CORE_INTERACTION_KINDS = [
    ("purchase", "The customer bought something (amount and currency required)"),
    ("refund", "Money returned to the customer; refers to the purchase it reverses"),
    ("call", "A phone call with the customer"),
    ("email", "An e-mail exchanged with the customer"),
    ("visit", "A visit in person (store, branch, site)"),
    ("service", "A service or after-sales intervention"),
    ("chat", "A chat or messaging conversation"),
    ("note", "A note written by staff"),
]

#: Kinds whose ``amount`` is required: they move money.
MONETARY_KINDS = frozenset({"purchase", "refund"})


@hookimpl
def rapport_register_scopes() -> list[tuple[str, str]]:
    return CORE_SCOPES


@hookimpl
def rapport_interaction_kinds() -> list[tuple[str, str]]:
    return CORE_INTERACTION_KINDS


@hookimpl
def rapport_job_kinds() -> list[Any]:
    from core.job_kinds import CORE_JOB_KINDS  # imports the importers: only when asked
    from core.housekeeping import job_kinds as housekeeping_job_kinds
    from core.outbox import JOB_KINDS as OUTBOX_JOB_KINDS

    return [*CORE_JOB_KINDS, *OUTBOX_JOB_KINDS, *housekeeping_job_kinds()]


@hookimpl
def rapport_register_routes() -> list[Any]:
    from core.file_routes import blueprint  # Flask routes: not needed to build the app state

    return [blueprint]


@hookimpl
def rapport_cli_commands() -> list[Any]:
    from core.lazy_cli import lazy_command  # the modules load when the command runs

    return [
        lazy_command("worker", "core.jobs_cli:worker_command",
                     "Run jobs from the queue (RAPPORT_BROKER_URL) until stopped (SIGTERM: "
                     "finish the running jobs first)."),
        lazy_command("scheduler", "core.jobs_cli:scheduler_command",
                     "Start the jobs of due schedules, acting as the service 'scheduler'. "
                     "Without a broker the jobs run on this process's threads."),
        lazy_command("outbox", "core.events:outbox_group",
                     "The event outbox: relay committed events to their consumers."),
        lazy_command("purge", "core.housekeeping:purge_command",
                     "Delete relayed events and finished jobs past their retention (the "
                     "audit log stays)."),
    ]


# --- Events: core's catalogue, the relay (core/outbox.py, docs/events.md) -------------------


@hookimpl
def rapport_event_types() -> list[tuple[str, str, dict[str, Any]]]:
    from core.events import CORE_EVENT_TYPES

    return CORE_EVENT_TYPES


@hookimpl
def rapport_init_app(app: Any) -> None:
    from core import outbox

    outbox.init_app(app)
