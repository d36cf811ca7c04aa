"""What each staff role may do, as scopes; an agent's key never exceeds its role.

The table is written in scope patterns (``fnmatch``: ``*:read`` is every domain's read
scope) so a plugin's scopes fall under a role without editing this file. docs/security.md
("Identity and roles") shows the same table for people.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from core.models import AgentRole

ADMIN = "admin"

ROLE_SCOPES: dict[AgentRole, tuple[str, ...]] = {
    AgentRole.ADMIN: (ADMIN,),
    # Runs a team: reads and changes everything in the domains, merges, exports and
    # reassigns customers (hand-over to a colleague), reads the audit log; no erasure, no
    # API keys, no acting as others.
    AgentRole.TEAM_LEADER: ("*:read", "*:write", "customers:merge", "customers:export",
                            "customers:reassign"),
    # Owns customer relationships: their data, history, loyalty and churn work, and the
    # follow-up tasks of their at-risk customers.
    AgentRole.ACCOUNT_MANAGER: (
        "customers:read", "customers:write", "customers:export", "interactions:*",
        "loyalty:*", "churn:*", "segments:*", "surveys:read", "complaints:read",
        "alerts:read", "agents:read", "tasks:*",
    ),
    # Front line: customers' requests, complaints, points at the counter, surveys.
    AgentRole.SERVICE_REPRESENTATIVE: (
        "customers:read", "customers:write", "interactions:*", "complaints:*",
        "loyalty:read", "loyalty:write", "surveys:read", "surveys:write", "alerts:read",
        "agents:read", "tasks:*",
    ),
    # Diagnoses problems: reads the customer side, works complaints and alerts.
    AgentRole.TECHNICAL_SUPPORT: (
        "customers:read", "interactions:*", "complaints:*", "alerts:*", "agents:read",
        "jobs:read", "incidents:*",
    ),
}


def expand(scopes: Iterable[str], known: Iterable[str]) -> frozenset[str]:
    """The registered scopes ``scopes`` names (``admin`` names every one, itself included)."""
    wanted = list(scopes)
    registered = list(known)
    if ADMIN in wanted:
        return frozenset(registered) | {ADMIN}
    return frozenset(s for s in registered if any(fnmatchcase(s, p) for p in wanted))


def role_scopes(role: AgentRole | str, known: Iterable[str]) -> frozenset[str]:
    return expand(ROLE_SCOPES[AgentRole(role)], known)


def effective_scopes(key_scopes: Iterable[str], role: AgentRole | str,
                     known: Iterable[str]) -> frozenset[str]:
    """An agent key's scopes: what the key holds and the agent's role allows.

    Both sides are expanded first, so an ``admin`` key of a team leader holds the team
    leader's scopes, and only an admin's ``admin`` key keeps ``admin`` itself.
    """
    registered = list(known)
    return expand(key_scopes, registered) & role_scopes(role, registered)
