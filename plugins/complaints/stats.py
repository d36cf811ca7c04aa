"""``complaintStats``: volume, response and resolution times, SLA compliance, reopen rate
and satisfaction of the complaints filed in a period, per group.

Counts, rates and means are one GROUP BY query. Percentiles (median, 90th) of the
durations are computed by the database on PostgreSQL (``percentile_cont`` in the same
GROUP BY); SQLite has no percentile function, so there one more query fetches each
complaint's (group, durations) and ``percentile_cont`` below interpolates them the same way.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, String, case, cast, extract, func, literal, or_, select
from sqlalchemy.sql import ColumnElement

from core.db import db, utcnow
from core.services import load

from plugins.complaints import sla
from plugins.complaints.config import complaint_settings
from plugins.complaints.models import Complaint
from plugins.complaints.schemas import StatsSchema

GROUPINGS = ("type", "channel", "severity", "assignee", "month")
TOTAL = "total"


@dataclass(frozen=True)
class GroupStats:
    key: str
    volume: int
    median_first_response_hours: float | None
    p90_first_response_hours: float | None
    median_resolution_hours: float | None
    p90_resolution_hours: float | None
    sla_compliance: float | None
    reopen_rate: float | None
    satisfaction: float | None
    satisfaction_responses: int


@dataclass(frozen=True)
class ComplaintStatistics:
    period_from: dt.date
    period_to: dt.date
    group_by: str
    groups: list[GroupStats]
    total: GroupStats


def percentile_cont(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks, as SQL's ``percentile_cont``."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def local_midnight(day: dt.date, tz: Any) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.timezone.utc)


def _hours(later: Any, earlier: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return cast((func.julianday(later) - func.julianday(earlier)) * 24.0, Float)
    return cast(extract("epoch", later - earlier) / 3600.0, Float)


def month_key(start: dt.date, end: dt.date, tz: Any) -> ColumnElement[Any]:
    """YYYY-MM of ``filed_at`` in the business time zone, as a CASE over the period's month
    boundaries (exact across DST on both databases, which share no time zone functions)."""
    whens = []
    month = start.replace(day=1)
    while month <= end:
        following = (month + dt.timedelta(days=32)).replace(day=1)
        whens.append((Complaint.filed_at < local_midnight(following, tz),
                      literal(month.strftime("%Y-%m"))))
        month = following
    return case(*whens, else_=literal("later"))


def _key(group_by: str, start: dt.date, end: dt.date, tz: Any) -> ColumnElement[Any]:
    if group_by == "month":
        return month_key(start, end, tz)
    if group_by == "assignee":
        return func.coalesce(cast(Complaint.assignee_id, String), literal("unassigned"))
    return cast(getattr(Complaint, group_by), String)


def complaint_stats(raw: Mapping[str, Any], now: dt.datetime | None = None
                    ) -> ComplaintStatistics:
    data = load(StatsSchema(), raw)
    now = now or utcnow()
    tz = complaint_settings().timezone
    start, end = data["period_from"], data["period_to"]
    in_period = (Complaint.filed_at >= local_midnight(start, tz),
                 Complaint.filed_at < local_midnight(end + dt.timedelta(days=1), tz))
    dialect = db.session.get_bind().dialect.name
    first = _hours(Complaint.first_response_at, Complaint.filed_at, dialect)
    resolution = _hours(Complaint.resolved_at, Complaint.filed_at, dialect)
    key = _key(data["group_by"], start, end, tz).label("key")

    columns: list[Any] = [
        func.count().label("volume"),
        func.sum(case((sla.breached_condition(now), 0), else_=1)).label("compliant"),
        func.sum(case((Complaint.reopen_count > 0, 1), else_=0)).label("reopened"),
        func.sum(case((or_(Complaint.resolved_at.is_not(None), Complaint.reopen_count > 0), 1),
                      else_=0)).label("ever_resolved"),
        func.avg(cast(Complaint.satisfaction, Float)).label("satisfaction"),
        func.count(Complaint.satisfaction).label("responses"),
    ]
    if dialect == "postgresql":
        columns += [func.percentile_cont(q).within_group(d).label(f"{name}_{label}")
                    for name, d in (("first", first), ("resolution", resolution))
                    for q, label in ((0.5, "median"), (0.9, "p90"))]
    per_group = db.session.execute(select(key, *columns).where(*in_period)
                                   .group_by(key).order_by(key)).mappings().all()
    overall = db.session.execute(select(literal(TOTAL).label("key"), *columns)
                                 .where(*in_period)).mappings().one()

    if dialect == "postgresql":
        percentiles = {row["key"]: tuple(row[f"{n}_{q}"] for n in ("first", "resolution")
                                         for q in ("median", "p90"))
                       for row in [*per_group, overall]}
    else:
        durations: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        for group, hours_first, hours_resolution in db.session.execute(
                select(key, first, resolution).where(*in_period)):
            for bucket in (durations[group], durations[TOTAL]):
                if hours_first is not None:
                    bucket[0].append(hours_first)
                if hours_resolution is not None:
                    bucket[1].append(hours_resolution)
        percentiles = {group: (percentile_cont(f, 0.5), percentile_cont(f, 0.9),
                               percentile_cont(r, 0.5), percentile_cont(r, 0.9))
                       for group, (f, r) in durations.items()}

    def group(row: Mapping[str, Any]) -> GroupStats:
        values = percentiles.get(row["key"], (None, None, None, None))
        volume = int(row["volume"])
        ever = int(row["ever_resolved"] or 0)
        return GroupStats(
            key=str(row["key"]), volume=volume,
            median_first_response_hours=_round(values[0]),
            p90_first_response_hours=_round(values[1]),
            median_resolution_hours=_round(values[2]), p90_resolution_hours=_round(values[3]),
            sla_compliance=int(row["compliant"] or 0) / volume if volume else None,
            reopen_rate=int(row["reopened"] or 0) / ever if ever else None,
            satisfaction=_round(row["satisfaction"]),
            satisfaction_responses=int(row["responses"]))

    return ComplaintStatistics(start, end, data["group_by"], [group(r) for r in per_group],
                               group(overall))


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)
