"""What the loyalty programme tells the audit log and event subscribers (core.changes).

Each function is called inside the transaction of the change it describes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core import changes
from core.ids import global_id

from plugins.loyalty.models import LedgerEntry


#: In a debit's one statement (``ledger.debit`` on PostgreSQL), its entry's global id.
DEBIT_ENTRY = changes.Returned("LoyaltyLedgerEntry", "entry_id")


def entry_change(entry: LedgerEntry, ledger_entry: str | changes.Returned
                 ) -> tuple[list[str | changes.Returned], list[changes.Event]]:
    """The objects and the points event of one entry (``ledger_entry``: its global id, or
    ``DEBIT_ENTRY`` before it is known)."""
    customer = global_id("Customer", entry.customer_id)
    event_type = "loyalty.points.redeemed" if entry.points < 0 else "loyalty.points.earned"
    return [customer, ledger_entry], [changes.Event(event_type, customer, {
        "customerId": customer, "ledgerEntryId": ledger_entry, "points": entry.points,
        "kind": entry.kind.value,
        "rewardId": None if entry.reward_id is None else global_id("LoyaltyReward",
                                                                   entry.reward_id)})]


def entry_recorded(entry: LedgerEntry, operation: str | None = None) -> None:
    """A redemption or an adjustment: one entry, and a points event for its member."""
    objects, events = entry_change(entry, global_id("LoyaltyLedgerEntry", entry.id))
    changes.record(operation, objects, None, events)  # type: ignore[arg-type]


def points_earned(credits: Mapping[int, int],
                  moves: Sequence[Mapping[str, object]] = ()) -> None:
    """Points earned by recorded interactions: one entry and one event per batch (a single
    interaction's event names its member). ``moves``: members the earning moved up a tier,
    in the same entry with their tier events (a single purchase's one ``record``)."""
    if not credits:
        return
    members = sorted(credits)
    first = global_id("Customer", members[0])
    data: dict[str, object] = {"points": sum(credits.values()), "members": len(members)}
    if len(members) == 1:
        data["customerId"] = first
    change: dict[str, list[object]] = {"pointsEarned": [None, data["points"]],
                                       "members": [None, len(members)]}
    if moves:
        change["tierChanges"] = [None, len(moves)]
    changes.record(None, [], change, [changes.Event("loyalty.points.earned", first, data),
                                      *_tier_events(moves)])


def _tier_events(moves: Sequence[Mapping[str, object]]) -> list[changes.Event]:
    def tier(value: object) -> str | None:
        return None if value is None else global_id(
            "LoyaltyTier", int(value))  # type: ignore[call-overload]

    events = []
    for move in moves:
        customer = global_id("Customer", int(move["customer_id"]))  # type: ignore[call-overload]
        events.append(changes.Event("loyalty.tier.changed", customer, {
            "customerId": customer, "fromTierId": tier(move["from_tier_id"]),
            "toTierId": tier(move["to_tier_id"]), "reason": move["reason"]}))
    return events


def tiers_changed(moves: Sequence[Mapping[str, object]]) -> None:
    """Members moved between tiers: one entry for the batch, one event per member (a
    subscriber acts on each member's new tier)."""
    if moves:
        changes.record(None, [], {"tierChanges": [None, len(moves)]}, _tier_events(moves))


def points_expired(lots: int, points: int, members: int) -> None:
    """One batch of the expiry job."""
    if lots:
        changes.record(None, [], {"lotsExpired": [None, lots], "pointsExpired": [None, points],
                                  "members": [None, members]})
