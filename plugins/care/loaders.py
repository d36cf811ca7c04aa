"""DataLoaders of the care types: one query per relation for a whole page."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from api import ModelByIdLoader, RapportLoader
from api.pagination import Keyset, rows_per_parent
from core.db import db

from plugins.care.models import Rule, Task


#: The order of task lists (all tasks, a customer's): soonest due first; the cursor holds
#: the day as its ordinal.
DUE_FIRST = Keyset((Task.due_on, Task.id), (dt.date, int))


class TaskByIdLoader(ModelByIdLoader):
    model = Task


class RuleByIdLoader(ModelByIdLoader):
    model = Rule


class TasksByCustomerLoader(RapportLoader):
    """Up to ``limit`` tasks per customer in due order, after an optional cursor
    ``(due_on, id)`` (``DUE_FIRST.decode``): one ROW_NUMBER() query for the page of
    customers."""

    def load_batch(self, keys: list[int]) -> list[list[Task]]:
        return rows_per_parent(Task, Task.customer_id, keys, DUE_FIRST, self.params["limit"],
                               self.params.get("after"))


class TaskCountByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[int]:
        counts = dict(db.session.execute(
            select(Task.customer_id, func.count()).where(Task.customer_id.in_(keys))
            .group_by(Task.customer_id)).tuples().all())
        return [counts.get(k, 0) for k in keys]
