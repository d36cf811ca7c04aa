"""The mutation base class and core's mutations (customers, interactions, agents, alerts)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, ClassVar

import graphene
from graphene.types.generic import GenericScalar
from graphene.utils.str_converters import to_snake_case
from graphql import GraphQLObjectType, Undefined, get_named_type

from api.authorization import STRUCTURAL, read_scope, structural
from api.loaders import AgentByIdLoader, InteractionByIdLoader
from api.types import (
    Agent, AgentError, AgentRole, AlertError, AlertType, CustomerAttributeDefinition,
    CustomerError, CustomerType, Interaction, InteractionError, LifecycleStage, ctx,
    decode_global_id, forbidden,
)
from core import changes, context, ids
from core.errors import ErrorCode, FieldError, UserError, camel
from core.services import customers, interactions, staff, transaction

MAX_BATCH = 1000
#: Giving a customer a new owner moves their open tasks and follow-ups (care plugin).
REASSIGN_SCOPE = "customers:reassign"


def plain(value: Any) -> Any:
    """Graphene input objects to plain dicts/lists; fields the client did not send vanish."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items() if v is not Undefined}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


class RapportMutation(graphene.Mutation):
    """One mutation, one class: an ``input``, a ``scope``, a domain error type.

    Subclasses declare ``class Arguments: input = XInput(required=True)``, their payload
    fields, the ``scope`` and ``error_type`` class attributes, and implement ``perform``.
    The payload's ``errors: [XError!]!`` field is added from ``error_type``. A
    ``UserError`` raised by the service becomes those ``errors`` (paths prefixed with
    ``input``); nothing was written.
    """

    class Meta:
        abstract = True

    scope: ClassVar[str]
    error_type: ClassVar[type[graphene.ObjectType]]

    @classmethod
    def __init_subclass_with_meta__(cls, **options: Any) -> None:
        # The payload is structural: it is read with the mutation's scope, and each type
        # it leads to (the changed object) needs its own domain's read scope.
        cls.rapport_domain = STRUCTURAL
        error_type = cls.__dict__.get("error_type")
        if error_type is not None and "errors" not in cls.__dict__:
            cls.errors = graphene.List(graphene.NonNull(error_type), required=True)
        super().__init_subclass_with_meta__(**options)

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> RapportMutation:
        raise NotImplementedError

    @classmethod
    def mutate(cls, root: Any, info: Any, input: Any) -> RapportMutation:
        # One transaction around the service call and its audit entry: both commit, or
        # neither does. The service's own transaction() is an inner block of this one.
        try:
            with transaction(), context.use(operation=info.field_name):
                before = changes.recorded_count()
                payload = cls.perform(info, plain(input))
                if changes.recorded_count() == before:
                    objects = audited_objects(info, payload)
                    if objects or not getattr(payload, "errors", None):
                        changes.record(None, objects)
        except UserError as exc:
            return cls(errors=[cls.error(e.prefixed("input")) for e in exc.errors])
        if getattr(payload, "errors", None) is None:
            payload.errors = []
        return payload

    @classmethod
    def error(cls, error: FieldError) -> Any:
        return cls.error_type(field=error.field, message=error.message, code=error.code)


def audited_objects(info: Any, payload: Any) -> list[str]:
    """Global ids of the Node objects a payload returns (rows, or lists of rows): what a
    mutation's default audit entry names when its service recorded none."""
    payload_type = get_named_type(info.return_type)
    found: list[str] = []
    for name, field in payload_type.fields.items():
        node_type = get_named_type(field.type)
        if not isinstance(node_type, GraphQLObjectType) or not any(
                i.name == "Node" for i in node_type.interfaces):
            continue
        value = getattr(payload, to_snake_case(name), None)
        for row in value if isinstance(value, (list, tuple)) else [value]:
            pk = getattr(row, "id", None)
            if isinstance(pk, int):
                found.append(ids.global_id(node_type.name, pk))
    return found


def global_id(input: dict[str, Any], key: str, type_name: str, *, required: bool = True
              ) -> int | None:
    """Decode ``input[key]`` (a global id) or raise a ``UserError`` on the camelCase field."""
    value = input.pop(key, None)
    if value is None:
        if required:
            raise UserError.single("This field is required.", ErrorCode.REQUIRED, camel(key))
        return None
    try:
        return decode_global_id(value, type_name)
    except ValueError as exc:
        raise UserError.single(str(exc), ErrorCode.INVALID, camel(key)) from None


# --- Customers ------------------------------------------------------------------------------


class CustomerFieldsInput:
    name = graphene.String()
    email = graphene.String()
    phone = graphene.String()
    birth_date = graphene.Date()
    gender = graphene.String()
    education = graphene.String()
    occupation = graphene.String()
    income_band = graphene.String()
    country = graphene.String()
    region = graphene.String()
    city = graphene.String()
    customer_since = graphene.Date(description=(
        "The customer's own start (e.g. a contract's first day), when it predates the "
        "record: 00:00 of that day in RAPPORT_TIMEZONE; tenure counts from it."))
    tenure_periods = graphene.Int(description="Renewal periods completed (contractual "
                                              "businesses; the sBG churn model).")
    period = graphene.String(description="Length of a renewal period: month or year.")
    tags = graphene.List(graphene.NonNull(graphene.String))
    attributes = GenericScalar(description="Free-form attributes; a null value removes a key.")
    lifecycle_stage = LifecycleStage()
    owner_id = graphene.ID(description="The Agent who owns the relationship.")
    source = graphene.String(description="Source application of externalId (default: default).")
    external_id = graphene.String(description="The customer's id in the source application.")


class CreateCustomerInput(CustomerFieldsInput, graphene.InputObjectType):
    pass


class UpdateCustomerInput(CustomerFieldsInput, graphene.InputObjectType):
    id = graphene.ID(required=True)


class CreateCustomer(RapportMutation):
    class Arguments:
        input = CreateCustomerInput(required=True)

    customer = graphene.Field(CustomerType)
    scope = "customers:write"
    error_type = CustomerError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CreateCustomer:
        if "owner_id" in input:
            input["owner_id"] = global_id(input, "owner_id", "Agent", required=False)
        return cls(customer=customers.create_customer(input))


class UpdateCustomer(RapportMutation):
    class Arguments:
        input = UpdateCustomerInput(required=True)

    customer = graphene.Field(CustomerType)
    scope = "customers:write"
    error_type = CustomerError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> UpdateCustomer:
        customer_id = global_id(input, "id", "Customer")
        if "owner_id" in input:
            # A new owner takes the customer's open tasks and follow-ups (other domains):
            # the dedicated scope names that hand-over (CONTRACTS: cross-domain changes).
            if not ctx(info).principal.allows(REASSIGN_SCOPE):
                raise forbidden(REASSIGN_SCOPE)
            input["owner_id"] = global_id(input, "owner_id", "Agent", required=False)
        return cls(customer=customers.update_customer(customer_id, input))  # type: ignore[arg-type]


class MergeCustomersInput(graphene.InputObjectType):
    survivor_id = graphene.ID(required=True, description="The customer that remains.")
    merged_ids = graphene.List(graphene.NonNull(graphene.ID), required=True,
                               description="Customers merged into the survivor, then removed.")


class MergeCustomers(RapportMutation):
    """Merge duplicates: the survivor keeps every interaction and every plugin's data."""

    class Arguments:
        input = MergeCustomersInput(required=True)

    customer = graphene.Field(CustomerType)
    #: A merge moves every domain's data (interactions, loyalty balances, complaints...).
    scope = "customers:merge"
    error_type = CustomerError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> MergeCustomers:
        survivor = global_id(input, "survivor_id", "Customer")
        merged = []
        for index, value in enumerate(input.get("merged_ids", [])):
            try:
                merged.append(decode_global_id(value, "Customer"))
            except ValueError as exc:
                raise UserError.single(str(exc), ErrorCode.INVALID, f"mergedIds.{index}") from None
        return cls(customer=customers.merge_customers(survivor, merged))  # type: ignore[arg-type]


class CustomerIdInput(graphene.InputObjectType):
    id = graphene.ID(required=True)


class EraseCustomerInput(CustomerIdInput):
    pass


class EraseCustomer(RapportMutation):
    """Erase personal data everywhere (pseudonymisation); accounting facts stay anonymous."""

    class Arguments:
        input = EraseCustomerInput(required=True)

    customer = graphene.Field(CustomerType)
    report = GenericScalar(description="What core and each plugin did, by plugin name.")
    scope = "customers:erase"
    error_type = CustomerError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> EraseCustomer:
        result = customers.erase_customer(global_id(input, "id", "Customer"))  # type: ignore[arg-type]
        return cls(customer=result.customer, report=_camel_report(result.reports))


def _camel_report(reports: dict[str, Any]) -> dict[str, Any]:
    """The erasure reports as clients read every document: camelCase keys (and the core
    report's cleared fields by their GraphQL names)."""
    shown: dict[str, Any] = {}
    for plugin, report in reports.items():
        if not isinstance(report, dict):
            shown[plugin] = report
            continue
        shown[plugin] = {camel(k): v for k, v in report.items()}
        if plugin == "core" and isinstance(report.get("fields_cleared"), list):
            shown[plugin]["fieldsCleared"] = [camel(f) for f in report["fields_cleared"]]
    return shown


class ExportCustomerInput(CustomerIdInput):
    pass


class ExportCustomer(RapportMutation):
    """What is held about a customer as one JSON document: the sections (core customer
    data, interactions, each plugin's) this key may read; ``omitted`` names the others."""

    class Arguments:
        input = ExportCustomerInput(required=True)

    document = GenericScalar()
    scope = "customers:export"
    error_type = CustomerError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> ExportCustomer:
        principal = ctx(info).principal
        return cls(document=customers.export_customer(
            global_id(input, "id", "Customer"),  # type: ignore[arg-type]
            may_read=lambda domain: principal.allows(read_scope(domain))))


class DefineCustomerAttributeInput(graphene.InputObjectType):
    key = graphene.String(required=True)
    type = graphene.String(required=True, description="number, text, boolean, date or category")
    label = graphene.String(required=True)
    categories = graphene.List(graphene.NonNull(graphene.String))


class DefineCustomerAttribute(RapportMutation):
    class Arguments:
        input = DefineCustomerAttributeInput(required=True)

    attribute = graphene.Field(CustomerAttributeDefinition)
    scope = "customers:write"
    error_type = CustomerError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> DefineCustomerAttribute:
        return cls(attribute=staff.define_customer_attribute(input))


# --- Interactions ---------------------------------------------------------------------------


class RecordInteractionInput(graphene.InputObjectType):
    customer_id = graphene.ID(required=True)
    kind = graphene.String(required=True, description="See interactionKinds.")
    occurred_at = graphene.DateTime(required=True)
    channel = graphene.String()
    amount = graphene.Decimal(description="Positive; required for purchase and refund.")
    currency = graphene.String()
    payload = GenericScalar()
    source = graphene.String()
    external_id = graphene.String(description="With source: re-sending it records nothing new.")
    refers_to = graphene.ID(description="The interaction this one reverses or answers.")
    agent_id = graphene.ID()


def interaction_data(input: dict[str, Any]) -> dict[str, Any]:
    data = dict(input)
    data["customer_id"] = global_id(data, "customer_id", "Customer")
    if "refers_to" in data:
        data["refers_to_id"] = global_id(data, "refers_to", "Interaction", required=False)
    if "agent_id" in data:
        data["agent_id"] = global_id(data, "agent_id", "Agent", required=False)
    if data.get("occurred_at") is not None:
        data["occurred_at"] = data["occurred_at"].isoformat()
    if data.get("amount") is not None:
        data["amount"] = str(data["amount"])
    return data


class RecordInteraction(RapportMutation):
    class Arguments:
        input = RecordInteractionInput(required=True)

    interaction = graphene.Field(Interaction)
    scope = "interactions:write"
    error_type = InteractionError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> RecordInteraction:
        return cls(interaction=interactions.record_interaction(interaction_data(input)))


class RecordInteractionsInput(graphene.InputObjectType):
    interactions = graphene.List(graphene.NonNull(RecordInteractionInput), required=True,
                                 description=f"At most {MAX_BATCH} items.")
    partial = graphene.Boolean(
        default_value=False,
        description="Keep the valid items when some are invalid (default: all or nothing).")


class RecordInteractions(RapportMutation):
    """Record a batch: per-item errors carry the item index (``input.interactions.3.amount``)."""

    class Arguments:
        input = RecordInteractionsInput(required=True)

    interactions = graphene.List(Interaction, required=True, description=(
        "One entry per input item, in order: the recorded (or already known) interaction, "
        "or null for a rejected item."))
    recorded_count = graphene.Int(required=True)
    scope = "interactions:write"
    error_type = InteractionError

    @staticmethod
    def resolve_interactions(root: RecordInteractions, info: Any) -> list[Any]:
        return root.interactions or []  # type: ignore[return-value]

    @staticmethod
    def resolve_recorded_count(root: RecordInteractions, info: Any) -> int:
        return root.recorded_count or 0  # type: ignore[return-value]

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> RecordInteractions:
        items = input.get("interactions", [])
        if len(items) > MAX_BATCH:
            raise UserError.single(f"At most {MAX_BATCH} interactions per call; split the batch.",
                                   ErrorCode.TOO_MANY, "interactions")
        rows: list[dict[str, Any]] = []
        rejected: dict[int, list[FieldError]] = {}
        for index, item in enumerate(items):
            try:
                rows.append(interaction_data(item))
            except UserError as exc:
                rows.append({})
                rejected[index] = exc.errors
        try:
            result = interactions.record_interactions(
                rows, partial=bool(input.get("partial")), rejected=rejected)
        except interactions.BatchRejected as exc:
            raise UserError([e.prefixed("interactions") for e in exc.errors]) from None
        stored = {**result.recorded_ids, **result.existing_ids}
        loader = ctx(info).loader(InteractionByIdLoader)
        return cls(interactions=[loader.load(stored[i]) if i in stored else None
                                 for i in range(len(items))],
                   recorded_count=result.recorded,
                   errors=[cls.error(e.prefixed("input.interactions")) for e in result.errors])


# --- Staff and alerts -----------------------------------------------------------------------


class CreateAgentInput(graphene.InputObjectType):
    name = graphene.String(required=True)
    email = graphene.String(required=True)
    team = graphene.String()
    role = AgentRole(description="Default: SERVICE_REPRESENTATIVE. ADMIN needs the admin scope "
                                 "(NOT_ALLOWED).")


class CreateAgent(RapportMutation):
    class Arguments:
        input = CreateAgentInput(required=True)

    agent = graphene.Field(Agent)
    scope = "agents:write"
    error_type = AgentError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CreateAgent:
        return cls(agent=staff.create_agent(input, caller=_staff_caller(info)))


def _staff_caller(info: Any) -> staff.Caller:
    principal = ctx(info).principal
    return staff.Caller(agent_id=principal.agent_id, admin=principal.allows("admin"))


class UpdateAgentInput(graphene.InputObjectType):
    id = graphene.ID(required=True)
    name = graphene.String()
    team = graphene.String(description="null: no team.")
    role = AgentRole()
    active = graphene.Boolean(description=(
        "false: the agent's API keys and report links stop working at once; its customers "
        "keep it as owner until reassignCustomers gives them another."))


class UpdateAgent(RapportMutation):
    """Change a staff member; only the fields sent change. The last active admin agent
    can be neither deactivated nor given another role; an agent cannot change its own role
    or deactivate itself; giving or taking the ADMIN role, or changing an admin agent,
    needs the admin scope (all NOT_ALLOWED)."""

    class Arguments:
        input = UpdateAgentInput(required=True)

    agent = graphene.Field(Agent)
    scope = "agents:write"
    error_type = AgentError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> UpdateAgent:
        agent_id = global_id(input, "id", "Agent")
        return cls(agent=staff.update_agent(  # type: ignore[arg-type]
            agent_id, input, caller=_staff_caller(info)))


@structural
class OwnerAssignment(graphene.ObjectType):
    """How many customers a reassignment gave one new owner."""

    owner = graphene.Field(Agent, required=True)
    count = graphene.Int(required=True)

    @staticmethod
    def resolve_owner(root: tuple[int, int], info: Any) -> Any:
        return ctx(info).loader(AgentByIdLoader).load(root[0])

    @staticmethod
    def resolve_count(root: tuple[int, int], info: Any) -> int:
        return root[1]


class ReassignCustomersInput(graphene.InputObjectType):
    from_owner_id = graphene.ID(description="Move this agent's customers (all of them, or "
                                            "those of customerIds).")
    customer_ids = graphene.List(graphene.NonNull(graphene.ID), description=(
        f"Move these customers (at most {staff.MAX_REASSIGN_IDS}); with fromOwnerId, only "
        "those it owns."))
    to_owner_id = graphene.ID(description="The new owner: an active agent.")
    to_team = graphene.String(description=(
        "Or spread the customers over this team's active agents: each next customer to "
        "the agent holding the fewest customers (ties: the oldest agent)."))
    only_active = graphene.Boolean(description="Leave churned customers with their owner "
                                               "(default false). Erased ones never move.")


class ReassignCustomers(RapportMutation):
    """Give customers a new owner (an agent left, or a team is rebalanced); their open
    tasks and follow-ups with the previous owner move along (care plugin)."""

    class Arguments:
        input = ReassignCustomersInput(required=True)

    moved = graphene.Int(required=True, description="Customers that changed owner.")
    assignments = graphene.List(graphene.NonNull(OwnerAssignment), required=True,
                                description="Per new owner, by agent id.")
    scope = REASSIGN_SCOPE
    error_type = CustomerError

    @staticmethod
    def resolve_moved(root: ReassignCustomers, info: Any) -> int:
        return root.moved or 0  # type: ignore[return-value]

    @staticmethod
    def resolve_assignments(root: ReassignCustomers, info: Any) -> list[Any]:
        return root.assignments or []  # type: ignore[return-value]

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> ReassignCustomers:
        data: dict[str, Any] = {"only_active": bool(input.get("only_active"))}
        for key in ("from_owner_id", "to_owner_id"):
            if input.get(key) is not None:
                data[key] = global_id(input, key, "Agent")
        if input.get("to_team") is not None:
            data["to_team"] = input["to_team"]
        if input.get("customer_ids") is not None:
            data["customer_ids"] = []
            for index, value in enumerate(input["customer_ids"]):
                try:
                    data["customer_ids"].append(decode_global_id(value, "Customer"))
                except ValueError as exc:
                    raise UserError.single(str(exc), ErrorCode.INVALID,
                                           f"customerIds.{index}") from None
        result = staff.reassign_customers(data)
        return cls(moved=result.moved, assignments=list(result.counts.items()))


class AcknowledgeAlertInput(graphene.InputObjectType):
    id = graphene.ID(required=True)


class AcknowledgeAlert(RapportMutation):
    class Arguments:
        input = AcknowledgeAlertInput(required=True)

    alert = graphene.Field(AlertType)
    scope = "alerts:write"
    error_type = AlertError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> AcknowledgeAlert:
        alert_id = global_id(input, "id", "Alert")
        return cls(alert=staff.acknowledge_alert(alert_id,  # type: ignore[arg-type]
                                                 ctx(info).principal.agent_id))


CORE_MUTATIONS: dict[str, type[RapportMutation]] = {
    "createCustomer": CreateCustomer,
    "updateCustomer": UpdateCustomer,
    "mergeCustomers": MergeCustomers,
    "eraseCustomer": EraseCustomer,
    "exportCustomer": ExportCustomer,
    "defineCustomerAttribute": DefineCustomerAttribute,
    "recordInteraction": RecordInteraction,
    "recordInteractions": RecordInteractions,
    "createAgent": CreateAgent,
    "updateAgent": UpdateAgent,
    "reassignCustomers": ReassignCustomers,
    "acknowledgeAlert": AcknowledgeAlert,
}
