"""Core's own contributions, registered as a plugin through the same hooks a partner uses."""

from __future__ import annotations

from core.hookspecs import hookimpl

CORE_SCOPES = [
    ("customers:read", "Read customer profiles, segments and duplicates"),
    ("customers:write", "Create, update, merge, erase and export customers"),
    ("interactions:read", "Read interaction timelines"),
    ("interactions:write", "Record interactions"),
    ("agents:read", "Read staff members"),
    ("agents:write", "Create staff members"),
    ("alerts:read", "Read alerts"),
    ("alerts:write", "Acknowledge alerts"),
    ("admin", "Everything, including API keys and plugin settings"),
]

CORE_INTERACTION_KINDS = [
    ("purchase", "The customer bought something (amount and currency required)"),
    ("refund", "Money returned to the customer; refers to the purchase it reverses"),
    ("call", "A phone call with the customer"),
    ("email", "An e-mail exchanged with the customer"),
    ("visit", "A visit in person (store, branch, site)"),
    ("service", "A service or after-sales intervention"),
    ("chat", "A chat or messaging conversation"),
    ("note", "A note written by staff"),
]

#: Kinds whose ``amount`` is required: they move money.
MONETARY_KINDS = frozenset({"purchase", "refund"})


@hookimpl
def rapport_register_scopes() -> list[tuple[str, str]]:
    return CORE_SCOPES


@hookimpl
def rapport_interaction_kinds() -> list[tuple[str, str]]:
    return CORE_INTERACTION_KINDS
