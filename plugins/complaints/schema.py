"""GraphQL: ``complaints``, ``complaint``, ``complaintStats``, the vocabularies,
``Customer.complaints`` and the mutations.

One ``transitionComplaint`` mutation moves a complaint along the workflow: ``to`` names
the transition and the flat optional fields carry its step data. ``Complaint.
availableTransitions`` tells a front end which moves are legal now and which fields each
requires, from the same table the service enforces (docs/complaints.md explains why).
"""

from __future__ import annotations

from typing import Any

import graphene
from graphene import relay
from graphene.types.generic import GenericScalar

from api import (
    CustomerType, RapportMutation, connection, ctx, domain, error_type, global_id,
    load_related, node_type, page_size, scoped,
)
from api.loaders import AgentByIdLoader, CustomerByIdLoader, InteractionByIdLoader
from api.limits import REPORT_COST, costly
from api.pagination import bad_input
from api.mutations import plain
from api.types import Agent, Interaction, decode_global_id
from core.db import utcnow
from core.errors import UserError, camel

from plugins.complaints import service, sla, stats, workflow
from plugins.complaints.config import CAUSES, complaint_settings
from plugins.complaints.errors import CODES
from plugins.complaints.loaders import (
    ComplaintByIdLoader, ComplaintCountByCustomerLoader, ComplaintsByCustomerLoader,
    ComplaintTimelineByComplaintLoader, NEWEST_FIRST,
)
from plugins.complaints.models import Complaint, ComplaintStatus, EntryKind, Severity

READ, WRITE = "complaints:read", "complaints:write"

ComplaintError = error_type("Complaint", CODES)
ComplaintStatusEnum = graphene.Enum.from_enum(ComplaintStatus, name="ComplaintStatus")
ComplaintSeverity = graphene.Enum.from_enum(Severity, name="ComplaintSeverity")
ComplaintTimelineKind = graphene.Enum.from_enum(EntryKind, name="ComplaintTimelineKind")
ComplaintTransition = graphene.Enum.from_enum(workflow.Transition, name="ComplaintTransition",
                                              description=(
    "A move of the workflow: a target status, or REOPENED (from FEEDBACK or CLOSED back to "
    "ANALYZING, counting a reopen)."))
ComplaintCause = graphene.Enum("ComplaintCause", [(c.upper(), c) for c in CAUSES])
ComplaintStatsGrouping = graphene.Enum(
    "ComplaintStatsGrouping", [(g.upper(), g) for g in stats.GROUPINGS])


def _agent(info: Any, agent_id: int | None) -> Any:
    return None if agent_id is None else ctx(info).loader(AgentByIdLoader).load(agent_id)


@domain("complaints")
class ComplaintSla(graphene.ObjectType):
    """Due times fixed at filing; breach computed now (met late, or unmet past due)."""

    first_response_due = graphene.DateTime(required=True)
    resolution_due = graphene.DateTime(required=True)
    first_response_breached = graphene.Boolean(required=True)
    resolution_breached = graphene.Boolean(required=True)
    breached = graphene.Boolean(required=True)


@domain("complaints")
class ComplaintTimelineEntry(graphene.ObjectType):
    kind = graphene.Field(ComplaintTimelineKind, required=True)
    occurred_at = graphene.DateTime(required=True)
    actor = graphene.Field(Agent)
    from_status = graphene.Field(ComplaintStatusEnum)
    to_status = graphene.Field(ComplaintStatusEnum)
    transition = graphene.String(description="The transition asked for (lowercase).")
    note = graphene.String()
    step_data = GenericScalar(required=True, description=(
        "What the step recorded: cause, rootCause, solution, satisfaction, reason; the "
        "assignees of an assignment; the evidence of an escalation."))

    @staticmethod
    def resolve_actor(root: Any, info: Any) -> Any:
        return _agent(info, root.actor_id)

    @staticmethod
    def resolve_step_data(root: Any, info: Any) -> dict[str, Any]:
        return service.step_data_json(root.step_data)


@domain("complaints")
class ComplaintTransitionOption(graphene.ObjectType):
    to = graphene.Field(ComplaintTransition, required=True)
    target_status = graphene.Field(ComplaintStatusEnum, required=True)
    requires = graphene.List(graphene.NonNull(graphene.String), required=True, description=(
        "Input fields transitionComplaint needs for this move."))
    accepts = graphene.List(graphene.NonNull(graphene.String), required=True, description=(
        "Optional input fields it also takes (besides note)."))


@domain("complaints")
@node_type(Complaint)
class ComplaintNode(graphene.ObjectType):
    """A customer's complaint and where it stands in the workflow."""

    class Meta:
        name = "Complaint"
        interfaces = (relay.Node,)

    customer = graphene.Field(CustomerType)
    type = graphene.String(required=True, description="A code of complaintTypes.")
    channel = graphene.String(required=True, description="A code of complaintChannels.")
    severity = graphene.Field(ComplaintSeverity, required=True)
    status = graphene.Field(ComplaintStatusEnum, required=True)
    subject = graphene.String(required=True)
    description = graphene.String()
    reference = graphene.String(description="Order, product... the complaint is about.")
    tags = graphene.List(graphene.NonNull(graphene.String), required=True)
    assignee = graphene.Field(Agent)
    cause = graphene.Field(ComplaintCause)
    root_cause = graphene.String()
    solution = graphene.String()
    rejection_reason = graphene.String()
    satisfaction = graphene.Int(description="The customer's satisfaction, 1-5, at FEEDBACK.")
    customer_resolved = graphene.Boolean(description="Whether the customer considers it "
                                                     "resolved.")
    reopen_count = graphene.Int(required=True)
    filed_at = graphene.DateTime(required=True)
    first_response_at = graphene.DateTime()
    resolved_at = graphene.DateTime(description="Entering FEEDBACK or REJECTED.")
    closed_at = graphene.DateTime()
    sla = graphene.Field(ComplaintSla, required=True)
    timeline = graphene.List(graphene.NonNull(ComplaintTimelineEntry), required=True,
                             description="Oldest first.")
    available_transitions = graphene.List(graphene.NonNull(ComplaintTransitionOption),
                                          required=True)
    interaction = graphene.Field(Interaction, description="The complaint as an interaction.")

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(ComplaintByIdLoader).load(int(id))

    @staticmethod
    def resolve_customer(root: Complaint, info: Any) -> Any:
        return ctx(info).loader(CustomerByIdLoader).load(root.customer_id)

    @staticmethod
    def resolve_assignee(root: Complaint, info: Any) -> Any:
        return _agent(info, root.assignee_id)

    @staticmethod
    def resolve_sla(root: Complaint, info: Any) -> Any:
        state = sla.state(root, utcnow())
        return ComplaintSla(first_response_due=state.first_response_due,
                            resolution_due=state.resolution_due,
                            first_response_breached=state.first_response_breached,
                            resolution_breached=state.resolution_breached,
                            breached=state.breached)

    @staticmethod
    def resolve_timeline(root: Complaint, info: Any) -> Any:
        return ctx(info).loader(ComplaintTimelineByComplaintLoader).load(root.id)

    @staticmethod
    def resolve_available_transitions(root: Complaint, info: Any) -> list[Any]:
        return [ComplaintTransitionOption(
            to=t, target_status=workflow.STEPS[t].target,
            requires=[camel(f) for f in workflow.STEPS[t].required],
            accepts=[camel(f) for f in workflow.OPTIONAL.get(t, ())])
            for t in workflow.available(root.status)]

    @staticmethod
    def resolve_interaction(root: Complaint, info: Any) -> Any:
        return load_related(info, InteractionByIdLoader, root.interaction_id)


ComplaintConnection = connection(ComplaintNode, "Complaint")


@domain("complaints")
class ComplaintVocabularyItem(graphene.ObjectType):
    code = graphene.String(required=True)
    description = graphene.String(required=True)


class ComplaintFilter(graphene.InputObjectType):
    status = graphene.List(graphene.NonNull(ComplaintStatusEnum))
    type = graphene.List(graphene.NonNull(graphene.String))
    severity = graphene.List(graphene.NonNull(ComplaintSeverity))
    overdue = graphene.Boolean(description="true: a target is unmet past its due time now.")
    customer_id = graphene.ID()
    assignee = graphene.ID(description="An Agent id.")
    filed_from = graphene.DateTime(name="from", description="Filed at or after.")
    filed_to = graphene.DateTime(name="to", description="Filed at or before.")


def _filter_input(raw: dict[str, Any] | None) -> dict[str, Any]:
    data = plain(raw or {})
    try:
        if data.get("customer_id") is not None:
            data["customer_id"] = decode_global_id(data["customer_id"], "Customer")
        if data.get("assignee") is not None:
            data["assignee_id"] = decode_global_id(data.pop("assignee"), "Agent")
    except ValueError as exc:
        raise bad_input(str(exc)) from None
    data.pop("assignee", None)
    return data


def resolve_complaints(root: Any, info: Any, first: int | None = None, after: str | None = None,
                       filter: dict[str, Any] | None = None) -> Any:
    page_size(first)  # a bad size is reported before a bad filter
    try:
        query = service.complaints_query(_filter_input(filter), utcnow())
    except UserError as exc:
        raise bad_input("; ".join(f"filter.{e.field}: {e.message}" for e in exc.errors)
                        ) from None
    return NEWEST_FIRST.query_page(query, first, after)


async def resolve_customer_complaints(root: Any, info: Any, first: int | None = None,
                                      after: str | None = None) -> Any:
    size = page_size(first)
    rows = await ctx(info).loader(ComplaintsByCustomerLoader, limit=size + 1,
                                  after=NEWEST_FIRST.decode(after)).load(root.id)
    count = ctx(info).loader(ComplaintCountByCustomerLoader)
    return NEWEST_FIRST.page(rows, size, after, lambda: count.load(root.id))


def resolve_complaint(root: Any, info: Any, id: str) -> Any:
    try:
        return ctx(info).loader(ComplaintByIdLoader).load(decode_global_id(id, "Complaint"))
    except ValueError as exc:
        raise bad_input(str(exc)) from None


# --- Statistics ----------------------------------------------------------------------------


@domain("complaints")
class ComplaintStatsGroup(graphene.ObjectType):
    """Complaints filed in the period, one group (or all of them). Durations in hours."""

    key = graphene.String(required=True, description=(
        "The type, channel or severity code, the agent's id (\"unassigned\"), the month "
        "(YYYY-MM), or \"total\"."))
    assignee = graphene.Field(Agent, description="With groupBy ASSIGNEE.")
    volume = graphene.Int(required=True)
    median_first_response_hours = graphene.Float()
    p90_first_response_hours = graphene.Float()
    median_resolution_hours = graphene.Float()
    p90_resolution_hours = graphene.Float()
    sla_compliance = graphene.Float(description=(
        "Share of complaints with no SLA target breached (as of now), 0-1."))
    reopen_rate = graphene.Float(description="Reopened / ever resolved, 0-1.")
    satisfaction = graphene.Float(description="Mean post-resolution satisfaction, 1-5.")
    satisfaction_responses = graphene.Int(required=True)

    @staticmethod
    def resolve_assignee(root: stats.GroupStats, info: Any) -> Any:
        return _agent(info, int(root.key)) if root.key.isdigit() else None


@domain("complaints")
class ComplaintStats(graphene.ObjectType):
    period_from = graphene.Date(required=True, name="from")
    period_to = graphene.Date(required=True, name="to")
    group_by = graphene.Field(ComplaintStatsGrouping, required=True)
    groups = graphene.List(graphene.NonNull(ComplaintStatsGroup), required=True)
    total = graphene.Field(ComplaintStatsGroup, required=True)


def resolve_complaint_stats(root: Any, info: Any, **args: Any) -> stats.ComplaintStatistics:
    group_by = args.get("group_by")
    raw = {"from": args["from_"], "to": args["to"]}
    if group_by is not None:
        raw["group_by"] = getattr(group_by, "value", group_by)
    try:
        return stats.complaint_stats(raw)
    except UserError as exc:
        raise bad_input("; ".join(f"{e.field}: {e.message}" for e in exc.errors)) from None


# --- Mutations -----------------------------------------------------------------------------


class FileComplaintInput(graphene.InputObjectType):
    customer_id = graphene.ID(required=True)
    type = graphene.String(required=True, description="A code of complaintTypes.")
    channel = graphene.String(required=True, description="A code of complaintChannels.")
    severity = ComplaintSeverity(description="Default MEDIUM; sets the SLA targets.")
    subject = graphene.String(required=True)
    description = graphene.String()
    reference = graphene.String(description="Order, product... the complaint is about.")
    assignee_id = graphene.ID(description="An Agent id.")
    tags = graphene.List(graphene.NonNull(graphene.String))
    filed_at = graphene.DateTime(description="When the customer complained; default now.")
    record_interaction = graphene.Boolean(description=(
        "Also record it as an interaction of kind complaint (default true)."))


class TransitionComplaintInput(graphene.InputObjectType):
    id = graphene.ID(required=True)
    to = ComplaintTransition(required=True)
    note = graphene.String(description="Any transition: shown in the timeline.")
    type = graphene.String(description="CONFIRMED: the confirmed type, if it changed.")
    cause = ComplaintCause(description="CONFIRMED (required).")
    root_cause = graphene.String(description="ANALYZING (required); REOPENED (optional).")
    solution = graphene.String(description="SOLUTION_PROPOSED (required).")
    satisfaction = graphene.Int(description="FEEDBACK (required): 1-5.")
    customer_resolved = graphene.Boolean(description=(
        "FEEDBACK (required): whether the customer considers it resolved."))
    reason = graphene.String(description="REJECTED and REOPENED (required).")


class AssignComplaintInput(graphene.InputObjectType):
    id = graphene.ID(required=True)
    assignee_id = graphene.ID(description="An Agent id; null unassigns. Required.")
    note = graphene.String()


class AddComplaintNoteInput(graphene.InputObjectType):
    id = graphene.ID(required=True)
    note = graphene.String(required=True)


def _actor(info: Any) -> int | None:
    return ctx(info).principal.agent_id  # type: ignore[no-any-return]


class FileComplaint(RapportMutation):
    class Arguments:
        input = FileComplaintInput(required=True)

    complaint = graphene.Field(ComplaintNode)
    scope = WRITE
    error_type = ComplaintError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> FileComplaint:
        input["customer_id"] = global_id(input, "customer_id", "Customer")
        if "assignee_id" in input:
            input["assignee_id"] = global_id(input, "assignee_id", "Agent", required=False)
        return cls(complaint=service.file_complaint(input, actor_id=_actor(info)))


class TransitionComplaint(RapportMutation):
    """Move a complaint one step; see ``Complaint.availableTransitions``."""

    class Arguments:
        input = TransitionComplaintInput(required=True)

    complaint = graphene.Field(ComplaintNode)
    scope = WRITE
    error_type = ComplaintError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> TransitionComplaint:
        input["id"] = global_id(input, "id", "Complaint")
        return cls(complaint=service.transition_complaint(input, actor_id=_actor(info)))


class AssignComplaint(RapportMutation):
    class Arguments:
        input = AssignComplaintInput(required=True)

    complaint = graphene.Field(ComplaintNode)
    scope = WRITE
    error_type = ComplaintError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> AssignComplaint:
        input["id"] = global_id(input, "id", "Complaint")
        if "assignee_id" in input:
            input["assignee_id"] = global_id(input, "assignee_id", "Agent", required=False)
        return cls(complaint=service.assign_complaint(input, actor_id=_actor(info)))


class AddComplaintNote(RapportMutation):
    class Arguments:
        input = AddComplaintNoteInput(required=True)

    complaint = graphene.Field(ComplaintNode)
    scope = WRITE
    error_type = ComplaintError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> AddComplaintNote:
        input["id"] = global_id(input, "id", "Complaint")
        entry = service.add_note(input, actor_id=_actor(info))
        return cls(complaint=ctx(info).loader(ComplaintByIdLoader).load(entry.complaint_id))


# --- What the plugin contributes -------------------------------------------------------------


def _vocabulary(registry: dict[str, str]) -> list[ComplaintVocabularyItem]:
    return [ComplaintVocabularyItem(code=c, description=d) for c, d in registry.items()]


def customer_fields() -> dict[str, graphene.Field]:
    return {"complaints": scoped(graphene.Field(
        ComplaintConnection, required=True, first=graphene.Int(description="At most 100."),
        after=graphene.String(), resolver=resolve_customer_complaints,
        description="The customer's complaints, newest first."), READ)}


def query_fields() -> dict[str, graphene.Field]:
    return {
        "complaints": scoped(graphene.Field(
            ComplaintConnection, required=True, first=graphene.Int(), after=graphene.String(),
            filter=ComplaintFilter(), resolver=resolve_complaints,
            description="Complaints, newest first, in keyset pages of at most 100."), READ),
        "complaint": scoped(graphene.Field(ComplaintNode, id=graphene.ID(required=True),
                                           resolver=resolve_complaint), READ),
        "complaintTypes": scoped(graphene.Field(
            graphene.List(graphene.NonNull(ComplaintVocabularyItem)), required=True,
            resolver=lambda root, info: _vocabulary(complaint_settings().types)), READ),
        "complaintChannels": scoped(graphene.Field(
            graphene.List(graphene.NonNull(ComplaintVocabularyItem)), required=True,
            resolver=lambda root, info: _vocabulary(complaint_settings().channels)), READ),
        "complaintStats": costly(scoped(graphene.Field(
            ComplaintStats, required=True, resolver=resolve_complaint_stats,
            args={"from_": graphene.Date(required=True, name="from"),
                  "to": graphene.Date(required=True),
                  "group_by": ComplaintStatsGrouping(description="Default TYPE.")},
            description="Complaints filed from..to (whole days, RAPPORT_TIMEZONE)."),
            READ), REPORT_COST),
    }


MUTATIONS: dict[str, type[RapportMutation]] = {
    "fileComplaint": FileComplaint, "transitionComplaint": TransitionComplaint,
    "assignComplaint": AssignComplaint, "addComplaintNote": AddComplaintNote,
}

NODE_TYPES = [ComplaintNode]
