"""Core's event types (customers, interactions, alerts, agents) and the ``rapport outbox``
command.

The payloads carry global ids and what changed, never an e-mail or phone: a subscriber
reads those through GraphQL with its own scopes. docs/events.md shows each shape.
"""

from __future__ import annotations

from typing import Any

import click
from flask.cli import with_appcontext

from core.outbox import (
    DATETIME, DECIMAL, GLOBAL_ID, NULLABLE_GLOBAL_ID, payload_schema,
)

_STRING_LIST = {"type": "array", "items": {"type": "string"}}
_BATCH = payload_schema({
    "recorded": {"type": "integer", "description": "rows created by the batch"},
    "skipped": {"type": "integer", "description": "rows that already existed"},
    "rejected": {"type": "integer", "description": "rows refused (see the rejects file)"},
    "firstId": GLOBAL_ID, "lastId": GLOBAL_ID,
})

CORE_EVENT_TYPES: list[tuple[str, str, dict[str, Any]]] = [
    ("customer.created", "A customer was created (createCustomer, the CLI).", payload_schema({
        "customerId": GLOBAL_ID,
        "status": {"type": "string", "enum": ["active", "churned", "erased"]},
        "source": {"type": ["string", "null"],
                   "description": "source application of its external id, if given"},
    })),
    ("customer.updated", "A customer's profile or lifecycle status changed.", payload_schema({
        "customerId": GLOBAL_ID,
        "changedFields": {**_STRING_LIST, "description": "camelCase names of the changed "
                                                          "fields (read them through GraphQL)"},
        "status": {"type": "string", "description": "the new status, when it changed"},
        "reason": {"type": "string", "description": "why the status changed, when a rule "
                                                    "changed it (a purchase reactivating a "
                                                    "churned customer)"},
    }, optional=("status", "reason"))),
    ("customer.merged", "Duplicates were merged into the surviving customer.", payload_schema({
        "customerId": {**GLOBAL_ID, "description": "the survivor"},
        "mergedIds": {"type": "array", "items": GLOBAL_ID,
                      "description": "the customers merged into it (they no longer exist)"},
    })),
    ("customer.erased", "A customer's personal data was erased (right to be forgotten): "
                        "forget what you copied.", payload_schema({"customerId": GLOBAL_ID})),
    ("customers.imported", "A batch of customers was imported (one event per batch).",
     _BATCH),
    ("customers.reassigned", "A batch of customers was given new owners "
                             "(reassignCustomers; one event per batch of at most 500). It "
                             "carries counts and the batch's id range only: the moved "
                             "customers are not contiguous (firstId..lastId also spans "
                             "customers that did not move), so read owners through GraphQL.",
     payload_schema({
         "moved": {"type": "integer", "description": "customers that changed owner"},
         "fromOwnerId": {**NULLABLE_GLOBAL_ID,
                         "description": "the departing owner, when the move named one"},
         "assignments": {"type": "array", "items": {"type": "object"},
                         "description": "per new owner: {ownerId, count}, by agent id"},
         "firstId": {**GLOBAL_ID, "description": "the batch's lowest moved customer id"},
         "lastId": {**GLOBAL_ID, "description": "its highest (not every id between moved)"},
     })),
    ("agent.updated", "A staff member was renamed, moved to another team, given another "
                      "role, deactivated or reactivated (updateAgent).", payload_schema({
                          "agentId": GLOBAL_ID,
                          "changedFields": {**_STRING_LIST, "description": (
                              "camelCase names of the changed fields: name, team, role, "
                              "active")},
                          "active": {"type": "boolean", "description": (
                              "whether the agent is active now, when that changed")},
                      }, optional=("active",))),
    ("interaction.recorded", "One interaction was recorded (recordInteraction).",
     payload_schema({
         "interactionId": GLOBAL_ID, "customerId": GLOBAL_ID,
         "kind": {"type": "string", "description": "a code of interactionKinds"},
         "occurredAt": DATETIME, "amount": DECIMAL,
         "currency": {"type": ["string", "null"]},
     })),
    ("interactions.imported", "A batch of interactions was recorded (recordInteractions, an "
                              "import chunk): one event per batch.", _BATCH),
    ("alert.raised", "An alert was raised (complaint spike or escalation, churn-rate jump).",
     payload_schema({
         "alertId": GLOBAL_ID, "kind": {"type": "string"},
         "severity": {"type": "string"}, "source": {"type": "string"},
         "customerId": NULLABLE_GLOBAL_ID,
     })),
]


@click.group("outbox")
def outbox_group() -> None:
    """The event outbox: relay committed events to their consumers."""


@outbox_group.command("relay")
@click.option("--batch-size", default=200, show_default=True, type=click.IntRange(1, 10_000),
              help="Events handed to the consumers per transaction.")
@with_appcontext
def relay_command(batch_size: int) -> None:
    """Relay every committed event now (one pass until none is waiting)."""
    from core import context, outbox

    with context.use(actor=context.Actor(service="cli", via="cli"),
                     operation=outbox.RELAY_JOB_KIND):
        count = outbox.relay_all(batch_size)
    click.echo(f"{count} event(s) relayed.")


@outbox_group.command("status")
@with_appcontext
def status_command() -> None:
    """How many events wait, and the age of the oldest."""
    from sqlalchemy import func, select

    from core import outbox
    from core.db import db
    from core.models import OutboxEvent

    waiting = db.session.scalar(select(func.count()).select_from(OutboxEvent).where(
        OutboxEvent.delivered_at.is_(None)))
    click.echo(f"{waiting} event(s) waiting; oldest {outbox.lag_seconds():.1f} s old.")
