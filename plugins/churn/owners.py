"""Churn per owner (service advisor) and per team, with the "bottom three months" flag.

DOMAIN.md: each month the churn rate of every advisor's book is compared; an advisor at
the bottom three months running loses the accounts to a colleague. The figures are those
of ``report.monthly_report``'s months (``active_at_start``, ``churned``, ``churn_rate``,
same definitions, same building blocks), grouped additionally by the customer's CURRENT
owner (``customers.owner_id``; there is no ownership history: a customer reassigned
yesterday counts for its new owner in every month, including the months the old owner
held it) and by that owner's team (``agents.team``). Customers without an owner are one
group (owner None, team None); owners without a team are in the team None too.

Two GROUP BY queries for the whole report (months x owners), whatever the number of
owners or months; teams are sums of their owners' rows (every customer has one owner, so
the sums count each customer once).

The bottom of a month: among owners (not the no-owner group) with at least
``min_active`` customers active at the month's start, the owner(s) with the highest
churn rate (ties: each). Only complete months have a bottom (the current month is not
over), and only when at least two owners qualify (one alone is compared with no one) and
the highest rate is above 0 (a month without churn has no worst book).
``bottom_months_running``: the consecutive months at the bottom ending with the period's
last complete month.

The churn-rate check (``report.check_churn_jumps``: after marks, ``rapport churn check``)
also raises one core alert ``churn_owner_bottom`` per owner and complete month checked
when the owner is at the bottom three months running ending with that month
(``check_bottom_owners``; claimed in ``churn_rate_alerts`` like the jump alert).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from marshmallow import fields, validate
from sqlalchemy import func, select

from core.db import db, utcnow
from core.ids import global_id
from core.models import Agent, Customer
from core.services import load
from core.services.staff import raise_alert

from plugins.churn.models import ChurnRateAlert, ChurnRecord
from plugins.churn.report import (
    MAX_MONTHS, _claim_month, _dated_in_month, _existed_before, _existence, _months_table,
    _next_month, business_tz, churned_at_instant, local_midnight, months_between,
)
from plugins.churn.schemas import PeriodSchema

DEFAULT_MIN_ACTIVE = 10
BOTTOM_ALERT = "churn_owner_bottom"
#: Months at the bottom in a row that flag an owner.
BOTTOM_RUN = 3
MAX_MIN_ACTIVE = 1_000_000_000


class OwnerReportSchema(PeriodSchema):
    """``from`` .. ``to`` (``PeriodSchema``) and ``minActive``."""

    min_active = fields.Integer(load_default=DEFAULT_MIN_ACTIVE, data_key="minActive",
                                strict=True, validate=validate.Range(
                                    1, MAX_MIN_ACTIVE,
                                    error=f"Use a number from 1 to {MAX_MIN_ACTIVE:,}."))


@dataclass
class GroupMonth:
    month: str
    active_at_start: int = 0
    churned: int = 0
    #: An owner's: at the month's bottom (always False for a team).
    at_bottom: bool = False

    @property
    def churn_rate(self) -> float | None:
        return self.churned / self.active_at_start if self.active_at_start else None


@dataclass
class GroupFigures:
    """One owner's (``owner_id``; None: customers without an owner) or one team's
    (``team``; None: no team) months, with the period's totals."""

    owner_id: int | None
    name: str | None
    team: str | None
    months: list[GroupMonth]
    bottom_months_running: int = 0

    @property
    def active_at_start(self) -> int:
        """Active at the start of the period's first month."""
        return self.months[0].active_at_start if self.months else 0

    @property
    def churned(self) -> int:
        return sum(m.churned for m in self.months)

    @property
    def customer_months(self) -> int:
        """The months' ``active_at_start``, summed."""
        return sum(m.active_at_start for m in self.months)

    @property
    def churn_rate(self) -> float | None:
        """The period's monthly churn rate: churned / customerMonths (the months' rates
        averaged, weighted by the customers active at each month's start)."""
        return self.churned / self.customer_months if self.customer_months else None

    @property
    def bottom_months(self) -> list[str]:
        return [m.month for m in self.months if m.at_bottom]

    @property
    def at_bottom_three_months(self) -> bool:
        return self.bottom_months_running >= BOTTOM_RUN


@dataclass
class MonthBottom:
    """What the month's bottom was decided on."""

    month: str
    complete: bool
    #: Owners with at least ``min_active`` customers active at the month's start.
    ranked_owners: int = 0
    #: The highest churn rate among them; None when the month has no bottom.
    bottom_churn_rate: float | None = None


@dataclass
class OwnerReport:
    period_from: dt.date
    period_to: dt.date
    min_active: int
    months: list[MonthBottom]
    by_owner: list[GroupFigures] = field(default_factory=list)
    by_team: list[GroupFigures] = field(default_factory=list)

    @property
    def last_complete_month(self) -> str | None:
        complete = [m.month for m in self.months if m.complete]
        return complete[-1] if complete else None


def owner_report(raw: dict[str, Any], *, now: dt.datetime | None = None) -> OwnerReport:
    """Churn per owner and team of from..to (``OwnerReportSchema``): two GROUP BY queries."""
    data = load(OwnerReportSchema(), raw)
    return churn_by_owner(data["period_from"], data["period_to"], data["min_active"],
                          now or utcnow())


def churn_by_owner(first: dt.date, last: dt.date, min_active: int, now: dt.datetime
                   ) -> OwnerReport:
    months = months_between(first, last, now)
    result = OwnerReport(first, last, min_active,
                         [MonthBottom(m.label, m.end <= now) for m in months])
    if not months:
        return result
    table = _months_table(months)
    existence = _existence()
    customer, owner = existence.c.customer_id, existence.c.owner_id
    owners: dict[int | None, GroupFigures] = {}

    def group(owner_id: int | None, name: str | None, team: str | None) -> GroupFigures:
        found = owners.get(owner_id)
        if found is None:
            found = owners[owner_id] = GroupFigures(
                owner_id, name, team, [GroupMonth(m.label) for m in months])
        return found

    # The same figures as monthly_report's months, grouped by the current owner as well.
    for idx, owner_id, name, team, count in db.session.execute(
            select(table.c.idx, owner, Agent.name, Agent.team, func.count(customer))
            .select_from(table).join(existence, _existed_before(
                existence, table.c.start, table.c.start_day))
            .outerjoin(Agent, Agent.id == owner)
            .where(~churned_at_instant(customer, table.c.start))
            .group_by(table.c.idx, owner, Agent.name, Agent.team)).all():
        group(owner_id, name, team).months[idx].active_at_start = count
    for idx, owner_id, name, team, count in db.session.execute(
            select(table.c.idx, Customer.owner_id, Agent.name, Agent.team,
                   func.count(ChurnRecord.customer_id.distinct()))
            .select_from(table).join(ChurnRecord, _dated_in_month(table))
            .join(Customer, Customer.id == ChurnRecord.customer_id)
            .outerjoin(Agent, Agent.id == Customer.owner_id)
            .group_by(table.c.idx, Customer.owner_id, Agent.name, Agent.team)).all():
        group(owner_id, name, team).months[idx].churned = count

    result.by_owner = sorted(owners.values(), key=lambda g: (
        g.owner_id is None, (g.name or "").casefold(), g.owner_id or 0))
    _mark_bottoms(result)
    result.by_team = _teams(result.by_owner, [m.month for m in result.months])
    return result


def _mark_bottoms(result: OwnerReport) -> None:
    advisors = [g for g in result.by_owner if g.owner_id is not None]
    for idx, bottom in enumerate(result.months):
        if not bottom.complete:
            continue
        ranked = [g for g in advisors if g.months[idx].active_at_start >= result.min_active]
        bottom.ranked_owners = len(ranked)
        worst = max((g.months[idx].churn_rate or 0.0 for g in ranked), default=0.0)
        if len(ranked) < 2 or worst <= 0:
            continue
        bottom.bottom_churn_rate = worst
        for g in ranked:
            # Divisions are correctly rounded: equal fractions give equal floats.
            g.months[idx].at_bottom = g.months[idx].churn_rate == worst
    complete = [i for i, m in enumerate(result.months) if m.complete]
    if not complete:
        return
    for g in advisors:
        g.bottom_months_running = _run_ending(g, complete[-1])


def _run_ending(group: GroupFigures, idx: int) -> int:
    """The months at the bottom in a row ending with month ``idx``."""
    running = 0
    while idx >= 0 and group.months[idx].at_bottom:
        running, idx = running + 1, idx - 1
    return running


def _teams(owners: list[GroupFigures], labels: list[str]) -> list[GroupFigures]:
    teams: dict[str | None, GroupFigures] = {}
    for owner in owners:
        team = teams.setdefault(owner.team, GroupFigures(
            None, None, owner.team, [GroupMonth(label) for label in labels]))
        for total, month in zip(team.months, owner.months):
            total.active_at_start += month.active_at_start
            total.churned += month.churned
    return sorted(teams.values(), key=lambda t: (t.team is None, (t.team or "").casefold(),
                                                 t.team or ""))


# --- The alert ----------------------------------------------------------------------------


@dataclass
class BottomAlert:
    owner_id: int
    month: str
    alert_id: int


def check_bottom_owners(months: set[dt.date], now: dt.datetime) -> list[BottomAlert]:
    """For each complete month of ``months`` (first days, from ``check_churn_jumps``): an
    owner at the bottom ``BOTTOM_RUN`` months running ending with it (``min_active``: the
    default) gets one core alert ``churn_owner_bottom`` per owner and month, in the
    caller's transaction. Nothing is read for months not over yet (a mark of today).
    Months far apart (a batch of marks spanning years) are checked in windows of at most
    ``MAX_MONTHS`` months, each month with its own ``BOTTOM_RUN`` - 1 months before it."""
    tz = business_tz()
    complete = sorted(m for m in months if local_midnight(_next_month(m), tz) <= now)
    raised: list[BottomAlert] = []
    for window in _windows(complete):
        raised.extend(_check_window(window, now))
    return raised


def _month_number(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


def _windows(complete: list[dt.date]) -> list[list[dt.date]]:
    """The sorted months grouped so that each group, with the ``BOTTOM_RUN`` - 1 months
    before its first, spans at most ``MAX_MONTHS`` months (one ``churn_by_owner``)."""
    windows: list[list[dt.date]] = []
    for month in complete:
        if windows and (_month_number(month) - _month_number(windows[-1][0]) + BOTTOM_RUN
                        <= MAX_MONTHS):
            windows[-1].append(month)
        else:
            windows.append([month])
    return windows


def _check_window(complete: list[dt.date], now: dt.datetime) -> list[BottomAlert]:
    first = complete[0]
    for _ in range(BOTTOM_RUN - 1):
        first = (first - dt.timedelta(days=1)).replace(day=1)
    result = churn_by_owner(first, _next_month(complete[-1]) - dt.timedelta(days=1),
                            DEFAULT_MIN_ACTIVE, now)
    position = {m.month: i for i, m in enumerate(result.months)}
    bottoms = result.months
    raised = []
    for month in (f"{m:%Y-%m}" for m in complete):
        idx = position.get(month)
        if idx is None:  # not in the window (cannot happen: _windows keeps it under the cap)
            continue
        for owner in result.by_owner:
            if owner.owner_id is None or _run_ending(owner, idx) < BOTTOM_RUN:
                continue
            kind = f"{BOTTOM_ALERT}:{owner.owner_id}"
            if not _claim_month(month, kind):
                continue
            run = range(idx - BOTTOM_RUN + 1, idx + 1)
            evidence = {
                "ownerId": global_id("Agent", owner.owner_id), "month": month,
                "monthsRunning": BOTTOM_RUN, "minActive": result.min_active,
                "months": [{"month": owner.months[i].month,
                            "churnRate": round(owner.months[i].churn_rate or 0.0, 4),
                            "churned": owner.months[i].churned,
                            "activeAtStart": owner.months[i].active_at_start,
                            "rankedOwners": bottoms[i].ranked_owners} for i in run]}
            alert = raise_alert(BOTTOM_ALERT, "medium", "churn", evidence)
            db.session.execute(ChurnRateAlert.__table__.update().where(
                ChurnRateAlert.month == month, ChurnRateAlert.kind == kind)
                .values(alert_id=alert.id))
            raised.append(BottomAlert(owner.owner_id, month, alert.id))
    return raised
