"""The surveys plugin's event types (docs/events.md shows each payload)."""

from __future__ import annotations

from typing import Any

from core.outbox import DATETIME, GLOBAL_ID, NULLABLE_GLOBAL_ID, payload_schema

EVENT_TYPES: list[tuple[str, str, dict[str, Any]]] = [
    ("survey.response.submitted", "A survey response was submitted (submitSurveyResponse). "
                                  "The answers are read through GraphQL.", payload_schema({
        "responseId": GLOBAL_ID, "surveyId": GLOBAL_ID,
        "customerId": {**NULLABLE_GLOBAL_ID, "description": "null for an anonymous survey"},
        "submittedAt": DATETIME,
    })),
    ("survey.responses.imported", "A batch of survey responses was imported (one event per "
                                  "batch).", payload_schema({
        "surveyId": GLOBAL_ID,
        "recorded": {"type": "integer", "description": "responses created by the batch"},
        "skipped": {"type": "integer", "description": "rows already imported"},
        "rejected": {"type": "integer", "description": "rows refused"},
        "firstId": GLOBAL_ID, "lastId": GLOBAL_ID,
    })),
]
