"""GraphQL of incidents: ``incidents``, ``incident``, ``openIncident``, ``advanceIncident``.
Every type belongs to the ``incidents`` domain; ``Incident.alert`` crosses into ``alerts``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import graphene
from graphene import relay
from graphene.types.generic import GenericScalar
from sqlalchemy import select

from api import (
    RapportMutation, connection, ctx, domain, error_type, global_id, load_related, node_type,
    scoped,
)
from api.loaders import AgentByIdLoader, AlertByIdLoader, ModelByIdLoader
from api.pagination import bad_input, keyset_page
from api.types import Agent, AlertType, decode_global_id

from plugins.care import incidents
from plugins.care.models import Incident, IncidentStage

READ, WRITE = "incidents:read", "incidents:write"

IncidentError = error_type("Incident", incidents.INCIDENT_ERROR_CODES)
IncidentStageEnum = graphene.Enum.from_enum(IncidentStage, name="IncidentStage")


class IncidentByIdLoader(ModelByIdLoader):
    model = Incident


@domain("incidents")
class IncidentTimelineEntry(graphene.ObjectType):
    """A stage entered: when, by whom, with what note."""

    stage = graphene.Field(IncidentStageEnum, required=True)
    at = graphene.DateTime(required=True)
    note = graphene.String()
    actor = GenericScalar(required=True)


@domain("incidents")
@node_type(Incident)
class IncidentNode(graphene.ObjectType):
    """A crisis handled in stages: WARNING -> RESPONSE -> RECOVERY -> REVIEW -> CLOSED."""

    class Meta:
        name = "Incident"
        interfaces = (relay.Node,)

    title = graphene.String(required=True)
    kind = graphene.String(required=True, description="The crisis type (the alert's kind).")
    severity = graphene.String(required=True)
    stage = graphene.Field(IncidentStageEnum, required=True)
    alert = graphene.Field(AlertType, description="The alert it was opened from.")
    owner = graphene.Field(Agent, description="Who leads the response.")
    timeline = graphene.List(graphene.NonNull(IncidentTimelineEntry), required=True)
    review = graphene.String(description="The post-crisis review (set when closed).")
    opened_at = graphene.DateTime(required=True)
    stage_changed_at = graphene.DateTime(required=True)
    closed_at = graphene.DateTime()

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(IncidentByIdLoader).load(int(id))

    @staticmethod
    def resolve_alert(root: Incident, info: Any) -> Any:
        return load_related(info, AlertByIdLoader, root.alert_id)

    @staticmethod
    def resolve_owner(root: Incident, info: Any) -> Any:
        return load_related(info, AgentByIdLoader, root.owner_id)

    @staticmethod
    def resolve_timeline(root: Incident, info: Any) -> list[IncidentTimelineEntry]:
        return [IncidentTimelineEntry(stage=IncidentStage(e["stage"]),
                                      at=dt.datetime.fromisoformat(e["at"]), note=e.get("note"),
                                      actor=e.get("actor") or {}) for e in root.timeline]


IncidentConnection = connection(IncidentNode, "Incident")


def resolve_incidents(root: Any, info: Any, first: int | None = None, after: str | None = None,
                      stage: Any = None) -> Any:
    query = select(Incident)
    if stage is not None:
        query = query.where(Incident.stage == IncidentStage(getattr(stage, "value", stage)))
    return keyset_page(query, [Incident.opened_at, Incident.id], first, after,
                       kinds=(dt.datetime, int), descending=True)


def resolve_incident(root: Any, info: Any, id: str) -> Any:
    try:
        return ctx(info).loader(IncidentByIdLoader).load(decode_global_id(id, "Incident"))
    except ValueError as exc:
        raise bad_input(str(exc)) from None


class OpenIncidentInput(graphene.InputObjectType):
    alert_id = graphene.ID(description="Open it from this alert (its kind and severity are "
                                       "the defaults).")
    title = graphene.String(description="Required without alertId.")
    kind = graphene.String(description="The crisis type; required without alertId.")
    severity = graphene.String(description="info, low, medium, high or critical; required "
                                           "without alertId.")
    owner_id = graphene.ID(description="The agent who leads the response.")
    note = graphene.String()


class AdvanceIncidentInput(graphene.InputObjectType):
    id = graphene.ID(required=True)
    note = graphene.String(description="What was done at the stage it leaves / found.")
    review = graphene.String(description="Required to close (from REVIEW): what the crisis "
                                         "plan should change.")


class OpenIncident(RapportMutation):
    """Open an incident at the WARNING stage, by hand or from a core alert."""

    class Arguments:
        input = OpenIncidentInput(required=True)

    incident = graphene.Field(IncidentNode)
    scope = WRITE
    error_type = IncidentError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> OpenIncident:
        input["alert_id"] = global_id(input, "alert_id", "Alert", required=False)
        input["owner_id"] = global_id(input, "owner_id", "Agent", required=False)
        return cls(incident=incidents.open_incident(input))


class AdvanceIncident(RapportMutation):
    """Move an incident to its next stage."""

    class Arguments:
        input = AdvanceIncidentInput(required=True)

    incident = graphene.Field(IncidentNode)
    scope = WRITE
    error_type = IncidentError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> AdvanceIncident:
        input["id"] = global_id(input, "id", "Incident")
        return cls(incident=incidents.advance_incident(input))


def query_fields() -> dict[str, graphene.Field]:
    return {
        "incidents": scoped(graphene.Field(
            IncidentConnection, required=True, first=graphene.Int(), after=graphene.String(),
            stage=IncidentStageEnum(), resolver=resolve_incidents,
            description="Incidents, newest first."), READ),
        "incident": scoped(graphene.Field(IncidentNode, id=graphene.ID(required=True),
                                          resolver=resolve_incident), READ),
    }


MUTATIONS: dict[str, type[RapportMutation]] = {
    "openIncident": OpenIncident, "advanceIncident": AdvanceIncident,
}

NODE_TYPES = [IncidentNode]
