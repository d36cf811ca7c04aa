"""DataLoaders: one batched query per relation per request (``<Target>By<Key>Loader``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, ClassVar

from aiodataloader import DataLoader
from sqlalchemy import func, select

from api.pagination import after_condition
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


class InteractionsByCustomerLoader(RapportLoader):
    """Up to ``limit`` interactions per customer, newest first, after an optional cursor.

    One query for the whole page of customers: ROW_NUMBER() over each customer's events.
    Params: ``limit`` (page size + 1), ``kinds``, ``after`` (occurred_at, id) or None.
    """

    def load_batch(self, keys: list[int]) -> list[list[Interaction]]:
        limit: int = self.params["limit"]
        after = self.params.get("after")
        conditions = [Interaction.customer_id.in_(keys),
                      *_interaction_filter(self.params.get("kinds"))]
        if after is not None:
            conditions.append(after_condition([Interaction.occurred_at, Interaction.id],
                                              list(after), descending=True))
        position = func.row_number().over(
            partition_by=Interaction.customer_id,
            order_by=(Interaction.occurred_at.desc(), Interaction.id.desc())).label("position")
        ranked = select(Interaction.id, position).where(*conditions).subquery()
        stmt = (select(Interaction).join(ranked, ranked.c.id == Interaction.id)
                .where(ranked.c.position <= limit)
                .order_by(Interaction.customer_id, Interaction.occurred_at.desc(),
                          Interaction.id.desc()))
        found: dict[int, list[Interaction]] = defaultdict(list)
        for row in db.session.scalars(stmt):
            found[row.customer_id].append(row)
        return [found.get(k, []) for k in keys]


class InteractionCountByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[int]:
        stmt = (select(Interaction.customer_id, func.count()).where(
            Interaction.customer_id.in_(keys), *_interaction_filter(self.params.get("kinds")))
            .group_by(Interaction.customer_id))
        counts = dict(db.session.execute(stmt).all())
        return [counts.get(k, 0) for k in keys]
