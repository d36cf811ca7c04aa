"""Occasions: birthdays and customer anniversaries as events, so rules and webhooks can
greet customers ("birthday and holiday greetings", DOMAIN.md's care actions).

Each day the ``care.occasions`` job (the ``care-occasions`` schedule) looks ``daysAhead``
days ahead (default 7) in RAPPORT_TIMEZONE and emits ``customer.occasion.upcoming`` once
per active customer (not churned, not erased) and occasion that falls on that day:

- ``birthday``: the month and day of ``birth_date``. A 29 February birthday falls on
  28 February in a year without one.
- ``anniversary``: whole years (at least one) since ``customer_since`` or, without it,
  since the day the customer was created (its date in RAPPORT_TIMEZONE); 29 February as
  above.

The event names the customer, the occasion, its day, the years of an anniversary and the
owner; never the birth date, the age, an e-mail or a phone (personal data minimisation: a
subscriber reads what it may through GraphQL). ``care_announced_occasions`` keeps what was
announced (customer, occasion, day), so a second run for the same day announces nothing
new; the job deletes the rows of days already past. The month and day are compared in SQL
(``EXTRACT`` on PostgreSQL, ``strftime`` on SQLite); creation times, which are instants,
are compared as the UTC ranges of the local day in each year.

Customers go in batches of ``BATCH``: one transaction, one audit entry and one event per
customer and occasion each (rules react to one customer at a time). See docs/care.md.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import and_, delete, extract, func, insert, or_, select

from core.app import rapport
from core.changes import Event, record
from core.dates import start_of_day
from core.db import db, utcnow
from core.ids import global_id
from core.jobs import JobKind, Progress
from core.models import Customer, CustomerStatus
from core.services import transaction

from plugins.care.models import AnnouncedOccasion, Occasion

JOB_KIND = "care.occasions"
EVENT_TYPE = "customer.occasion.upcoming"
DEFAULT_DAYS_AHEAD = 7
MAX_DAYS_AHEAD = 60
#: Customers per transaction (one audit entry each).
BATCH = 500


class OccasionsParameters(Schema):
    days_ahead = fields.Integer(data_key="daysAhead", strict=True,
                                load_default=DEFAULT_DAYS_AHEAD,
                                validate=validate.Range(0, MAX_DAYS_AHEAD))


@dataclass(frozen=True)
class Found:
    customer_id: int
    occasion: Occasion
    owner_id: int | None
    years: int | None


def _falls_on(year: int, month: int, day: int, on: dt.date) -> bool:
    """Whether the yearly date (month, day) of a date of ``year`` falls on ``on``."""
    if (month, day) == (on.month, on.day):
        return True
    return (month, day) == (2, 29) and (on.month, on.day) == (2, 28) and not calendar.isleap(
        on.year)


def _month_day(column: Any, on: dt.date) -> Any:
    """SQL: the yearly date of the date ``column`` falls on ``on`` (29 February on
    28 February in a year without one)."""
    month, day = extract("month", column), extract("day", column)
    condition = and_(month == on.month, day == on.day)
    if (on.month, on.day) == (2, 28) and not calendar.isleap(on.year):
        condition = or_(condition, and_(month == 2, day == 29))
    return condition


def _local_days(on: dt.date, first_year: int) -> list[dt.date]:
    """The days of the years ``first_year`` to the year before ``on`` whose yearly date
    falls on ``on``."""
    days = []
    for year in range(first_year, on.year):
        for month, day in ((on.month, on.day), (2, 29)):
            try:
                candidate = dt.date(year, month, day)
            except ValueError:
                continue
            if _falls_on(year, month, day, on) and candidate not in days:
                days.append(candidate)
    return days


def find(on: dt.date, tz: dt.tzinfo) -> list[Found]:
    """The active customers' birthdays and anniversaries that fall on ``on``."""
    active = Customer.status == CustomerStatus.ACTIVE
    before = dt.date(on.year, 1, 1)
    found: list[Found] = []
    for row in db.session.execute(
            select(Customer.id, Customer.owner_id).where(
                active, Customer.birth_date.is_not(None), Customer.birth_date < before,
                _month_day(Customer.birth_date, on))):
        found.append(Found(row.id, Occasion.BIRTHDAY, row.owner_id, None))
    for row in db.session.execute(
            select(Customer.id, Customer.owner_id, Customer.customer_since).where(
                active, Customer.customer_since.is_not(None), Customer.customer_since < before,
                _month_day(Customer.customer_since, on))):
        found.append(Found(row.id, Occasion.ANNIVERSARY, row.owner_id,
                           on.year - row.customer_since.year))
    # Without customer_since: the local day the customer was created, an instant in UTC.
    # Each candidate day of each past year is a range of instants (index on created_at).
    since_created = and_(active, Customer.customer_since.is_(None))
    first = db.session.scalar(select(func.min(Customer.created_at)).where(since_created))
    if first is not None:
        days = _local_days(on, first.astimezone(tz).year)
        ranges = [and_(Customer.created_at >= start_of_day(day, tz),
                       Customer.created_at < start_of_day(day + dt.timedelta(days=1), tz))
                  for day in days]
        if ranges:
            for row in db.session.execute(
                    select(Customer.id, Customer.owner_id, Customer.created_at)
                    .where(since_created, or_(*ranges))):
                created = row.created_at.astimezone(tz).date()
                found.append(Found(row.id, Occasion.ANNIVERSARY, row.owner_id,
                                   on.year - created.year))
    return sorted(found, key=lambda f: (f.customer_id, f.occasion.value))


def payload(found: Found, on: dt.date) -> dict[str, Any]:
    """The event's data: no birth date, age, e-mail or phone."""
    return {"customerId": global_id("Customer", found.customer_id),
            "occasion": found.occasion.value, "on": on.isoformat(), "years": found.years,
            "ownerId": None if found.owner_id is None else global_id("Agent", found.owner_id)}


def _announce_batch(batch: list[Found], on: dt.date, now: dt.datetime) -> int:
    with transaction():
        # Two runs at once both found these customers: lock them (in id order, no
        # deadlock), keep those still active, and drop what the other run announced.
        ids = sorted({f.customer_id for f in batch})
        active = set(db.session.scalars(
            select(Customer.id).where(Customer.id.in_(ids),
                                      Customer.status == CustomerStatus.ACTIVE)
            .order_by(Customer.id).with_for_update()))
        done = set(db.session.execute(
            select(AnnouncedOccasion.customer_id, AnnouncedOccasion.occasion).where(
                AnnouncedOccasion.customer_id.in_(ids), AnnouncedOccasion.on_date == on))
            .tuples())
        new = [f for f in batch if f.customer_id in active
               and (f.customer_id, f.occasion) not in done]
        if not new:
            return 0
        db.session.execute(insert(AnnouncedOccasion), [
            {"customer_id": f.customer_id, "occasion": f.occasion, "on_date": on,
             "announced_at": now} for f in new])
        record(JOB_KIND, sorted({global_id("Customer", f.customer_id) for f in new}), None,
               [Event(EVENT_TYPE, global_id("Customer", f.customer_id), payload(f, on))
                for f in new])
    return len(new)


def announce(days_ahead: int, now: dt.datetime | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
    """Announce the occasions ``days_ahead`` days from today (RAPPORT_TIMEZONE)."""
    now = now or utcnow()
    tz = rapport().settings.tz
    today = now.astimezone(tz).date()
    on = today + dt.timedelta(days=days_ahead)
    with transaction():
        # Only days from today on can be announced again: the rows of past days go.
        db.session.execute(delete(AnnouncedOccasion).where(AnnouncedOccasion.on_date < today))
    found = find(on, tz)
    db.session.rollback()
    announced = 0
    for start in range(0, len(found), BATCH):
        announced += _announce_batch(found[start:start + BATCH], on, now)
        if progress is not None:
            progress(min(1.0, (start + BATCH) / len(found)), f"{announced} announced")
    return {"on": on.isoformat(), "found": len(found), "announced": announced,
            "birthdays": sum(f.occasion is Occasion.BIRTHDAY for f in found),
            "anniversaries": sum(f.occasion is Occasion.ANNIVERSARY for f in found)}


def run(parameters: Mapping[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """The ``care.occasions`` job."""
    return announce(parameters["days_ahead"], progress=progress)


JOB_KINDS = [JobKind(kind=JOB_KIND, parameters=OccasionsParameters, domain="customers",
                     function=run,
                     description="The daily occasions run: customer.occasion.upcoming for "
                                 "each active customer whose birthday or customer "
                                 "anniversary is daysAhead (default 7) days from today.")]
