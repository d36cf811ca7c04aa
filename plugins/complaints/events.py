"""The complaints plugin's event types (docs/events.md shows each payload)."""

from __future__ import annotations

from typing import Any

from core.outbox import DATETIME, GLOBAL_ID, payload_schema

_STATUS = {"type": "string", "description": "a complaint status, lower case (received, "
                                            "confirmed, analyzing, ...)"}

EVENT_TYPES: list[tuple[str, str, dict[str, Any]]] = [
    ("complaint.filed", "A complaint was filed (fileComplaint, an import).", payload_schema({
        "complaintId": GLOBAL_ID, "customerId": GLOBAL_ID,
        "type": {"type": "string", "description": "a code of complaintTypes"},
        "channel": {"type": "string", "description": "a code of complaintChannels"},
        "severity": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
        "filedAt": {**DATETIME, "description": "when the customer complained"},
    })),
    ("complaint.transitioned", "A complaint moved along the workflow (transitionComplaint).",
     payload_schema({
         "complaintId": GLOBAL_ID, "customerId": GLOBAL_ID,
         "transition": {"type": "string", "description": "the move asked for, lower case "
                                                         "(a target status or reopened)"},
         "fromStatus": _STATUS, "toStatus": _STATUS,
     })),
    ("complaint.sla.breached", "A complaint passed an SLA due time unmet and was escalated "
                               "(the complaints.escalate job).", payload_schema({
        "complaintId": GLOBAL_ID, "customerId": GLOBAL_ID,
        "targets": {"type": "array", "items": {"type": "string",
                                               "enum": ["first_response", "resolution"]},
                    "description": "the targets missed"},
        "dueAt": {**DATETIME, "description": "the earliest due time missed"},
        "severity": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
    })),
]
