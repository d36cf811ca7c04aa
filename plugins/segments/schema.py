"""GraphQL: ``segments``, ``segment``, ``Customer.valueTier`` and the segment mutations.

Every type belongs to the ``segments`` domain. The filter fields ``segment`` and
``valueTier`` of ``CustomerFilterInput`` come from ``filters.py`` through the core hook.
"""

from __future__ import annotations

from typing import Any

import graphene
from graphene import relay
from graphene.types.generic import GenericScalar
from graphene.utils.str_converters import to_camel_case
from graphql import GraphQLEnumType, GraphQLError, GraphQLSchema, get_named_type
from sqlalchemy import and_, func, select, true

from api import (
    Money, RapportLoader, RapportMutation, connection, ctx, domain, error_type, global_id,
    node_type, scoped,
)
from api.limits import COUNT_COST, costly
from api.pagination import Page, bad_input, keyset_page, page_size
from api.queries import (
    CustomerConnection, CustomerFilterInput, customer_filter_spec, resolve_customers,
)
from api.types import decode_global_id, forbidden, selected_names
from core.app import rapport
from core.db import db
from core.errors import ErrorCode, UserError
from core.ids import global_id as encode_id
from core.models import Customer
from core.services.segments import customer_conditions, filter_cost, plugin_fields_used
from core.money import quantize

from plugins.segments import service
from plugins.segments.filters import ValueTierEnum, load_segment_filter
from plugins.segments.models import Segment as SegmentRow, Tier, ValueTier
from plugins.segments.service import CYCLE

READ, WRITE = "segments:read", "segments:write"

SegmentError = error_type("Segment", [CYCLE])


def filter_json(stored: dict[str, Any], schema: GraphQLSchema) -> dict[str, Any]:
    """A stored filter as a client sends it in variables: camelCase keys, global ids, the
    names of enum values (``ACTIVE``, not ``active``)."""
    input_type = schema.get_type("CustomerFilterInput")
    fields = getattr(input_type, "fields", {})
    shown: dict[str, Any] = {}
    for key, value in stored.items():
        name = to_camel_case(key)
        field = fields.get(name)
        named = get_named_type(field.type) if field is not None else None
        if isinstance(named, GraphQLEnumType) and isinstance(value, list):
            names = {getattr(v.value, "value", v.value): n for n, v in named.values.items()}
            value = [names.get(item, item) for item in value]
        shown[name] = value
    if isinstance(shown.get("ownerId"), int):
        shown["ownerId"] = encode_id("Agent", shown["ownerId"])
    return shown


class CustomerCountBySegmentLoader(RapportLoader):
    """How many customers each segment holds, with the scopes its filter's plugin fields
    need: one statement per page of segments, one pass over the customers
    (``count(*) FILTER (WHERE <segment's conditions>)`` per segment). A segment whose
    filter no longer validates loads as its ``UserError``, one whose stored filter the
    request cannot pay for (``meter``: the request's ``CostMeter``) as the
    QUERY_TOO_COMPLEX error, each raised to that key's caller only."""

    def load_batch(self, keys: list[int]) -> list[Any]:
        meter = self.params["meter"]
        segments = {s.id: s for s in db.session.scalars(
            select(SegmentRow).where(SegmentRow.id.in_(keys)))}
        counts: dict[int, Any] = {}
        columns = []
        scopes: dict[int, set[str]] = {}
        for key in keys:
            if key not in segments:  # deleted since it was read (a later mutation field)
                counts[key] = UserError.single(
                    f"Segment {encode_id('Segment', key)} was deleted.", ErrorCode.NOT_FOUND,
                    "id")
                continue
            try:
                spec = load_segment_filter(segments[key])
            except UserError as exc:
                counts[key] = exc
                continue
            try:  # what its stored filter holds (a search), nested segments included
                meter.charge(filter_cost(spec),
                             f"The filter of segment {encode_id('Segment', key)}")
            except GraphQLError as exc:
                counts[key] = exc
                continue
            scopes[key] = {field.scope for field in plugin_fields_used(spec)}
            conditions = customer_conditions(spec)
            columns.append(func.count().filter(and_(*conditions) if conditions else true())
                           .label(f"s{key}"))
        if columns:
            row = db.session.execute(select(*columns).select_from(Customer)).one()
            counts.update({int(name[1:]): (value, scopes[int(name[1:])])
                           for name, value in row._mapping.items()})
        return [counts[key] for key in keys]


class ValueTierByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[ValueTier | None]:
        found = {row.customer_id: row for row in db.session.scalars(
            select(ValueTier).where(ValueTier.customer_id.in_(keys)))}
        return [found.get(key) for key in keys]


@domain("segments")
@node_type(SegmentRow)
class Segment(graphene.ObjectType):
    """A saved customer filter. Its customers are worked out when asked (the filter is
    applied to today's data): a segment is a question, not a list."""

    class Meta:
        interfaces = (relay.Node,)

    name = graphene.String(required=True)
    description = graphene.String()
    filter = GenericScalar(required=True, description=(
        "The filter, as customers(filter:) takes it in variables (camelCase keys, global "
        "ids, enum value names)."))
    # Both are customer data (a saved filter on birth dates or attributes would otherwise
    # be an oracle for a key without customers:read): they need that scope too.
    # Each runs a COUNT (and a page query) of its own per segment: charged per value
    # (api/limits.py), so a page of segments cannot run a hundred counts for nothing.
    customer_count = costly(scoped(graphene.Field(graphene.Int, description=(
        "Customers matching the filter now (null, with an error, when the filter no longer "
        "validates). Needs customers:read.")), "customers:read"), COUNT_COST)
    customers = costly(scoped(graphene.Field(
        CustomerConnection, required=True, first=graphene.Int(), after=graphene.String(),
        description="The customers matching the filter now, oldest first, in keyset pages "
                    "of at most 100. Needs customers:read."), "customers:read"), COUNT_COST)
    created_at = graphene.DateTime(required=True)
    updated_at = graphene.DateTime(required=True)

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return db.session.get(SegmentRow, int(id))

    @staticmethod
    def resolve_filter(root: SegmentRow, info: Any) -> dict[str, Any]:
        return filter_json(root.filter, info.schema)

    @staticmethod
    async def resolve_customer_count(root: SegmentRow, info: Any) -> int:
        return await segment_count(info, root.id)

    @staticmethod
    def resolve_customers(root: SegmentRow, info: Any, first: int | None = None,
                          after: str | None = None) -> Any:
        def total() -> Any:  # batched with the page's other segments (and customerCount)
            return segment_count(info, root.id)

        if after is None and selected_names(info) <= {"totalCount", "__typename"}:
            page_size(first)  # a bad size is an error all the same
            return Page(nodes=[], cursors=[], has_next_page=False, has_previous_page=False,
                        total=total)  # only counted: no page query per segment
        return resolve_customers(root, info, first=first, after=after,
                                 filter={"segment": encode_id("Segment", root.id)},
                                 total=total)


async def segment_count(info: Any, segment_id: int) -> int:
    """The segment's customers now, through the request's batched count: a bad stored
    filter is BAD_USER_INPUT, a plugin field of it this key may not use FORBIDDEN."""
    context = ctx(info)
    try:  # the loader's UserError (an exception in its results) comes back raised
        count, scopes = await context.loader(CustomerCountBySegmentLoader,
                                             meter=context.cost).load(segment_id)
    except UserError as exc:
        raise bad_input("; ".join(e.message for e in exc.errors)) from None
    missing = sorted(scope for scope in scopes if not context.principal.allows(scope))
    if missing:  # the filter names another plugin's field (as customers(filter:) does)
        raise forbidden(missing[0])
    return int(count)


@domain("segments")
class CustomerValueTier(graphene.ObjectType):
    """A customer's RFM figures and value tier from the last segments.tiers run."""

    tier = graphene.Field(ValueTierEnum, required=True)
    recency = graphene.Int(description="Whole days from the last purchase to the end of the "
                                       "window (null: no purchase in the window).")
    frequency = graphene.Int(required=True, description="Purchases in the window.")
    monetary = graphene.Field(Money, required=True, description=(
        "Spend on those purchases in the base currency (RAPPORT_BASE_CURRENCY), less the "
        "window's refunds in it; never below 0."))
    r_score = graphene.Int(description="1-5 (5: the most recent fifth); null without purchase.")
    f_score = graphene.Int(description="1-5 (5: the most frequent fifth).")
    m_score = graphene.Int(description="1-5 (5: the highest spending fifth).")
    as_of = graphene.Date(required=True, description="The window's last day.")
    window_days = graphene.Int(required=True)
    computed_at = graphene.DateTime(required=True)

    @staticmethod
    def resolve_tier(root: ValueTier, info: Any) -> Tier:
        return Tier(root.tier)

    @staticmethod
    def resolve_recency(root: ValueTier, info: Any) -> int | None:
        return root.recency_days

    @staticmethod
    def resolve_monetary(root: ValueTier, info: Any) -> Money:
        currency = rapport().settings.base_currency
        return Money(amount=quantize(root.monetary, currency), currency=currency)


SegmentConnection = connection(Segment, "Segment")


def resolve_segments(root: Any, info: Any, first: int | None = None, after: str | None = None
                     ) -> Any:
    return keyset_page(select(SegmentRow), [SegmentRow.id], first, after, kinds=(int,))


def resolve_segment(root: Any, info: Any, id: str) -> Any:
    try:
        return db.session.get(SegmentRow, decode_global_id(id, "Segment"))
    except ValueError as exc:
        raise bad_input(str(exc)) from None


# --- Mutations -------------------------------------------------------------------------------


def _filter_spec(info: Any, raw: Any) -> dict[str, Any]:
    try:
        return customer_filter_spec(raw, ctx(info).principal)
    except UserError as exc:
        raise UserError([e.prefixed("filter") for e in exc.errors]) from None


class CreateSegmentInput(graphene.InputObjectType):
    name = graphene.String(required=True, description="Unique (case ignored).")
    description = graphene.String()
    filter = CustomerFilterInput(required=True, description=(
        "Any customer filter but e-mail and phone (a stored filter is not encrypted); it "
        "may name another segment."))


class UpdateSegmentInput(graphene.InputObjectType):
    id = graphene.ID(required=True)
    name = graphene.String()
    description = graphene.String()
    filter = CustomerFilterInput(description="Replaces the whole filter.")


class DeleteSegmentInput(graphene.InputObjectType):
    id = graphene.ID(required=True)


class CreateSegment(RapportMutation):
    """Save a customer filter under a name."""

    class Arguments:
        input = CreateSegmentInput(required=True)

    segment = graphene.Field(Segment)
    scope = WRITE
    error_type = SegmentError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CreateSegment:
        spec = _filter_spec(info, input.pop("filter", None))
        return cls(segment=service.create_segment(input, spec))


class UpdateSegment(RapportMutation):
    """Rename, describe or refilter a segment (a filter naming a segment that contains
    this one is a CYCLE error)."""

    class Arguments:
        input = UpdateSegmentInput(required=True)

    segment = graphene.Field(Segment)
    scope = WRITE
    error_type = SegmentError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> UpdateSegment:
        input["id"] = global_id(input, "id", "Segment")
        raw = input.pop("filter", None)
        spec = _filter_spec(info, raw) if raw is not None else None
        return cls(segment=service.update_segment(input, spec))


class DeleteSegment(RapportMutation):
    """Delete a segment that no other segment names."""

    class Arguments:
        input = DeleteSegmentInput(required=True)

    deleted_id = graphene.ID()
    scope = WRITE
    error_type = SegmentError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> DeleteSegment:
        raw_id = input.get("id")
        input["id"] = global_id(input, "id", "Segment")
        service.delete_segment(input)
        return cls(deleted_id=raw_id)


def query_fields() -> dict[str, graphene.Field]:
    return {
        "segments": scoped(graphene.Field(
            SegmentConnection, required=True, first=graphene.Int(), after=graphene.String(),
            resolver=resolve_segments, description="Saved segments, oldest first."), READ),
        "segment": scoped(graphene.Field(Segment, id=graphene.ID(required=True),
                                         resolver=resolve_segment), READ),
    }


def customer_fields() -> dict[str, graphene.Field]:
    return {"valueTier": scoped(graphene.Field(
        CustomerValueTier, resolver=lambda root, info: ctx(info).loader(
            ValueTierByCustomerLoader).load(root.id),
        description="RFM figures and value tier (null before the first segments.tiers run "
                    "and for erased customers)."), READ)}


MUTATIONS: dict[str, type[RapportMutation]] = {
    "createSegment": CreateSegment, "updateSegment": UpdateSegment,
    "deleteSegment": DeleteSegment,
}

NODE_TYPES = [Segment]
