"""Core's root query fields."""

from __future__ import annotations

import contextvars
import datetime as dt
import enum
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import graphene
from graphene import relay
from graphene.types.unmountedtype import UnmountedType
from graphene.utils.str_converters import to_camel_case
from graphql import GraphQLError
from sqlalchemy import ColumnElement, func, literal_column, select

from api.authorization import node_scope
from api.loaders import CustomerByIdLoader
from api.limits import REPORT_COST, SEARCH_COST, argument_searches, costly
from api.mutations import plain
from api.pagination import Page, bad_input, keyset_page, page_size
from api.types import (
    AUTHENTICATED, Agent as AgentType, AlertStatus, AlertType, CustomerAttributeDefinition,
    CustomerStatus, CustomerType, DuplicateGroup, InteractionKind, LifecycleStage, PluginInfo,
    connection, ctx, decode_global_id, forbidden, scoped, selected_fields,
)
from core.app import rapport
from core.auth import Principal
from core.db import MAX_ID, db
from core.errors import ErrorCode, UserError
from core.models import Agent, Alert, Customer, CustomerAttributeDefinition as AttributeRow
from core.services import customers as customer_service
from core.services.segments import (
    CustomerFilterField, customer_conditions, filter_cost, filter_fields, plugin_fields_used,
    validate_filter,
)


class AttributeCondition(graphene.InputObjectType):
    key = graphene.String(required=True)
    equals = graphene.types.generic.GenericScalar()
    in_ = graphene.List(graphene.NonNull(graphene.String), name="in")
    min = graphene.Float()
    max = graphene.Float()


class CustomerFilterBase(graphene.InputObjectType):
    """Core's fields of ``CustomerFilterInput``; the schema's type adds every enabled
    plugin's (``rapport_customer_filters``)."""

    class Meta:
        abstract = True

    search = graphene.String(description="Substring of the name (case and accents ignored).")
    email = graphene.String(description="The exact e-mail address (case and surrounding "
                                        "blanks ignored); e-mails are encrypted at rest, so "
                                        "there is no substring search.")
    phone = graphene.String(description="The exact phone number: its last ten digits are "
                                        "compared (at least 6 digits).")
    country = graphene.List(graphene.NonNull(graphene.String))
    region = graphene.List(graphene.NonNull(graphene.String))
    city = graphene.List(graphene.NonNull(graphene.String))
    gender = graphene.List(graphene.NonNull(graphene.String))
    education = graphene.List(graphene.NonNull(graphene.String))
    occupation = graphene.List(graphene.NonNull(graphene.String))
    income_band = graphene.List(graphene.NonNull(graphene.String))
    status = graphene.List(graphene.NonNull(CustomerStatus))
    lifecycle_stage = graphene.List(graphene.NonNull(LifecycleStage))
    tags_any = graphene.List(graphene.NonNull(graphene.String))
    tags_all = graphene.List(graphene.NonNull(graphene.String))
    attributes = graphene.List(graphene.NonNull(AttributeCondition))
    born_after = graphene.Date()
    born_before = graphene.Date()
    created_after = graphene.DateTime()
    created_before = graphene.DateTime()
    last_purchase_after = graphene.DateTime()
    last_purchase_before = graphene.DateTime()
    min_purchase_count = graphene.Int()
    max_purchase_count = graphene.Int()
    min_spend = graphene.Decimal(description="In the base currency (RAPPORT_BASE_CURRENCY).")
    max_spend = graphene.Decimal()
    owner_id = graphene.ID()


# --- CustomerFilterInput is built per schema (plugins add fields); refer to it lazily -----

_filter_input: contextvars.ContextVar[type[graphene.InputObjectType]] = contextvars.ContextVar(
    "rapport_customer_filter_input")


def build_filter_input(extra: Mapping[str, CustomerFilterField]
                       ) -> type[graphene.InputObjectType]:
    """The schema's ``CustomerFilterInput``: core's fields, then ``extra`` (by snake_case
    name) in name order.

    Graphene orders an input type's fields by when each field object was created, so the
    plugins' fields are mounted afresh here, in name order: otherwise the SDL's order
    would follow which plugin module happened to be imported first."""
    mounted = {}
    for name in sorted(extra):
        unmounted = extra[name].graphql_type
        mounted[name] = graphene.InputField(unmounted.get_type(), *unmounted.args,
                                            **unmounted.kwargs)
    return type("CustomerFilterInput", (CustomerFilterBase,), {
        "Meta": type("Meta", (), {"description": 'A segment: every condition given must hold '
                                                 '(lists mean "any of").'}),
        **mounted})


@contextmanager
def filter_input_of(input_type: type[graphene.InputObjectType]) -> Iterator[None]:
    """While a schema is built: ``CustomerFilterInput()`` fields and arguments mean it."""
    token = _filter_input.set(input_type)
    try:
        yield
    finally:
        _filter_input.reset(token)


def _schema_filter_input() -> type[graphene.InputObjectType]:
    return _filter_input.get()


class CustomerFilterInput(UnmountedType):
    """The customer filter as an argument or input field (``filter = CustomerFilterInput()``):
    the schema's type, with the enabled plugins' fields, resolved when the schema is built."""

    def get_type(self) -> Any:
        return _schema_filter_input


class CustomerOrderField(enum.Enum):
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    NAME = "name"


class OrderDirection(enum.Enum):
    ASC = "asc"
    DESC = "desc"


CustomerOrderFieldEnum = graphene.Enum.from_enum(CustomerOrderField)
OrderDirectionEnum = graphene.Enum.from_enum(OrderDirection)


class CustomerOrder(graphene.InputObjectType):
    field = CustomerOrderFieldEnum(required=True)
    direction = OrderDirectionEnum(default_value=OrderDirection.ASC.value)


def customer_filter_spec(raw: dict[str, Any] | None, principal: Principal) -> dict[str, Any]:
    """A ``CustomerFilterInput`` as the validated spec ``customer_conditions`` takes, or a
    ``UserError`` (fields relative to the filter: ``country.0``, ``ownerId``). For plugin
    fields that take a segment and report typed errors.

    A plugin's field needs its scope (``CustomerFilterField.scope``), also inside a filter
    the value carries (a saved segment's): the filter would reveal the plugin's data (who
    is in a segment). Without it the filter is refused with a FORBIDDEN ``GraphQLError``
    (variables are only known here, not at validation).
    """
    data = plain(raw or {})
    # Checked before validating, so a key without the scope learns nothing (not even
    # whether a segment exists); the filters a value carries once it is loaded.
    for name, field in filter_fields().items():
        if data.get(name) is not None:
            _need_scope(principal, name, field)
    for key in ("created_after", "created_before", "last_purchase_after",
                "last_purchase_before"):
        if data.get(key) is not None:
            data[key] = data[key].isoformat()
    for key in ("born_after", "born_before"):
        if data.get(key) is not None:
            data[key] = data[key].isoformat()
    for key in ("min_spend", "max_spend"):
        if data.get(key) is not None:
            data[key] = str(data[key])
    if data.get("owner_id") is not None:
        try:
            data["owner_id"] = decode_global_id(data["owner_id"], "Agent")
        except ValueError as exc:
            raise UserError.single(str(exc), ErrorCode.INVALID, "ownerId") from None
    for cond in data.get("attributes") or []:
        if "in_" in cond:
            cond["in"] = cond.pop("in_")
    spec = validate_filter(data)
    for field in plugin_fields_used(spec):
        _need_scope(principal, field.name, field)
    return spec


def _need_scope(principal: Principal, name: str, field: CustomerFilterField) -> None:
    if not principal.allows(field.scope):
        raise GraphQLError(f"Filtering customers on {to_camel_case(name)} needs the "
                           f"{field.scope} scope, which this API key lacks.",
                           extensions={"code": "FORBIDDEN"})


def count_selections(info: Any) -> int:
    """How many ``totalCount`` the current connection field selects (aliases apart,
    through fragments): a COUNT each."""
    return sum(field.name.value == "totalCount" for field in selected_fields(info))


def charge_filter(info: Any, spec: Mapping[str, Any], scans: int = 1) -> None:
    """Charge the request (``RequestContext.cost``) what a validated filter costs beyond
    what the document's cost counted for this field's arguments (a ``search`` there, or a
    variable that may hold one), for each of ``scans``: a saved segment's stored search is
    only known here. QUERY_TOO_COMPLEX past the cost limit, before the work is done."""
    extra = filter_cost(spec)
    if extra <= 0:
        return
    definition = info.parent_type.fields.get(info.field_name)
    counted = sum(argument_searches(node, definition.args) for node in info.field_nodes
                  ) if definition is not None else 0
    ctx(info).cost.charge((extra - counted * SEARCH_COST) * scans,
                          f"The customer filter of {info.field_name}")


def _filter_conditions(raw: dict[str, Any] | None, principal: Principal, info: Any = None,
                       scans: int = 1) -> list[ColumnElement[bool]]:
    try:
        spec = customer_filter_spec(raw, principal)
        if info is not None:
            charge_filter(info, spec, scans)
        return customer_conditions(spec)
    except UserError as exc:
        raise bad_input("; ".join(f"filter.{e.field}: {e.message}" if e.field else e.message
                                  for e in exc.errors)) from None


#: Python type of each sort value, so a cursor from another order is refused, not run.
_SORT_KINDS: dict[str, type] = {"created_at": dt.datetime, "updated_at": dt.datetime,
                                "name": str}

_SORT_COLUMNS: dict[str, ColumnElement[Any]] = {
    "created_at": Customer.created_at,
    "updated_at": Customer.updated_at,
    # A literal '' (not a bound parameter) so the expression matches the index
    # ix_customers_name_sort whatever plan PostgreSQL picks for a prepared statement.
    "name": func.coalesce(Customer.name_normalized, literal_column("''")),
}

#: A customer's cursor values in each order: the sort value as SQL computes it, and the id.
_SORT_KEYS: dict[str, Callable[[Customer], list[Any]]] = {
    "created_at": lambda c: [c.created_at, c.id],
    "updated_at": lambda c: [c.updated_at, c.id],
    "name": lambda c: [c.name_normalized or "", c.id],
}


def resolve_customers(root: Any, info: Any, first: int | None = None, after: str | None = None,
                      filter: dict[str, Any] | None = None, order_by: dict[str, Any] | None = None,
                      total: Callable[[], Any] | None = None) -> Page:
    """A page of customers; ``total``: how the caller counts them (a batched count)
    instead of a COUNT per ``totalCount``."""
    page_size(first)  # a bad size is reported before a bad filter
    scans = 1 + (count_selections(info) if total is None else 0)  # the page, each COUNT
    conditions = _filter_conditions(filter, ctx(info).principal, info, scans)
    order = plain(order_by or {})
    sort_key = order.get("field", "created_at")
    page = keyset_page(select(Customer).where(*conditions),
                       [_SORT_COLUMNS[sort_key], Customer.id], first, after,
                       kinds=(_SORT_KINDS[sort_key], int),
                       descending=order.get("direction", "asc") == "desc",
                       key=_SORT_KEYS[sort_key])
    if total is not None:
        page.total = total
    loader = ctx(info).loader(CustomerByIdLoader)
    for customer in page.nodes:  # nested ``customer`` fields reuse the page's rows
        loader.prime(customer.id, customer)
    return page


def _list_page(model: Any, conditions: list[Any], first: int | None, after: str | None) -> Page:
    """Newest first by id: the order of alerts and agents lists."""
    return keyset_page(select(model).where(*conditions), [model.id], first, after,
                       kinds=(int,), descending=True)


def resolve_node(root: Any, info: Any, id: str) -> Any:
    try:
        type_name, raw = relay.Node.resolve_global_id(info, id)
    except Exception:  # graphene raises a bare Exception for ids that are not base64 "T:id"
        raise bad_input(f"Not a node id: {id!r}.") from None
    graphene_type = info.schema.get_type(type_name or "")
    cls = getattr(graphene_type, "graphene_type", None)
    if (cls is None or not hasattr(cls, "get_node") or not str(raw).isdigit()
            or not 0 < int(raw) <= MAX_ID):
        raise bad_input(f"Not a node id: {id!r}.")
    # Checked before loading, so a key that may not read the type does not learn whether
    # the row exists; the type resolver of Node checks the value again (authorization.py).
    scope = node_scope(cls)
    if not ctx(info).principal.allows(scope):
        raise forbidden(scope)
    return cls.get_node(info, raw)


def resolve_customer(root: Any, info: Any, id: str) -> Any:
    try:
        return db.session.get(Customer, decode_global_id(id, "Customer"))
    except ValueError as exc:
        raise bad_input(str(exc)) from None


CustomerConnection = connection(CustomerType, "Customer")
AlertConnection = connection(AlertType, "Alert")


AgentConnection = connection(AgentType, "Agent")


def core_query_fields() -> dict[str, graphene.Field]:
    return {
        "node": scoped(graphene.Field(relay.Node, id=graphene.ID(required=True),
                                      resolver=resolve_node), AUTHENTICATED),
        "customers": scoped(graphene.Field(
            CustomerConnection, required=True, first=graphene.Int(), after=graphene.String(),
            filter=CustomerFilterInput(), order_by=CustomerOrder(),
            resolver=resolve_customers,
            description="Customers of a segment, in keyset pages of at most 100."),
            "customers:read"),
        "customer": scoped(graphene.Field(CustomerType, id=graphene.ID(required=True),
                                          resolver=resolve_customer), "customers:read"),
        "customerByExternalId": scoped(graphene.Field(
            CustomerType, args={"source": graphene.String(required=True),
                                "external_id": graphene.String(required=True)},
            resolver=lambda root, info, source, external_id:
            customer_service.find_by_external_id(source, external_id)), "customers:read"),
        "customerDuplicates": costly(scoped(graphene.Field(
            graphene.List(graphene.NonNull(DuplicateGroup)), required=True,
            first=graphene.Int(default_value=20),
            resolver=lambda root, info, first: customer_service.find_duplicates(
                page_size(first))), "customers:read"), REPORT_COST),
        "customerAttributes": scoped(graphene.Field(
            graphene.List(graphene.NonNull(CustomerAttributeDefinition)), required=True,
            resolver=lambda root, info: db.session.scalars(
                select(AttributeRow).order_by(AttributeRow.key)).all()), "customers:read"),
        "interactionKinds": scoped(graphene.Field(
            graphene.List(graphene.NonNull(InteractionKind)), required=True,
            resolver=lambda root, info: [InteractionKind(name=k, description=d) for k, d in
                                         sorted(rapport().interaction_kinds.items())]),
            AUTHENTICATED),
        "plugins": scoped(graphene.Field(graphene.List(graphene.NonNull(PluginInfo)),
                                         required=True,
                                         resolver=lambda root, info: rapport().plugins), AUTHENTICATED),
        "alerts": scoped(graphene.Field(
            AlertConnection, required=True, first=graphene.Int(), after=graphene.String(),
            status=AlertStatus(), kind=graphene.String(),
            resolver=lambda root, info, first=None, after=None, status=None, kind=None:
            _list_page(Alert, [c for c in (
                Alert.status == plain(status) if status is not None else None,
                Alert.kind == kind if kind else None) if c is not None], first, after)),
            "alerts:read"),
        "agents": scoped(graphene.Field(
            AgentConnection, required=True, first=graphene.Int(), after=graphene.String(),
            resolver=lambda root, info, first=None, after=None:
            _list_page(Agent, [], first, after)), "agents:read"),
    }
