"""Core GraphQL types: Customer, Interaction, Agent, Alert, errors, money, connections."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator

from typing import Any

import graphene
from graphene import relay
from graphene.types.generic import GenericScalar
from graphene.types.inputobjecttype import set_input_object_type_default_value
from graphql import FieldNode, FragmentSpreadNode, GraphQLError, InlineFragmentNode, Undefined

from api.authorization import AUTHENTICATED as AUTHENTICATED  # re-exported for plugins
from api.authorization import STRUCTURAL, domain, structural
from api.context import RequestContext
from api.loaders import (
    AgentByIdLoader, AlertByIdLoader, CustomerByIdLoader, ExternalIdsByCustomerLoader,
    InteractionByIdLoader, InteractionCountByCustomerLoader, InteractionRow,
    InteractionsByCustomerLoader, NEWEST_INTERACTIONS, RapportLoader, TagsByCustomerLoader,
)
from api.pagination import Page, page_size
from core import models
from core.db import MAX_ID
from core.errors import ErrorCode, camel
from core.money import quantize

# Input fields a client did not send stay absent (Undefined), so "set to null" and "leave
# unchanged" differ in updates. Here, not in api/__init__ (kept light for `rapport --help`):
# every schema is built from these types, so this runs before any input is read.
set_input_object_type_default_value(Undefined)

# --- Scopes carried by fields (the domains of types: api/authorization.py) ---------------


def scoped(field: graphene.Field, scope: str) -> graphene.Field:
    """Mark a root or contributed field with the scope a caller needs to select it."""
    field.rapport_scope = scope  # type: ignore[attr-defined]
    return field


# --- The Customer type is built per schema (plugins add fields); refer to it lazily ------

_customer_type: contextvars.ContextVar[type[graphene.ObjectType]] = contextvars.ContextVar(
    "rapport_customer_type")


def CustomerType() -> type[graphene.ObjectType]:  # noqa: N802 - used like a type
    """Lazy reference to the schema's Customer type, for use in ``Field(CustomerType)``."""
    return _customer_type.get()


# --- Errors -------------------------------------------------------------------------------


class Error(graphene.Interface):
    """A failure a person can act on. ``field`` is the input path, e.g. ``input.email``."""

    field = graphene.String()
    message = graphene.String(required=True)


_error_types: dict[str, type[graphene.ObjectType]] = {}
CORE_ERROR_CODES = [v for k, v in vars(ErrorCode).items() if k.isupper()]


def error_type(domain: str, codes: list[str] | tuple[str, ...] = ()) -> type[graphene.ObjectType]:
    """The ``<Domain>Error`` type with its ``<Domain>ErrorCode`` enum (core codes + ``codes``).

    Call it once per domain at import time; it returns the same class on every call.
    """
    if domain in _error_types:
        return _error_types[domain]
    members = list(dict.fromkeys([*CORE_ERROR_CODES, *codes]))
    enum = graphene.Enum(f"{domain}ErrorCode", [(c, c) for c in members])
    cls = type(f"{domain}Error", (graphene.ObjectType,), {
        "Meta": type("Meta", (), {"interfaces": (Error,),
                                  "description": f"An error of the {domain} domain."}),
        "code": graphene.Field(enum, required=True),
        "rapport_domain": STRUCTURAL,
    })
    _error_types[domain] = cls
    return cls


CustomerError = error_type("Customer", ["ERASED"])
InteractionError = error_type("Interaction")
AgentError = error_type("Agent")
AlertError = error_type("Alert")


# --- Connections ----------------------------------------------------------------------------


class Edge:
    """An edge of a ``Page``: its node, and its cursor encoded only if it is selected."""

    __slots__ = ("_cursors", "_index", "node")

    def __init__(self, cursors: Any, index: int, node: Any):
        self._cursors = cursors
        self._index = index
        self.node = node

    @property
    def cursor(self) -> str:
        return self._cursors[self._index]  # type: ignore[no-any-return]


def connection(node: Any, name: str) -> type[graphene.ObjectType]:
    """``<name>Connection`` with edges, pageInfo and totalCount, resolved from a ``Page``."""
    edge = type(f"{name}Edge", (graphene.ObjectType,), {
        "cursor": graphene.String(required=True),
        "node": graphene.Field(node, required=True),
        "rapport_domain": STRUCTURAL,
    })

    def resolve_edges(root: Page, info: Any) -> list[Edge]:
        cursors = root.cursors
        return [Edge(cursors, i, n) for i, n in enumerate(root.nodes)]

    def resolve_page_info(root: Page, info: Any) -> relay.PageInfo:
        return relay.PageInfo(
            has_next_page=root.has_next_page, has_previous_page=root.has_previous_page,
            start_cursor=root.cursors[0] if root.cursors else None,
            end_cursor=root.cursors[-1] if root.cursors else None)

    return type(f"{name}Connection", (graphene.ObjectType,), {
        "edges": graphene.List(graphene.NonNull(edge), required=True),
        "page_info": graphene.Field(relay.PageInfo, required=True),
        "total_count": graphene.Int(required=True),
        "resolve_edges": staticmethod(resolve_edges),
        "resolve_page_info": staticmethod(resolve_page_info),
        "resolve_total_count": staticmethod(lambda root, info: root.total()),
        "rapport_domain": STRUCTURAL,
    })


def ctx(info: Any) -> RequestContext:
    return info.context  # type: ignore[no-any-return]


def selected_fields(info: Any, *, deep: bool = False) -> Iterator[FieldNode]:
    """The fields selected on the current field's result (through inline fragments and
    named fragments, each named fragment once); ``deep``: at every depth below it too."""
    seen: set[str] = set()
    stack = [node.selection_set for node in info.field_nodes if node.selection_set]
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FieldNode):
                yield selection
                if deep and selection.selection_set is not None:
                    stack.append(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                stack.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = info.fragments.get(selection.name.value)
                if fragment is not None and selection.name.value not in seen:
                    seen.add(selection.name.value)
                    stack.append(fragment.selection_set)


def selected_names(info: Any) -> frozenset[str]:
    """The names of every field selected below the current one (any depth, through
    fragments), worked out once per request and field node: loaders read only the
    columns those fields need."""
    memo = ctx(info).memo
    key = ("selected", *map(id, info.field_nodes))
    found = memo.get(key)
    if found is None:
        found = memo[key] = frozenset(f.name.value for f in selected_fields(info, deep=True))
    return found  # type: ignore[no-any-return]


def load_related(info: Any, loader: type[RapportLoader], key: Any) -> Any:
    """The row a nullable reference points to, through the request's ``loader``; None when
    the reference is empty (no query)."""
    return None if key is None else ctx(info).loader(loader).load(key)


def node_type(model: type, rows: tuple[type, ...] = ()) -> Callable[[type], type]:
    """Class decorator for a ``Node`` type served from rows of ``model``: tells GraphQL
    which type an ORM row is when it comes back through the ``Node`` interface. What
    ``node(id:)`` needs to return it is the read scope of the type's ``@domain``.
    ``rows``: classes of plain rows (not ORM objects) a loader serves the type with.
    """
    if isinstance(model, str):
        raise TypeError("node_type(model) takes the model only; declare what reading the "
                        "type needs with @api.domain('<domain>') (docs/writing_a_plugin.md).")

    def mark(cls: type) -> type:
        cls.is_type_of = classmethod(  # type: ignore[attr-defined]
            lambda klass, root, info: isinstance(root, (model, klass, *rows)))
        return cls

    return mark


# --- Core types -----------------------------------------------------------------------------


@structural
class Money(graphene.ObjectType):
    """An exact amount (a decimal string) and its ISO 4217 currency."""

    amount = graphene.Decimal(required=True)
    currency = graphene.String(required=True)


CustomerStatus = graphene.Enum.from_enum(models.CustomerStatus)
LifecycleStage = graphene.Enum.from_enum(models.LifecycleStage)
AlertStatus = graphene.Enum.from_enum(models.AlertStatus)
AgentRole = graphene.Enum.from_enum(models.AgentRole)


@domain("agents")
@node_type(models.Agent)
class Agent(graphene.ObjectType):
    """A staff member: actor, assignee, customer owner."""

    class Meta:
        interfaces = (relay.Node,)

    name = graphene.String(required=True)
    email = graphene.String(required=True)
    team = graphene.String()
    active = graphene.Boolean(required=True)
    role = graphene.Field(lambda: AgentRole, required=True,
                          description="What the agent's own API keys may do at most.")

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(AgentByIdLoader).load(int(id))


@domain("customers")
class ExternalId(graphene.ObjectType):
    source = graphene.String(required=True)
    external_id = graphene.String(required=True)


@domain("interactions")
@node_type(models.Interaction, rows=(InteractionRow,))
class Interaction(graphene.ObjectType):
    """One event of a customer's history."""

    class Meta:
        interfaces = (relay.Node,)

    kind = graphene.String(required=True)
    channel = graphene.String()
    occurred_at = graphene.DateTime(required=True)
    amount = graphene.Field(Money)
    payload = GenericScalar(required=True)
    source = graphene.String()
    external_id = graphene.String()
    refers_to = graphene.Field(lambda: Interaction)
    customer = graphene.Field(CustomerType, required=True)
    agent = graphene.Field(Agent)
    recorded_at = graphene.DateTime(required=True)

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(InteractionByIdLoader).load(int(id))

    @staticmethod
    def resolve_amount(root: models.Interaction, info: Any) -> dict[str, Any] | None:
        if root.amount is None:
            return None
        # A dict for Money's default resolvers: a graphene instance costs ~2 us more.
        return {"amount": quantize(root.amount, root.currency), "currency": root.currency}

    @staticmethod
    def resolve_refers_to(root: models.Interaction, info: Any) -> Any:
        return load_related(info, InteractionByIdLoader, root.refers_to_id)

    @staticmethod
    def resolve_customer(root: models.Interaction, info: Any) -> Any:
        return ctx(info).loader(CustomerByIdLoader).load(root.customer_id)

    @staticmethod
    def resolve_agent(root: models.Interaction, info: Any) -> Any:
        return load_related(info, AgentByIdLoader, root.agent_id)


InteractionConnection = connection(Interaction, "Interaction")


class CustomerBase(graphene.ObjectType):
    """Core fields of Customer; the schema's Customer type adds every plugin's fields."""

    class Meta:
        abstract = True

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
        "The customer's own start date when it predates the record (else null)."))
    tenure_periods = graphene.Int(description="Renewal periods completed (contractual).")
    period = graphene.String(description="Length of a renewal period: month or year.")
    tags = graphene.List(graphene.NonNull(graphene.String), required=True)
    attributes = GenericScalar(required=True)
    lifecycle_stage = graphene.Field(LifecycleStage, required=True)
    status = graphene.Field(CustomerStatus, required=True)
    owner = graphene.Field(Agent)
    external_ids = graphene.List(graphene.NonNull(ExternalId), required=True)
    created_at = graphene.DateTime(required=True)
    updated_at = graphene.DateTime(required=True)
    interactions = graphene.Field(
        InteractionConnection, required=True,
        first=graphene.Int(description="Page size, at most 100 (default 20)."),
        after=graphene.String(),
        kinds=graphene.List(graphene.NonNull(graphene.String)),
        description="The customer's timeline, newest first.")

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(CustomerByIdLoader).load(int(id))

    @staticmethod
    def resolve_tags(root: models.Customer, info: Any) -> Any:
        return ctx(info).loader(TagsByCustomerLoader).load(root.id)

    @staticmethod
    def resolve_external_ids(root: models.Customer, info: Any) -> Any:
        return ctx(info).loader(ExternalIdsByCustomerLoader).load(root.id)

    @staticmethod
    def resolve_attributes(root: models.Customer, info: Any) -> Any:
        return root.attributes or {}

    @staticmethod
    def resolve_owner(root: models.Customer, info: Any) -> Any:
        return load_related(info, AgentByIdLoader, root.owner_id)

    @staticmethod
    async def resolve_interactions(root: models.Customer, info: Any, first: int | None = None,
                                   after: str | None = None, kinds: list[str] | None = None
                                   ) -> Page:
        size = page_size(first)
        after_key = NEWEST_INTERACTIONS.decode(after)
        kinds_key = tuple(sorted(kinds)) if kinds else None
        rows = await ctx(info).loader(
            InteractionsByCustomerLoader, limit=size + 1, after=after_key, kinds=kinds_key,
            fields=selected_names(info)).load(root.id)
        count = ctx(info).loader(InteractionCountByCustomerLoader, kinds=kinds_key)
        return NEWEST_INTERACTIONS.page(rows, size, after, lambda: count.load(root.id))


@domain("alerts")
@node_type(models.Alert)
class AlertType(graphene.ObjectType):
    class Meta:
        name = "Alert"
        interfaces = (relay.Node,)

    kind = graphene.String(required=True)
    severity = graphene.String(required=True)
    source = graphene.String(required=True, description="The plugin that raised it.")
    evidence = GenericScalar(required=True)
    status = graphene.Field(AlertStatus, required=True)
    customer = graphene.Field(CustomerType)
    raised_at = graphene.DateTime(required=True)
    acknowledged_at = graphene.DateTime()
    acknowledged_by = graphene.Field(Agent)

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(AlertByIdLoader).load(int(id))

    @staticmethod
    def resolve_evidence(root: models.Alert, info: Any) -> dict[str, Any]:
        # Alerts raised before evidence was written in camelCase show the same keys.
        return {camel(k): v for k, v in (root.evidence or {}).items()}

    @staticmethod
    def resolve_customer(root: models.Alert, info: Any) -> Any:
        return load_related(info, CustomerByIdLoader, root.customer_id)

    @staticmethod
    def resolve_acknowledged_by(root: models.Alert, info: Any) -> Any:
        return load_related(info, AgentByIdLoader, root.acknowledged_by_id)


@structural
class PluginInfo(graphene.ObjectType):
    name = graphene.String(required=True)
    version = graphene.String(required=True)
    enabled = graphene.Boolean(required=True)
    reason = graphene.String(description="Why the plugin is not enabled.")
    install_hint = graphene.String(description="The command that makes it available.")
    hooks = graphene.List(graphene.NonNull(graphene.String), required=True)


@structural
class InteractionKind(graphene.ObjectType):
    name = graphene.String(required=True)
    description = graphene.String(required=True)


@domain("customers")
class CustomerAttributeDefinition(graphene.ObjectType):
    key = graphene.String(required=True)
    type = graphene.String(required=True)
    label = graphene.String(required=True)
    categories = graphene.List(graphene.NonNull(graphene.String))

    @staticmethod
    def resolve_type(root: models.CustomerAttributeDefinition, info: Any) -> str:
        return root.type.value


@domain("customers")
class DuplicateGroup(graphene.ObjectType):
    """Customers that are probably one person, and why."""

    reason = graphene.String(required=True, description="email, phone or name_city")
    score = graphene.Float(required=True)
    customers = graphene.List(graphene.NonNull(CustomerType), required=True)

    @staticmethod
    def resolve_customers(root: Any, info: Any) -> Any:
        return ctx(info).loader(CustomerByIdLoader).load_many(root.customer_ids)


def decode_global_id(value: str, expected: str) -> int:
    """The database id behind a global id of type ``expected``; ValueError if it is not one."""
    try:
        type_name, raw = relay.Node.resolve_global_id(None, value)
        number = int(raw)
        if type_name != expected or not 0 < number <= MAX_ID:
            raise ValueError
        return number
    except Exception:
        raise ValueError(f"Not a {expected} id: {value!r}.") from None


def forbidden(scope: str) -> GraphQLError:
    return GraphQLError(f"This API key lacks the {scope} scope.",
                        extensions={"code": "FORBIDDEN"})


