"""Every core hook. Implement them with ``@core.hookimpl`` and keyword-named parameters.

Hooks are called with keyword arguments only: an implementation declares just the
parameters it needs, and new parameters can be added later without breaking it. Domain
event hooks fire inside the caller's database transaction: raising rolls the whole
operation back and the client gets the error. GraphQL contribution hooks live in
``api/hookspecs.py``.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from flask import Blueprint, Flask

    from core.jobs import JobKind
    from core.models import Alert, Customer, Interaction
    from core.services.segments import CustomerFilterField
    from core.rules import RuleAction, RuleTrigger

PROJECT = "rapport"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- Lifecycle -------------------------------------------------------------------------


@hookspec
def rapport_add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    """Called once, right after every enabled plugin is registered.

    A plugin that offers hooks to other plugins adds its hookspec module here with
    ``plugin_manager.add_hookspecs(module)``. Implementations of another plugin's hook are
    marked ``@hookimpl(optionalhook=True)`` so they are not an error when it is absent.
    """


@hookspec
def rapport_init_app(app: Flask) -> None:
    """Called at the end of ``create_app``, once the database and plugins are set up.

    Use it to read settings, add extensions, or attach per-app state to ``app.extensions``.
    Do no database work here: the tables may not exist yet.
    """


@hookspec
def rapport_register_routes() -> list[Blueprint] | None:
    """Return Flask blueprints to register on the app (report pages, webhooks, ...).

    Protect them with ``core.auth.require_scope``: they are not behind GraphQL's checks.
    """


@hookspec
def rapport_cli_commands() -> list[click.Command] | None:
    """Return click commands (or groups) to add under the ``rapport`` command.

    They run inside an application context. ``rapport loyalty expire`` is a group named
    ``loyalty`` with an ``expire`` command.
    """


@hookspec
def rapport_migration_dirs() -> list[str] | None:
    """Return directories holding the plugin's Alembic revision files.

    Each plugin keeps its own branch: its first revision has ``branch_labels = ("<plugin>",)``
    and ``depends_on = "core"`` when it references core tables.
    """


# --- Registration ----------------------------------------------------------------------


@hookspec
def rapport_register_scopes() -> list[tuple[str, str]] | None:
    """Return the permission scopes the plugin adds, as ``(scope, description)`` pairs.

    Scopes are named ``<domain>:read`` and ``<domain>:write``; ``admin`` grants all.
    Every GraphQL field a plugin contributes names one of them.
    """


@hookspec
def rapport_interaction_kinds() -> list[tuple[str, str]] | None:
    """Return extra interaction kinds the plugin records, as ``(kind, description)``.

    Kinds are lowercase words (``complaint``, ``survey_response``). Recording an
    interaction of an unregistered kind is a validation error.
    """


@hookspec
def rapport_customer_filters() -> list[CustomerFilterField] | None:
    """Return extra fields of the customer filter (``core.services.segments.CustomerFilterField``).

    Collected once per app. Each field has a snake_case ``name`` (camelCase in GraphQL),
    a marshmallow ``field`` that validates its value, a graphene ``graphql_type`` for the
    ``CustomerFilterInput`` of the schema, a ``condition(value)`` giving one set-based SQL
    condition on ``core.models.Customer``, and the ``scope`` a GraphQL caller needs to use
    it (your read scope). Every place that takes the customer filter (``customers``,
    survey analysis segments, ``validate_filter`` in the CLI and routes) then takes it. A
    name that clashes with core's or another plugin's field fails with a ``ConfigError``.
    """


@hookspec
def rapport_demo_data(rng: random.Random, customers: Sequence[Customer], as_of: dt.datetime
                      ) -> None:
    """Called by ``rapport demo`` after core generated customers and a year of interactions.

    Add realistic rows of your own for ``customers`` (already flushed, with ids), using
    ``rng`` for every random choice so a seed reproduces the data. Do not commit.

    ``rapport demo`` works in chunks of a few hundred customers, one transaction each: the
    hook fires once per chunk, with that chunk's customers. Core writes its demo rows with
    bulk inserts, so the domain-event hooks (``rapport_customer_created``,
    ``rapport_interactions_recorded``) do not fire for them: derive what you need (points
    earned on purchases, ...) from the customers' interactions here. ``as_of`` is the
    aware UTC "now" of the demo: date nothing after it.
    """


# --- Domain events (inside the caller's transaction) -----------------------------------


@hookspec
def rapport_customer_created(customer: Customer) -> None:
    """A customer was created (flushed, has an id)."""


@hookspec
def rapport_customers_imported(customer_ids: list[int]) -> None:
    """A batch of customers was created by the importer (``rapport import customers``).

    Fired once per batch, in the batch's transaction, instead of
    ``rapport_customer_created`` per customer: work on the batch with set-based SQL
    (``WHERE customer_id IN (...)``). Customers the file named but that already existed
    (same source and external id) are not in ``customer_ids``.
    """


@hookspec
def rapport_customer_updated(customer: Customer, changes: dict[str, tuple[Any, Any]]) -> None:
    """A customer was updated; ``changes`` maps each changed field to ``(old, new)``."""


@hookspec
def rapport_customers_reassigned(assignments: dict[int, int],
                                 previous: dict[int, int | None]) -> None:
    """Customers were given a new owner: ``assignments`` maps each customer id to its new
    owner's agent id, ``previous`` each to the owner it had (None: none).

    Move your owner-bound work (open tasks, follow-ups) along. Called inside the
    transaction of the change, after the customers' rows are updated: by
    ``reassign_customers`` (``reassignCustomers``, ``rapport customers reassign``) once
    per batch of at most 500 customers, and by ``update_customer`` when one customer's
    ``owner_id`` changes (a one-item call; ``rapport_customer_updated`` still fires with
    the change as well). A bulk reassignment does not call ``rapport_customer_updated``
    per customer. Not called: when the owner is set to null (no new owner), and by
    ``merge_customers``, which fills a survivor without an owner with a merged customer's
    owner (the survivor had none, so there is no previous owner's work to move): that
    change comes with ``rapport_customers_merged`` only, where plugins re-key the merged
    customers' rows to the survivor.
    """


@hookspec
def rapport_customers_merged(survivor: Customer, merged_ids: list[int]) -> None:
    """Customers ``merged_ids`` are being merged into ``survivor``.

    Re-key every row of yours from the merged ids to ``survivor.id`` (combine balances,
    keep history). Core has already moved interactions; the merged customer rows are
    deleted after this hook returns.
    """


@hookspec
def rapport_customer_erased(customer: Customer) -> dict[str, Any] | None:
    """The customer is being erased (right to be forgotten).

    Remove the personal data you hold; keep accounting facts (ledger entries, counts)
    attached to the same, now anonymous, customer id so totals do not change. Return a
    short report of what you did (``{"responses_anonymised": 3}``); it is shown to the
    caller under your plugin's name.
    """


@hookspec
def rapport_customer_export(customer: Customer) -> dict[str, Any] | None:
    """Return your section of the customer's data export (JSON-serialisable), or None.

    Like every document Rapport shows: camelCase keys for the keys you define, global ids
    (``core.ids.global_id``) for every object; keys users define (attributes, payloads,
    answers) pass through unchanged.
    """


@hookspec
def rapport_interaction_recorded(interaction: Interaction) -> None:
    """One interaction was recorded (``recordInteraction``; flushed, has an id)."""


@hookspec
def rapport_interactions_recorded(interaction_ids: list[int]) -> None:
    """A batch of interactions was recorded (``recordInteractions``, the importer).

    Fired once per batch instead of ``rapport_interaction_recorded`` per row: work on the
    batch with set-based SQL (``INSERT ... SELECT ... WHERE id IN (...)``).
    """


@hookspec
def rapport_alert_raised(alert: Alert) -> None:
    """An alert was stored by ``core.services.staff.raise_alert`` (flushed, has an id)."""


# --- Events (the outbox; see docs/events.md) --------------------------------------------


@hookspec
def rapport_event_types() -> list[tuple[str, str, dict[str, Any]]] | None:
    """Return the event types the plugin emits, as ``(type, description, payload schema)``.

    ``type`` is ``domain.entity.verb`` in lower case and the past tense
    (``complaint.filed``); the schema is a JSON Schema of the envelope's ``data``. Only
    declared types may be written to the outbox; docs/events.md lists every one.
    """


@hookspec
def rapport_events_relayed(events: list[dict[str, Any]]) -> None:
    """Committed outbox events, oldest first and in order per aggregate, as envelopes.

    Each envelope is ``{"id": "evt_...", "type", "occurredAt", "actor", "data"}``. Fires
    in the relay's transaction, after the events were committed by the change that wrote
    them: raising rolls the relay back and the same events come again later (consumers
    must be idempotent on ``id``). Do not call the network here: record what to do in
    your own tables and hand it to a job (the webhooks plugin queues deliveries).
    """


# --- Rules (see core/rules.py; the care plugin runs them) -------------------------------


@hookspec
def rapport_rule_triggers() -> list[RuleTrigger] | None:
    """Return the event types you offer as rule triggers, as ``core.rules.RuleTrigger``.

    Any declared event type (``rapport_event_types``) may trigger a rule; a trigger
    declared here is listed with its description in GraphQL ``ruleTriggers`` so a rule
    editor can offer it. Conditions of a rule test the fields of the type's payload schema.
    """


@hookspec
def rapport_rule_actions() -> list[RuleAction] | None:
    """Return what rules may do, as ``core.rules.RuleAction``s named ``plugin.verb``.

    Each carries a marshmallow schema of its parameters (checked when a rule is saved and
    again at each run), the domain whose write scope the rule's creator needs, and
    ``function(event, parameters, context)``. The function runs in its own transaction,
    acting as the key that created the rule (``via: "rule"``); write through your services
    so the change is audited. Events it causes do not trigger the same rule again.
    """


# --- Jobs (see core/jobs.py) -----------------------------------------------------------


@hookspec
def rapport_job_kinds() -> list[JobKind] | None:
    """Return the long operations clients may start as jobs, as ``core.jobs.JobKind``s.

    Each kind is named ``plugin.verb`` and carries a marshmallow schema of its parameters
    (camelCase keys through ``data_key``), the domain whose write scope ``startJob`` needs,
    a description, and ``function(parameters, progress)``: it gets the validated
    parameters and a ``core.jobs.Progress``, calls ``progress(fraction, message)`` as it
    goes (which raises ``core.jobs.Cancelled`` when the job was cancelled: let it
    propagate), writes output files to ``progress.output_path(name)`` and returns a JSON
    result. It runs on a worker, a server thread or in the CLI: never talk to the queue
    library; open your own transactions (``core.services.transaction``).
    """
