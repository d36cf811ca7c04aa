"""What the loyalty programme tells the audit log and event subscribers (core.changes).

Each function is called inside the transaction of the change it describes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core import changes
from core.ids import global_id

from plugins.loyalty.models import LedgerEntry


def entry_recorded(entry: LedgerEntry, operation: str | None = None) -> None:
    """A redemption or an adjustment: one entry, and a points event for its member."""
    customer = global_id("Customer", entry.customer_id)
    ledger_entry = global_id("LoyaltyLedgerEntry", entry.id)
    event_type = "loyalty.points.redeemed" if entry.points < 0 else "loyalty.points.earned"
    changes.record(operation, [customer, ledger_entry], None, [changes.Event(
        event_type, customer, {
            "customerId": customer, "ledgerEntryId": ledger_entry, "points": entry.points,
            "kind": entry.kind.value,
            "rewardId": None if entry.reward_id is None else global_id("LoyaltyReward",
                                                                       entry.reward_id)})])


def points_earned(credits: Mapping[int, int]) -> None:
    """Points earned by recorded interactions: one entry and one event per batch (a single
    interaction's event names its member)."""
    if not credits:
        return
    members = sorted(credits)
    first = global_id("Customer", members[0])
    data: dict[str, object] = {"points": sum(credits.values()), "members": len(members)}
    if len(members) == 1:
        data["customerId"] = first
    changes.record(None, [], {"pointsEarned": [None, data["points"]],
                              "members": [None, len(members)]},
                   [changes.Event("loyalty.points.earned", first, data)])


def tiers_changed(moves: Sequence[Mapping[str, object]]) -> None:
    """Members moved between tiers: one entry for the batch, one event per member (a
    subscriber acts on each member's new tier)."""
    if not moves:
        return

    def tier(value: object) -> str | None:
        return None if value is None else global_id(
            "LoyaltyTier", int(value))  # type: ignore[call-overload]

    events = []
    for move in moves:
        customer = global_id("Customer", int(move["customer_id"]))  # type: ignore[call-overload]
        events.append(changes.Event("loyalty.tier.changed", customer, {
            "customerId": customer, "fromTierId": tier(move["from_tier_id"]),
            "toTierId": tier(move["to_tier_id"]), "reason": move["reason"]}))
    changes.record(None, [], {"tierChanges": [None, len(moves)]}, events)


def points_expired(lots: int, points: int, members: int) -> None:
    """One batch of the expiry job."""
    if lots:
        changes.record(None, [], {"lotsExpired": [None, lots], "pointsExpired": [None, points],
                                  "members": [None, members]})
