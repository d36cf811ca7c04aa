"""Complaints features for the churn plugin's ``rapport_churn_features`` hook.

One SELECT, LEFT JOINed by churn with every other plugin's. Every value is "as of" the
given time: complaints filed, transitions made and due times passed on or before it.
Whether a complaint was open, and its last satisfaction score, come from the timeline
(the status its last transition by then led to), so a later close or reopen does not
leak back. Counts are 0 for a customer without complaints (a fact, not missing data);
the last satisfaction is NULL when no feedback was recorded by then.

Approximation: a breach of the resolution target is judged on the complaint's current
``resolved_at``; a complaint resolved in time and reopened after ``as_of`` counts as
breached from its due time on.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Integer, Select, and_, case, cast, func, or_, select
from sqlalchemy.sql import FromClause

from plugins.complaints.models import OPEN_STATUSES, Complaint, EntryKind, TimelineEntry


def churn_features(customers: FromClause, as_of: dt.datetime) -> Select[Any]:
    ids = customers.c.customer_id
    filed = and_(Complaint.customer_id.in_(select(ids)), Complaint.filed_at <= as_of)
    breached = or_(
        and_(Complaint.first_response_due < as_of,
             or_(Complaint.first_response_at.is_(None),
                 Complaint.first_response_at > Complaint.first_response_due)),
        and_(Complaint.resolution_due < as_of,
             or_(Complaint.resolved_at.is_(None),
                 Complaint.resolved_at > Complaint.resolution_due)))
    counts = (select(
        Complaint.customer_id,
        func.sum(case((Complaint.filed_at > as_of - dt.timedelta(days=90), 1), else_=0))
        .label("recent"),
        func.sum(case((Complaint.filed_at > as_of - dt.timedelta(days=365), 1), else_=0))
        .label("year"),
        func.sum(case((breached, 1), else_=0)).label("breached"))
        .where(filed).group_by(Complaint.customer_id).subquery("complaints_counts"))

    transitions = (select(
        Complaint.customer_id, TimelineEntry.complaint_id, TimelineEntry.to_status,
        func.row_number().over(partition_by=TimelineEntry.complaint_id,
                               order_by=(TimelineEntry.occurred_at.desc(),
                                         TimelineEntry.id.desc())).label("n"))
        .join(Complaint, Complaint.id == TimelineEntry.complaint_id)
        .where(filed, TimelineEntry.kind == EntryKind.TRANSITION,
               TimelineEntry.occurred_at <= as_of).subquery("complaints_states"))
    open_now = (select(transitions.c.customer_id, func.count().label("open"))
                .where(transitions.c.n == 1, transitions.c.to_status.in_(OPEN_STATUSES))
                .group_by(transitions.c.customer_id).subquery("complaints_open"))

    feedback = (select(
        Complaint.customer_id,
        TimelineEntry.step_data["satisfaction"].as_integer().label("satisfaction"),
        func.row_number().over(partition_by=Complaint.customer_id,
                               order_by=(TimelineEntry.occurred_at.desc(),
                                         TimelineEntry.id.desc())).label("n"))
        .join(Complaint, Complaint.id == TimelineEntry.complaint_id)
        .where(filed, TimelineEntry.transition == "feedback",
               TimelineEntry.occurred_at <= as_of).subquery("complaints_feedback"))
    last = select(feedback.c.customer_id, feedback.c.satisfaction).where(
        feedback.c.n == 1).subquery("complaints_last_feedback")

    return (select(
        ids.label("customer_id"),
        cast(func.coalesce(counts.c.recent, 0), Integer).label("complaints_last_90d"),
        cast(func.coalesce(counts.c.year, 0), Integer).label("complaints_last_365d"),
        cast(func.coalesce(open_now.c.open, 0), Integer).label("complaints_open"),
        last.c.satisfaction.label("complaints_last_satisfaction"),
        cast(func.coalesce(counts.c.breached, 0), Integer).label("complaints_breached_slas"))
        .select_from(customers)
        .outerjoin(counts, counts.c.customer_id == ids)
        .outerjoin(open_now, open_now.c.customer_id == ids)
        .outerjoin(last, last.c.customer_id == ids))
