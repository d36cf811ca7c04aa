"""The audit log in GraphQL: ``auditEntries(first, after, filter)``, needing ``audit:read``.

Entries are of the ``audit`` domain. The values inside ``changes`` are customer data: a
key without ``customers:read`` sees which fields changed, not their values (null).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import graphene
from graphene import relay
from graphene.types.generic import GenericScalar
from sqlalchemy import select

from api.authorization import domain
from api.mutations import plain
from api.pagination import Page, bad_input, keyset_page
from api.types import connection, ctx, node_type, scoped
from core import changes as audit
from core.db import db
from core.ids import decode_global_id
from core.models import AuditEntry as AuditRow, AuditObject


@domain("audit")
@node_type(AuditRow)
class AuditEntry(graphene.ObjectType):
    """One change: who made it (the actor of its credentials), what (operation, objects,
    changes), when and in which request. Bulk work has one entry per batch."""

    class Meta:
        interfaces = (relay.Node,)

    occurred_at = graphene.DateTime(required=True)
    actor = GenericScalar(required=True, description=(
        "{agentId, service, apiKeyPrefix, onBehalfOfAgentId, via}: the agent or service "
        "whose key made the change, the agent it acted for (X-Rapport-Agent), and through "
        "what (graphql, cli, job, scheduler, rule)."))
    operation = graphene.String(required=True, description=(
        "The mutation, CLI command or job kind."))
    object_ids = graphene.List(graphene.NonNull(graphene.ID), required=True)
    changes = GenericScalar(description=(
        "{field: [before, after]}; values are null for a key without customers:read, and "
        "\"[redacted]\" once the person was erased."))
    request_id = graphene.String(required=True)

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return db.session.get(AuditRow, int(id))

    @staticmethod
    def resolve_changes(root: AuditRow, info: Any) -> Any:
        if root.changes is None:
            return None
        if not ctx(info).principal.allows("customers:read"):
            return {name: [None, None] for name in root.changes}
        return {name: [audit.unseal(name, v) for v in pair]
                for name, pair in root.changes.items()}


AuditEntryConnection = connection(AuditEntry, "AuditEntry")


class AuditEntryFilterInput(graphene.InputObjectType):
    """Every condition given must hold."""

    object_id = graphene.ID(description="Entries naming this object (a global id).")
    actor_agent_id = graphene.ID(description=(
        "Entries by this agent: with the agent's own key, or by a service acting for it."))
    actor_service = graphene.String(description="Entries by the keys of this service "
                                                "(cli, scheduler, dev-admin, a key's name).")
    operation = graphene.String()
    from_ = graphene.DateTime(name="from", description="At or after this time.")
    to = graphene.DateTime(description="Before this time.")


def _conditions(spec: dict[str, Any]) -> list[Any]:
    conditions: list[Any] = []
    if spec.get("object_id") is not None:
        try:
            decode_global_id(spec["object_id"])
        except ValueError as exc:
            raise bad_input(f"filter.objectId: {exc}") from None
        conditions.append(AuditRow.id.in_(select(AuditObject.entry_id).where(
            AuditObject.object_id == spec["object_id"])))
    if spec.get("actor_agent_id") is not None:
        try:
            agent_id = decode_global_id(spec["actor_agent_id"], "Agent")[1]
        except ValueError as exc:
            raise bad_input(f"filter.actorAgentId: {exc}") from None
        conditions.append(AuditRow.actor_agent_id == agent_id)
    if spec.get("actor_service") is not None:
        conditions.append(AuditRow.actor_service == spec["actor_service"])
    if spec.get("operation") is not None:
        conditions.append(AuditRow.operation == spec["operation"])
    for key, op in (("from_", "__ge__"), ("to", "__lt__")):
        value = spec.get(key)
        if value is not None:
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone.utc)  # CONTRACTS: naive means UTC
            conditions.append(getattr(AuditRow.occurred_at, op)(value))
    return conditions


def resolve_audit_entries(root: Any, info: Any, first: int | None = None,
                          after: str | None = None, filter: Any = None) -> Page:
    """Newest first (by id: entries are appended in commit order within a transaction)."""
    conditions = _conditions(plain(filter or {}))
    return keyset_page(select(AuditRow).where(*conditions), [AuditRow.id], first, after,
                       kinds=(int,), descending=True)


def audit_query_fields() -> dict[str, graphene.Field]:
    return {
        "auditEntries": scoped(graphene.Field(
            AuditEntryConnection, required=True, first=graphene.Int(), after=graphene.String(),
            filter=AuditEntryFilterInput(), resolver=resolve_audit_entries,
            description="The audit log, newest first."), "audit:read"),
    }
