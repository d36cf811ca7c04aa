"""DataLoaders of the care types: one query per relation for a whole page."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from api import ModelByIdLoader, RapportLoader
from api.pagination import after_condition
from core.db import db

from plugins.care.models import Rule, Task


class TaskByIdLoader(ModelByIdLoader):
    model = Task


class RuleByIdLoader(ModelByIdLoader):
    model = Rule


class TasksByCustomerLoader(RapportLoader):
    """Up to ``limit`` tasks per customer in due order, after an optional cursor
    ``(due_on, id)``: one ROW_NUMBER() query for the page of customers."""

    def load_batch(self, keys: list[int]) -> list[list[Task]]:
        conditions: list[Any] = [Task.customer_id.in_(keys)]
        after: tuple[dt.date, int] | None = self.params.get("after")
        if after is not None:
            conditions.append(after_condition([Task.due_on, Task.id], list(after),
                                              descending=False))
        position = func.row_number().over(
            partition_by=Task.customer_id, order_by=(Task.due_on, Task.id)).label("position")
        ranked = select(Task.id, position).where(*conditions).subquery()
        found: dict[int, list[Task]] = defaultdict(list)
        for task in db.session.scalars(
                select(Task).join(ranked, ranked.c.id == Task.id)
                .where(ranked.c.position <= self.params["limit"])
                .order_by(Task.customer_id, Task.due_on, Task.id)):
            if task.customer_id is not None:
                found[task.customer_id].append(task)
        return [found.get(k, []) for k in keys]


class TaskCountByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[int]:
        counts = dict(db.session.execute(
            select(Task.customer_id, func.count()).where(Task.customer_id.in_(keys))
            .group_by(Task.customer_id)).tuples().all())
        return [counts.get(k, 0) for k in keys]
