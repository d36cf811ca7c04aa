"""The care plugin's rule actions and triggers (``rapport_rule_actions``/``_triggers``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from core.app import rapport
from core.db import utcnow
from core.errors import ErrorCode, UserError
from core.ids import decode_global_id, global_id
from core.rules import RuleAction, RuleContext, RuleTrigger

from plugins.care import incidents, schemas, service
from plugins.care.models import TaskSource


def create_task(event: Mapping[str, Any], parameters: dict[str, Any], context: RuleContext
                ) -> dict[str, Any]:
    """A task for the event's customer (``data.customerId``), assigned to the named agent
    or to the customer's owner, due ``dueInDays`` after the event."""
    raw_customer = (event.get("data") or {}).get("customerId")
    customer_id = None
    if raw_customer:
        try:
            customer_id = decode_global_id(str(raw_customer), "Customer")[1]
        except ValueError:
            raise UserError.single("The event names no customer.", ErrorCode.INVALID,
                                   "customerId") from None
    occurred = dt.datetime.fromisoformat(str(event.get("occurredAt") or utcnow().isoformat())
                                         .replace("Z", "+00:00"))
    task = service.create_task({
        "customer_id": customer_id, "assignee_id": parameters.get("assignee_id"),
        "kind": parameters["kind"], "title": parameters["title"],
        "due_on": (occurred.astimezone(rapport().settings.tz).date()
                   + dt.timedelta(days=parameters["due_in_days"])).isoformat(),
    }, source=TaskSource.RULE, rule_id=context.rule_id)
    return {"taskId": global_id("Task", task.id)}


RULE_ACTIONS = [RuleAction(
    name="care.create_task", domain="tasks", parameters=schemas.CreateTaskActionSchema,
    function=create_task,
    description="Create a task for the event's customer: kind (default follow_up), title, "
                "dueInDays (default 3), assigneeId (default the customer's owner).")]

RULE_ACTIONS.append(RuleAction(
    name="care.open_incident", domain="incidents",
    parameters=schemas.OpenIncidentActionSchema, function=incidents.open_from_alert_event,
    description="On alert.raised: open an incident for the alert at the warning stage "
                "(once per alert), led by ownerId if given."))

RULE_TRIGGERS = [
    RuleTrigger("customer.created", "A new customer: a welcome call."),
    RuleTrigger("interaction.recorded", "An interaction (condition on kind, amount)."),
    RuleTrigger("alert.raised", "A core alert (complaint spike or escalation, churn jump)."),
    RuleTrigger("task.completed", "A task was done: plan the next step."),
    RuleTrigger("customer.occasion.upcoming",
                "A birthday or customer anniversary ahead (the daily care.occasions run): "
                "a greeting (condition on occasion: birthday or anniversary; years)."),
]
