"""The churn plugin's event types (docs/events.md shows each payload)."""

from __future__ import annotations

from typing import Any

from core.outbox import DATETIME, GLOBAL_ID, payload_schema

EVENT_TYPES: list[tuple[str, str, dict[str, Any]]] = [
    ("churn.customer.marked", "A customer was recorded as churned (markCustomerChurned, "
                              "markCustomersChurned, an import): one event per customer.",
     payload_schema({
         "customerId": GLOBAL_ID, "churnRecordId": GLOBAL_ID,
         "type": {"type": "string", "description": "churn type, lower case"},
         "reason": {"type": "string", "description": "churn reason, lower case"},
         "churnedAt": DATETIME,
     })),
    ("churn.scores.updated", "Churn risk scores were recomputed (the churn.score job): one "
                             "event per run, about the model version used.", payload_schema({
        "modelVersion": {"type": "integer", "description": "the model version that scored"},
        "customers": {"type": "integer", "description": "customers scored"},
        "highRisk": {"type": "integer", "description": "customers above the high-risk "
                                                       "threshold"},
        "meanRisk": {"type": "number"},
        "scoredAt": DATETIME,
    })),
]
