"""The care plugin's event types (docs/events.md shows each payload)."""

from __future__ import annotations

from typing import Any

from core.outbox import GLOBAL_ID, NULLABLE_GLOBAL_ID, payload_schema

_TASK = {
    "taskId": GLOBAL_ID,
    "customerId": NULLABLE_GLOBAL_ID,
    "assigneeId": NULLABLE_GLOBAL_ID,
    "kind": {"type": "string", "enum": ["call", "visit", "greeting", "follow_up", "other"]},
    "dueOn": {"type": "string", "format": "date"},
    "status": {"type": "string", "enum": ["open", "done", "cancelled"]},
    "source": {"type": "string", "enum": ["manual", "rule", "at_risk"],
               "description": "who made the task: a person, a rule or the at-risk run"},
    "ruleId": {**NULLABLE_GLOBAL_ID, "description": "the rule that made it, if one did"},
}

_STAGE = {"type": "string", "enum": ["warning", "response", "recovery", "review", "closed"]}
_INCIDENT = {
    "incidentId": GLOBAL_ID,
    "alertId": {**NULLABLE_GLOBAL_ID, "description": "the alert it was opened from, if any"},
    "kind": {"type": "string", "description": "the crisis type (the alert's kind)"},
    "severity": {"type": "string", "enum": ["info", "low", "medium", "high", "critical"]},
    "stage": {**_STAGE, "description": "the stage it is in now"},
}

EVENT_TYPES: list[tuple[str, str, dict[str, Any]]] = [
    ("task.created", "A task was created (createTask, a rule, the at-risk run).",
     payload_schema(_TASK)),
    ("task.updated", "An open task was reassigned, re-dated, renamed or re-kinded.",
     payload_schema({**_TASK, "changedFields": {
         "type": "array", "items": {"type": "string"},
         "description": "camelCase names of the changed fields"}})),
    ("task.completed", "A task was done (completeTask; a follow-up whose customer returned "
                       "or was lost).", payload_schema(_TASK)),
    ("task.cancelled", "A task was cancelled (cancelTask).", payload_schema(_TASK)),
    ("rule.created", "A rule was created (createRule).",
     payload_schema({"ruleId": GLOBAL_ID})),
    ("rule.updated", "A rule was changed, enabled, disabled or renamed (updateRule).",
     payload_schema({"ruleId": GLOBAL_ID, "changedFields": {
         "type": "array", "items": {"type": "string"},
         "description": "camelCase names of the changed fields"}})),
    ("rule.deleted", "A rule was deleted (deleteRule); its runs stay.",
     payload_schema({"ruleId": GLOBAL_ID})),
    ("customer.occasion.upcoming",
     "A customer's birthday or customer anniversary falls on the day `on`, daysAhead days "
     "ahead (the daily care.occasions run; once per customer, occasion and day). Never the "
     "birth date, the age, an e-mail or a phone.",
     payload_schema({
         "customerId": GLOBAL_ID,
         "occasion": {"type": "string", "enum": ["birthday", "anniversary"]},
         "on": {"type": "string", "format": "date",
                "description": "the day of the occasion (RAPPORT_TIMEZONE)"},
         "years": {"type": ["integer", "null"],
                   "description": "whole years as a customer on that day (an anniversary); "
                                  "null for a birthday (no age)"},
         "ownerId": {**NULLABLE_GLOBAL_ID, "description": "the customer's owner, if any"},
     })),
    ("incident.opened", "An incident was opened at the warning stage (openIncident, a "
                        "rule on alert.raised).", payload_schema(_INCIDENT)),
    ("incident.advanced", "An incident moved to its next stage (advanceIncident).",
     payload_schema({**_INCIDENT, "fromStage": {**_STAGE, "description": "the stage it left"}})),
]
