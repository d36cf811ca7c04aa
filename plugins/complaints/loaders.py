"""DataLoaders of the complaint types: one query per relation for a whole page."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from api import ModelByIdLoader, RapportLoader
from api.pagination import after_condition
from core.db import db

from plugins.complaints import service
from plugins.complaints.models import Complaint, TimelineEntry


class ComplaintByIdLoader(ModelByIdLoader):
    model = Complaint


class ComplaintTimelineByComplaintLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[list[TimelineEntry]]:
        found = service.timelines(keys)
        return [found.get(k, []) for k in keys]


class ComplaintsByCustomerLoader(RapportLoader):
    """Up to ``limit`` complaints per customer, newest first, after an optional cursor
    ``(filed_at, id)``: one ROW_NUMBER() query for the page of customers."""

    def load_batch(self, keys: list[int]) -> list[list[Complaint]]:
        conditions: list[Any] = [Complaint.customer_id.in_(keys)]
        after = self.params.get("after")
        if after is not None:
            conditions.append(after_condition([Complaint.filed_at, Complaint.id], list(after),
                                              descending=True))
        position = func.row_number().over(
            partition_by=Complaint.customer_id,
            order_by=(Complaint.filed_at.desc(), Complaint.id.desc())).label("position")
        ranked = select(Complaint.id, position).where(*conditions).subquery()
        found: dict[int, list[Complaint]] = defaultdict(list)
        for complaint in db.session.scalars(
                select(Complaint).join(ranked, ranked.c.id == Complaint.id)
                .where(ranked.c.position <= self.params["limit"])
                .order_by(Complaint.customer_id, Complaint.filed_at.desc(),
                          Complaint.id.desc())):
            found[complaint.customer_id].append(complaint)
        return [found.get(k, []) for k in keys]


class ComplaintCountByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[int]:
        counts = dict(db.session.execute(
            select(Complaint.customer_id, func.count()).where(Complaint.customer_id.in_(keys))
            .group_by(Complaint.customer_id)).all())
        return [counts.get(k, 0) for k in keys]
