"""The segments plugin's event types (docs/events.md shows each payload)."""

from __future__ import annotations

from typing import Any

from core.outbox import GLOBAL_ID, payload_schema

_SEGMENT = payload_schema({"segmentId": GLOBAL_ID,
                           "name": {"type": "string", "description": "the segment's name"}})

EVENT_TYPES: list[tuple[str, str, dict[str, Any]]] = [
    ("segment.created", "A saved segment was created (createSegment).", _SEGMENT),
    ("segment.updated", ("A saved segment was renamed, described or given another filter "
                         "(updateSegment)."), _SEGMENT),
    ("segment.deleted", "A saved segment was deleted (deleteSegment).", _SEGMENT),
    ("segments.value_tiers.updated", ("Value tiers were recomputed (the segments.tiers job): "
                                      "one event per run with the customers per tier and "
                                      "those whose tier changed."), payload_schema({
        "asOf": {"type": "string", "format": "date", "description": "the window's last day"},
        "windowDays": {"type": "integer"},
        "customers": {"type": "integer", "description": "customers with a tier"},
        "tiers": {"type": "object", "description": "customers per tier (top, high, medium, "
                                                   "low, none)",
                  "additionalProperties": {"type": "integer"}},
        "changed": {"type": "integer", "description": "customers whose tier changed (a first "
                                                      "tier counts)"},
        "changedCustomerIds": {"type": "array", "items": GLOBAL_ID,
                               "description": "the first 1,000 of them, by id"},
        "changedTruncated": {"type": "boolean", "description": "true when more changed than "
                                                               "are listed"},
    })),
]
