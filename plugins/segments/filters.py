"""The plugin's fields of the core customer filter (``rapport_customer_filters``):
``segment`` (the customers of a saved segment) and ``value_tier`` (of these tiers).

A saved segment's filter may name another segment. Its value, once validated, is a
``SegmentRef`` carrying the named segment's own filter, validated in turn (so an invalid
or missing segment is a typed error, never a failing query); a segment met again on the
way, or nesting deeper than ``MAX_DEPTH``, is refused.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import graphene
from marshmallow import ValidationError, fields
from sqlalchemy import ColumnElement, and_, select, true

from core.db import db
from core.errors import ErrorCode, UserError
from core.ids import global_id, parse_id
from core.models import Customer
from core.services.segments import (
    CustomerFilterField, customer_conditions, filter_cost, validate_filter,
)

from plugins.segments.models import Segment, Tier, ValueTier

READ = "segments:read"
#: How deep segments may name segments (a named segment's filter is validated each time).
MAX_DEPTH = 5

ValueTierEnum = graphene.Enum.from_enum(Tier, name="ValueTier", description=(
    "A customer's value tier from RFM scores (docs/segments.md)."))

_expanding: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar(
    "segments_expanding", default=())


@contextmanager
def expanding(segment_id: int) -> Iterator[None]:
    """While a segment's own filter is validated: naming it again is a cycle."""
    token = _expanding.set((*_expanding.get(), segment_id))
    try:
        yield
    finally:
        _expanding.reset(token)


@dataclass(frozen=True)
class SegmentRef:
    """The validated value of ``segment``: the segment and its validated filter."""

    id: int
    name: str
    spec: dict[str, Any]

    def __str__(self) -> str:  # how reports name it
        return repr(self.name)

    def named(self) -> Iterator[int]:
        """This segment's id and every segment its filter names, however deep."""
        yield self.id
        inner = self.spec.get("segment")
        if isinstance(inner, SegmentRef):
            yield from inner.named()


def load_segment_filter(segment: Segment) -> dict[str, Any]:
    """``segment``'s stored filter, validated again: a ``UserError`` (INVALID, on
    ``segment``: a core code, so every report's error type knows it) when it no longer
    is (a field it names went away, a segment it names was deleted...)."""
    with expanding(segment.id):
        try:
            return validate_filter(segment.filter)
        except UserError as exc:
            reasons = "; ".join(f"{e.field}: {e.message}" if e.field else e.message
                                for e in exc.errors)
            raise UserError.single(
                f"The filter of segment {segment.name!r} ({global_id('Segment', segment.id)}) "
                f"is no longer valid ({reasons}); update or delete it.",
                ErrorCode.INVALID, "segment") from None


class SegmentField(fields.Field):
    """A saved segment: its global id (or its number, the CLI's form)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any
                     ) -> SegmentRef:
        if isinstance(value, SegmentRef):
            return value
        try:
            pk = parse_id(value, "Segment")
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        stack = _expanding.get()
        if pk in stack:
            raise ValidationError("This segment's filter leads back to itself.")
        if len(stack) >= MAX_DEPTH:
            raise ValidationError(f"Segments may name segments at most {MAX_DEPTH} deep.")
        segment = db.session.get(Segment, pk)
        if segment is None:
            raise UserError.single(f"No segment with id {global_id('Segment', pk)}.",
                                   ErrorCode.NOT_FOUND, "segment")
        return SegmentRef(segment.id, segment.name, load_segment_filter(segment))

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else global_id("Segment", value.id)


def segment_condition(ref: SegmentRef) -> ColumnElement[bool]:
    conditions = customer_conditions(ref.spec)
    return and_(*conditions) if conditions else true()


def value_tier_condition(tiers: list[Tier]) -> ColumnElement[bool]:
    if not tiers:
        return true()  # like core's list fields: an empty list asks for nothing
    return Customer.id.in_(select(ValueTier.customer_id).where(
        ValueTier.tier.in_(sorted({t.value for t in tiers}))))


FILTER_FIELDS = [
    CustomerFilterField(
        name="segment", field=SegmentField(), scope=READ, condition=segment_condition,
        nested=lambda ref: [ref.spec],
        # What the stored filter holds (a search...), the segments it names included.
        cost=lambda ref: filter_cost(ref.spec),
        graphql_type=graphene.ID(description=(
            "The customers of this saved segment (its id): its filter is applied (with "
            "the other conditions given). Needs segments:read."))),
    CustomerFilterField(
        name="value_tier", field=fields.List(fields.Enum(Tier, by_value=True)), scope=READ,
        condition=value_tier_condition,
        graphql_type=graphene.List(graphene.NonNull(ValueTierEnum), description=(
            "Customers whose value tier (the last segments.tiers run) is one of these. "
            "Needs segments:read."))),
]
