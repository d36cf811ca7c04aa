"""DataLoaders: one batched query per relation per request (``<Target>By<Key>Loader``)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict, namedtuple
from collections.abc import Sequence
from typing import Any, ClassVar

from aiodataloader import DataLoader
from sqlalchemy import ARRAY, BigInteger, bindparam, func, select, true

from api.pagination import Keyset
from core.db import db
from core.models import Agent, Alert, Customer, CustomerExternalId, CustomerTag, Interaction


class RapportLoader(DataLoader):
    """Base of our loaders: keyword parameters become ``self.params`` (page size, filters)."""

    def __init__(self, **params: Any):
        super().__init__()
        self.params = params

    async def batch_load_fn(self, keys: Sequence[Any]) -> list[Any]:
        return self.load_batch(list(keys))

    def load_batch(self, keys: list[Any]) -> list[Any]:
        raise NotImplementedError


class ModelByIdLoader(RapportLoader):
    """Rows of ``model`` by primary key; a missing row loads as None."""

    model: ClassVar[Any]

    def load_batch(self, keys: list[Any]) -> list[Any]:
        rows = db.session.scalars(select(self.model).where(self.model.id.in_(keys))).all()
        by_id = {row.id: row for row in rows}
        return [by_id.get(key) for key in keys]


class CustomerByIdLoader(ModelByIdLoader):
    model = Customer


class AgentByIdLoader(ModelByIdLoader):
    model = Agent


class InteractionByIdLoader(ModelByIdLoader):
    model = Interaction


class AlertByIdLoader(ModelByIdLoader):
    model = Alert


class TagsByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[list[str]]:
        tags: dict[int, list[str]] = defaultdict(list)
        for customer_id, tag in db.session.execute(
                select(CustomerTag.customer_id, CustomerTag.tag)
                .where(CustomerTag.customer_id.in_(keys)).order_by(CustomerTag.tag)):
            tags[customer_id].append(tag)
        return [tags.get(k, []) for k in keys]


class ExternalIdsByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[list[CustomerExternalId]]:
        found: dict[int, list[CustomerExternalId]] = defaultdict(list)
        for row in db.session.scalars(select(CustomerExternalId).where(
                CustomerExternalId.customer_id.in_(keys)).order_by(CustomerExternalId.source)):
            found[row.customer_id].append(row)
        return [found.get(k, []) for k in keys]


def _interaction_filter(kinds: tuple[str, ...] | None) -> list[Any]:
    return [Interaction.kind.in_(kinds)] if kinds else []


#: The columns of ``interactions`` each field of the GraphQL ``Interaction`` type reads
#: (tests/api/test_compiled_execution.py checks that every field is listed).
INTERACTION_FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id",), "kind": ("kind",), "channel": ("channel",),
    "occurredAt": ("occurred_at",), "amount": ("amount", "currency"),
    "payload": ("payload",), "source": ("source",), "externalId": ("external_id",),
    "refersTo": ("refers_to_id",), "customer": ("customer_id",), "agent": ("agent_id",),
    "recordedAt": ("recorded_at",),
}
#: Read whatever is selected: the key (customer), the order and cursor (occurred_at, id).
_ALWAYS = ("id", "customer_id", "occurred_at")
_COLUMN_ORDER = ("id", "customer_id", "kind", "channel", "occurred_at", "amount", "currency",
                 "source", "external_id", "refers_to_id", "agent_id", "recorded_at",
                 "payload")


def interaction_columns(field_names: frozenset[str] | None) -> tuple[str, ...]:
    """The columns to read for a selection whose field names (at any depth) are
    ``field_names``; None: every column."""
    if field_names is None:
        return _COLUMN_ORDER
    wanted = set(_ALWAYS)
    for name in field_names:
        wanted.update(INTERACTION_FIELD_COLUMNS.get(name, ()))
    return tuple(c for c in _COLUMN_ORDER if c in wanted)


class InteractionRow:
    """Base of the plain rows (no ORM identity map, no change tracking) the GraphQL
    ``Interaction`` type is served from: a named tuple of the columns the query reads,
    each converted by the column's own type (UTC datetimes, exact money, JSON) as the ORM
    would, built without a Python-level constructor (``tuple.__new__``)."""

    __slots__ = ()


_row_classes: dict[tuple[str, ...], type] = {}


def interaction_row_class(columns: tuple[str, ...]) -> Any:
    """The ``InteractionRow`` class with exactly ``columns`` (one per column set)."""
    found = _row_classes.get(columns)
    if found is None:
        found = _row_classes.setdefault(columns, type(
            "InteractionRow", (namedtuple("InteractionColumns", columns), InteractionRow),
            {"__slots__": ()}))
    return found


#: The order of a customer's interactions: newest first.
NEWEST_INTERACTIONS = Keyset((Interaction.occurred_at, Interaction.id), (dt.datetime, int),
                             descending=True)


class InteractionsByCustomerLoader(RapportLoader):
    """Up to ``limit`` interactions per customer, newest first, after an optional cursor,
    as ``InteractionRow``s.

    One query for the whole page of customers. On PostgreSQL a LATERAL join over the
    page's ids (one array parameter): for each
    customer an index range scan of ``ix_interactions_customer_time`` that stops after
    ``limit`` rows, whatever the table's size or a customer's history (a window over the
    page's rows can be planned as a scan of the whole table). Elsewhere (SQLite) one
    ROW_NUMBER() query over the page's customers. Params: ``limit`` (page size + 1),
    ``kinds``, ``after`` (``NEWEST_INTERACTIONS.decode``), ``fields``: the names of the fields
    selected below (any depth), whose columns alone are read (None: all columns).
    """

    def load_batch(self, keys: list[int]) -> list[list[InteractionRow]]:
        limit: int = self.params["limit"]
        after = self.params.get("after")
        names = interaction_columns(self.params.get("fields"))
        columns = [getattr(Interaction, name) for name in names]
        conditions = _interaction_filter(self.params.get("kinds"))
        if after is not None:
            conditions.append(NEWEST_INTERACTIONS.after(after))
        newest_first = NEWEST_INTERACTIONS.ordering()
        if db.session.get_bind().dialect.name == "postgresql":
            # One array parameter: the statement is the same for every page (cached,
            # prepared by the server).
            customers = select(func.unnest(bindparam(
                "customer_ids", keys, type_=ARRAY(BigInteger))).label("customer_id")
            ).subquery("page")
            per_customer = (select(*columns)
                            .where(Interaction.customer_id == customers.c.customer_id,
                                   *conditions)
                            .order_by(*newest_first).limit(limit).lateral("timeline"))
            stmt = (select(per_customer).select_from(customers.join(per_customer, true()))
                    .order_by(per_customer.c.customer_id, *NEWEST_INTERACTIONS.ordering(
                        [per_customer.c.occurred_at, per_customer.c.id])))
        else:
            position = func.row_number().over(partition_by=Interaction.customer_id,
                                              order_by=newest_first).label("position")
            ranked = select(*columns, position).where(
                Interaction.customer_id.in_(keys), *conditions).subquery("ranked")
            stmt = (select(*(ranked.c[c.key] for c in columns))
                    .where(ranked.c.position <= limit)
                    .order_by(ranked.c.customer_id, ranked.c.position))
        make = interaction_row_class(names)._make
        found: dict[int, list[Any]] = defaultdict(list)
        for row in map(make, db.session.execute(stmt)):
            found[row.customer_id].append(row)
        return [found.get(k, []) for k in keys]


class InteractionCountByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[int]:
        stmt = (select(Interaction.customer_id, func.count()).where(
            Interaction.customer_id.in_(keys), *_interaction_filter(self.params.get("kinds")))
            .group_by(Interaction.customer_id))
        counts = dict(db.session.execute(stmt).all())
        return [counts.get(k, 0) for k in keys]
