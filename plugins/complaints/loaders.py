"""DataLoaders of the complaint types: one query per relation for a whole page."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from api import ModelByIdLoader, RapportLoader
from api.pagination import Keyset, rows_per_parent
from core.db import db

from plugins.complaints import service
from plugins.complaints.models import Complaint, TimelineEntry


#: The order of complaint lists (all complaints, a customer's): newest filed first.
NEWEST_FIRST = Keyset((Complaint.filed_at, Complaint.id), (dt.datetime, int), descending=True)


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
        return rows_per_parent(Complaint, Complaint.customer_id, keys, NEWEST_FIRST,
                               self.params["limit"], self.params.get("after"))


class ComplaintCountByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[int]:
        counts = dict(db.session.execute(
            select(Complaint.customer_id, func.count()).where(Complaint.customer_id.in_(keys))
            .group_by(Complaint.customer_id)).all())
        return [counts.get(k, 0) for k in keys]
