"""The loyalty programme's event types (docs/events.md shows each payload)."""

from __future__ import annotations

from typing import Any

from core.outbox import GLOBAL_ID, NULLABLE_GLOBAL_ID, payload_schema

_POINTS = {
    "customerId": {**GLOBAL_ID, "description": "the member (absent from a batch of several "
                                               "members)"},
    "ledgerEntryId": {**GLOBAL_ID, "description": "the ledger entry (one redemption or "
                                                  "adjustment)"},
    "points": {"type": "integer", "description": "points moved (negative when spent)"},
    "kind": {"type": "string", "description": "the ledger entry's kind: earn, redeem, adjust"},
    "rewardId": NULLABLE_GLOBAL_ID,
    "members": {"type": "integer", "description": "members credited by the batch"},
}

EVENT_TYPES: list[tuple[str, str, dict[str, Any]]] = [
    ("loyalty.points.earned", "Points were credited: earned on recorded interactions (one "
                              "event per batch, with the member when there is one) or a "
                              "positive adjustment.",
     payload_schema(_POINTS, optional=("customerId", "ledgerEntryId", "kind", "rewardId",
                                       "members"))),
    ("loyalty.points.redeemed", "Points were spent (redeemPoints, redeemReward) or taken "
                                "back by a negative adjustment.",
     payload_schema({k: v for k, v in _POINTS.items() if k != "members"})),
    ("loyalty.tier.changed", "A member moved to another tier (one event per member).",
     payload_schema({
         "customerId": GLOBAL_ID, "fromTierId": NULLABLE_GLOBAL_ID,
         "toTierId": NULLABLE_GLOBAL_ID,
         "reason": {"type": "string", "enum": ["earned", "reevaluation", "merge"]},
     })),
]
