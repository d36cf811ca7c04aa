"""The monthly churn report and the churn-rate jump alert (the report's data part).

Definitions (docs/churn.md explains them with an example):

- A customer *exists* from its own start date (``customer_since``, 00:00 of that day in
  RAPPORT_TIMEZONE) when it has one, else from its creation, or from its first
  interaction when that is earlier; and *is churned at an instant t* when it has a churn
  record dated at or before t that was not reactivated by t. A churn record dated by a
  date (a snapshot, an import without a time) holds 00:00 of the next day (docs/conventions.md,
  "Dates"), so months count churn in (start, end]: a customer who left by November 30 is
  November's. Erased customers stay counted: their records stay on the tombstone.
- Months are calendar months of RAPPORT_TIMEZONE. Per month: ``active_at_start``
  (customers existing before the month and not churned at its start), ``churned`` (the
  customers with a churn record dated in the month, each once), ``reactivated`` (records
  closed in the month),
  ``churn_rate`` = churned / active_at_start, ``retention_rate`` = the share of the
  customers active at the start who are not churned at the month's end (for the current
  month: now).
- Cohort retention: customers grouped by the month they started to exist; for each later
  month, the share of the cohort not churned at that month's end.

Everything is computed with GROUP BY over a small table of the period's months (a UNION
ALL of literal rows), never per customer in Python.

Alert rule: a month's churn rate jumps when it exceeds ``JUMP_RATIO`` times the mean
rate of the ``TRAILING_MONTHS`` months before it, with at least ``MIN_CHURNED`` churned
customers in the month (a trailing mean of 0 counts any month over the minimum). Each
month is alerted once (``churn_rate_alerts``), through core's ``raise_alert``. The same
check raises ``churn_owner_bottom`` for an owner at the bottom three months running
(``owners.check_bottom_owners``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement, Date, Integer, String, and_, case, exists, func, literal, or_, select, union_all,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql import FromClause

from core.app import rapport
from core.db import UTCDateTime, db, utcnow
from core.models import Customer, Interaction
from core.services import load
from core.services.staff import raise_alert

from plugins.churn.models import ChurnRateAlert, ChurnRecord
from plugins.churn.schemas import PeriodSchema

log = logging.getLogger(__name__)

JUMP_ALERT = "churn_rate_jump"
JUMP_RATIO = 1.5
TRAILING_MONTHS = 3
MIN_CHURNED = 5
MAX_MONTHS = 120


def business_tz() -> ZoneInfo:
    return rapport().settings.tz


def local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.timezone.utc)


def day_bounds(first: dt.date, last: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start of ``first``, start of the day after ``last``) in RAPPORT_TIMEZONE, as UTC."""
    tz = business_tz()
    return local_midnight(first, tz), local_midnight(last + dt.timedelta(days=1), tz)


def _next_month(day: dt.date) -> dt.date:
    return (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


@dataclass(frozen=True)
class Month:
    label: str            # YYYY-MM
    start: dt.datetime    # UTC
    end: dt.datetime      # UTC
    cut: dt.datetime      # the month's end, or now for the current month
    start_day: dt.date    # the month's first day (compared with customer_since)
    end_day: dt.date      # the next month's first day


def months_between(first: dt.date, last: dt.date, now: dt.datetime) -> list[Month]:
    """The calendar months of RAPPORT_TIMEZONE overlapping first..last that have begun."""
    tz = business_tz()
    months: list[Month] = []
    day = first.replace(day=1)
    while day <= last and len(months) < MAX_MONTHS:
        start, end = local_midnight(day, tz), local_midnight(_next_month(day), tz)
        if start > now:
            break
        months.append(Month(f"{day:%Y-%m}", start, end, min(end, now), day,
                            _next_month(day)))
        day = _next_month(day)
    return months


def _months_table(months: list[Month]) -> FromClause:
    rows = [select(literal(i, Integer).label("idx"), literal(m.label, String).label("label"),
                   literal(m.start, UTCDateTime).label("start"),
                   literal(m.end, UTCDateTime).label("end"),
                   literal(m.cut, UTCDateTime).label("cut"),
                   literal(m.start_day, Date).label("start_day"),
                   literal(m.end_day, Date).label("end_day")) for i, m in enumerate(months)]
    return (union_all(*rows) if len(rows) > 1 else rows[0]).subquery("months")


def _existence() -> FromClause:
    """Each customer with its start: ``since_day`` (its own ``customer_since``) and
    ``since`` (its first interaction, or its creation when it has no start date of its
    own: a record imported late does not start the customer)."""
    first = (select(Interaction.customer_id, func.min(Interaction.occurred_at).label("first"))
             .group_by(Interaction.customer_id).subquery("first_interaction"))
    created = case((Customer.customer_since.is_(None), Customer.created_at), else_=None)
    since = case((and_(first.c.first.is_not(None),
                       or_(created.is_(None), first.c.first < created)), first.c.first),
                 else_=created)
    return (select(Customer.id.label("customer_id"), since.label("since"),
                   Customer.customer_since.label("since_day"),
                   Customer.owner_id.label("owner_id"))
            .outerjoin(first, first.c.customer_id == Customer.id).subquery("existence"))


def _existed_before(existence: FromClause, instant: Any, day: Any) -> ColumnElement[bool]:
    """The customer had started before ``instant`` (``day``: the same boundary as a local
    date, for ``customer_since``)."""
    return or_(existence.c.since_day < day, existence.c.since < instant)


def _started_from(existence: FromClause, instant: Any, day: Any) -> ColumnElement[bool]:
    """Not ``_existed_before`` (null-safe: a missing start is no start)."""
    return and_(or_(existence.c.since_day.is_(None), existence.c.since_day >= day),
                or_(existence.c.since.is_(None), existence.c.since >= instant))


def _dated_in_month(table: FromClause) -> ColumnElement[bool]:
    """A churn record dated in the month: (start, end], as docs/churn.md explains."""
    return and_(ChurnRecord.churned_at > table.c.start, ChurnRecord.churned_at <= table.c.end)


def churned_at_instant(customer_id: ColumnElement[Any], instant: ColumnElement[Any]
                       ) -> ColumnElement[bool]:
    """The customer had a churn record before ``instant`` not reactivated by then."""
    return exists().where(ChurnRecord.customer_id == customer_id,
                          ChurnRecord.churned_at <= instant,
                          or_(ChurnRecord.reactivated_at.is_(None),
                              ChurnRecord.reactivated_at >= instant))


@dataclass
class MonthFigures:
    month: str
    active_at_start: int = 0
    churned: int = 0
    reactivated: int = 0
    retained: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def churn_rate(self) -> float | None:
        return self.churned / self.active_at_start if self.active_at_start else None

    @property
    def retention_rate(self) -> float | None:
        return self.retained / self.active_at_start if self.active_at_start else None


@dataclass
class Cohort:
    month: str
    size: int
    #: retention[k]: share not churned at the end of the k-th month after the cohort's.
    retention: list[float]


@dataclass
class ChurnReport:
    period_from: dt.date
    period_to: dt.date
    months: list[MonthFigures]
    cohorts: list[Cohort]
    by_type: dict[str, int]
    by_reason: dict[str, int]

    @property
    def churned(self) -> int:
        return sum(m.churned for m in self.months)


def churn_report(raw: dict[str, Any], *, now: dt.datetime | None = None) -> ChurnReport:
    """The monthly figures of from..to (``PeriodSchema``): six GROUP BY queries."""
    data = load(PeriodSchema(), raw)
    return monthly_report(data["period_from"], data["period_to"], now or utcnow())


def monthly_report(first: dt.date, last: dt.date, now: dt.datetime) -> ChurnReport:
    months = months_between(first, last, now)
    report = ChurnReport(first, last, [MonthFigures(m.label) for m in months], [], {}, {})
    if not months:
        return report
    table = _months_table(months)
    existence = _existence()
    customer = existence.c.customer_id

    active = db.session.execute(
        select(table.c.idx, func.count(customer),
               func.sum(case((churned_at_instant(customer, table.c.cut), 0), else_=1)))
        .select_from(table).join(existence, _existed_before(
            existence, table.c.start, table.c.start_day))
        .where(~churned_at_instant(customer, table.c.start))
        .group_by(table.c.idx)).all()
    for idx, count, retained in active:
        report.months[idx].active_at_start = count
        report.months[idx].retained = int(retained or 0)

    # Customers, not records: one who left, came back and left again within a month is
    # one churned customer of the month (the rate's numerator and denominator both count
    # customers). By type and reason: the customers with such a record in the month.
    in_month = _dated_in_month(table)
    customers = func.count(ChurnRecord.customer_id.distinct())
    for idx, count in db.session.execute(
            select(table.c.idx, customers).join(ChurnRecord, in_month)
            .group_by(table.c.idx)).all():
        report.months[idx].churned = count
    totals_type: dict[str, int] = defaultdict(int)
    totals_reason: dict[str, int] = defaultdict(int)
    for column, attribute, totals in ((ChurnRecord.type, "by_type", totals_type),
                                      (ChurnRecord.reason, "by_reason", totals_reason)):
        for idx, value, count in db.session.execute(
                select(table.c.idx, column, customers).join(ChurnRecord, in_month)
                .group_by(table.c.idx, column)).all():
            getattr(report.months[idx], attribute)[value.value] = count
            totals[value.value] += count
    report.by_type, report.by_reason = dict(totals_type), dict(totals_reason)

    for idx, count in db.session.execute(
            select(table.c.idx, func.count())
            .join(ChurnRecord, and_(ChurnRecord.reactivated_at >= table.c.start,
                                    ChurnRecord.reactivated_at < table.c.end))
            .group_by(table.c.idx)).all():
        report.months[idx].reactivated = count

    report.cohorts = _cohorts(table, existence, months)
    return report


def _cohorts(table: FromClause, existence: FromClause, months: list[Month]) -> list[Cohort]:
    cohort = (select(existence.c.customer_id, table.c.idx.label("cohort"))
              .join(table, and_(_started_from(existence, table.c.start, table.c.start_day),
                                _existed_before(existence, table.c.end, table.c.end_day)))
              .subquery("cohort"))
    later = table.alias("later")
    rows = db.session.execute(
        select(cohort.c.cohort, later.c.idx, func.count(),
               func.sum(case((churned_at_instant(cohort.c.customer_id, later.c.cut), 0),
                             else_=1)))
        .join(later, later.c.idx >= cohort.c.cohort)
        .group_by(cohort.c.cohort, later.c.idx)
        .order_by(cohort.c.cohort, later.c.idx)).all()
    found: dict[int, Cohort] = {}
    for idx, month_idx, size, kept in rows:
        entry = found.setdefault(idx, Cohort(months[idx].label, size, []))
        entry.retention.append(int(kept or 0) / size)
    return [found[i] for i in sorted(found)]


# --- The jump alert ------------------------------------------------------------------------


@dataclass
class Jump:
    month: str
    churn_rate: float
    trailing_mean: float
    churned: int
    active_at_start: int
    alert_id: int | None = None


def month_of(moment: dt.datetime, tz: ZoneInfo) -> dt.date:
    return moment.astimezone(tz).date().replace(day=1)


def find_jumps(report: ChurnReport) -> list[Jump]:
    jumps = []
    for position, figures in enumerate(report.months):
        rate = figures.churn_rate
        trailing = [m.churn_rate for m in report.months[max(0, position - TRAILING_MONTHS):
                                                           position] if m.churn_rate is not None]
        if rate is None or not trailing or figures.churned < MIN_CHURNED:
            continue
        mean = sum(trailing) / len(trailing)
        if rate > JUMP_RATIO * mean:
            jumps.append(Jump(figures.month, rate, mean, figures.churned,
                              figures.active_at_start))
    return jumps


def check_churn_jumps(moments: Iterable[dt.datetime], *, now: dt.datetime | None = None
                      ) -> list[Jump]:
    """Test the months of ``moments`` for a churn-rate jump; raise one core alert per
    month and kind, in the caller's transaction. Returns the jumps newly alerted."""
    now = now or utcnow()
    tz = business_tz()
    wanted = {month_of(m, tz) for m in moments if m <= now}
    if not wanted:
        return []
    first = min(wanted)
    for _ in range(TRAILING_MONTHS):
        first = (first - dt.timedelta(days=1)).replace(day=1)
    last = _next_month(max(wanted)) - dt.timedelta(days=1)
    labels = {f"{m:%Y-%m}" for m in wanted}
    jumps = [j for j in find_jumps(monthly_report(first, last, now)) if j.month in labels]
    raised = []
    for jump in jumps:
        if not _claim_month(jump.month):
            continue
        evidence = {"month": jump.month, "churnRate": round(jump.churn_rate, 4),
                    "trailingMean": round(jump.trailing_mean, 4),
                    "trailingMonths": TRAILING_MONTHS, "ratioThreshold": JUMP_RATIO,
                    "churned": jump.churned, "activeAtStart": jump.active_at_start}
        severity = "high" if jump.churn_rate > 2 * JUMP_RATIO * jump.trailing_mean else "medium"
        alert = raise_alert(JUMP_ALERT, severity, "churn", evidence)
        db.session.execute(ChurnRateAlert.__table__.update().where(
            ChurnRateAlert.month == jump.month, ChurnRateAlert.kind == JUMP_ALERT)
            .values(alert_id=alert.id))
        jump.alert_id = alert.id
        raised.append(jump)
    from plugins.churn.owners import check_bottom_owners  # owners builds on this module

    # The owner alert is a side check of the caller's change (marks, an import): in a
    # savepoint, so that its failure is logged and undone alone, never the marks.
    try:
        with db.session.begin_nested():
            check_bottom_owners(wanted, now)
    except Exception:  # noqa: BLE001 - whatever went wrong, the marks stand
        log.exception("churn: the %s check failed; the churn records are kept",
                      "churn_owner_bottom")
    return raised


def _claim_month(month: str, kind: str = JUMP_ALERT) -> bool:
    """Insert the (month, kind) marker; False when it exists (alerted before, or by a
    concurrent transaction, which PostgreSQL makes this one wait for)."""
    dialect_insert = pg_insert if db.session.get_bind().dialect.name == "postgresql" \
        else sqlite_insert
    claimed = db.session.scalar(
        dialect_insert(ChurnRateAlert).values(month=month, kind=kind, raised_at=utcnow())
        .on_conflict_do_nothing(index_elements=["month", "kind"])
        .returning(ChurnRateAlert.month))
    return claimed is not None
