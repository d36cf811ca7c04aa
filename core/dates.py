"""Dates as people mean them (CONTRACTS.md, "Dates").

A date that ends a period (``asOf``, ``to``, a churn date, a snapshot date) means up to
00:00 of the next day in RAPPORT_TIMEZONE: ``--as-of 1997-09-30`` includes that day's
purchases. A date that starts one (``from``, ``customerSince``) means 00:00 of that day.
A datetime is exact; without a zone it is UTC. Dates after 9998-12-31 or before 1900-01-01
are typed errors (``DATE_OUT_OF_RANGE``): the next day of 9999-12-31 does not exist, and
earlier dates are typing mistakes in a CRM.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from core.errors import FieldError, UserError

EARLIEST = dt.date(1900, 1, 1)
LATEST = dt.date(9998, 12, 31)
DATE_OUT_OF_RANGE = "DATE_OUT_OF_RANGE"
INVALID_DATE = "INVALID"

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class DateError(UserError):
    """A date or datetime that cannot be read, or out of the accepted range."""


def _check_range(day: dt.date, field: str | None) -> None:
    if day < EARLIEST or day > LATEST:
        raise DateError(FieldError(
            f"{day.isoformat()} is out of range: dates run from {EARLIEST.isoformat()} to "
            f"{LATEST.isoformat()}.", DATE_OUT_OF_RANGE, field))


def end_of_day(day: dt.date, tz: dt.tzinfo, field: str | None = None) -> dt.datetime:
    """00:00 of the next day in ``tz``, in UTC: the end of ``day``."""
    _check_range(day, field)
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz).astimezone(
        dt.timezone.utc)


def start_of_day(day: dt.date, tz: dt.tzinfo, field: str | None = None) -> dt.datetime:
    """00:00 of ``day`` in ``tz``, in UTC."""
    _check_range(day, field)
    return dt.datetime.combine(day, dt.time(), tz).astimezone(dt.timezone.utc)


def exact(moment: dt.datetime, field: str | None = None) -> dt.datetime:
    """A datetime as given (UTC when it has no zone), range-checked."""
    _check_range(moment.date(), field)
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)
    return aware.astimezone(dt.timezone.utc)


def parse_moment(text: str, tz: dt.tzinfo | str, *, ends: bool, field: str | None = None
                 ) -> dt.datetime:
    """``YYYY-MM-DD`` (the end of that day when ``ends``, else its start, in ``tz``) or an
    ISO 8601 datetime (exact; no zone: UTC). Raises ``DateError``."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    value = text.strip()
    if _DATE_ONLY.match(value):
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise DateError(FieldError(f"{value!r} is not a date (YYYY-MM-DD).",
                                       INVALID_DATE, field)) from None
        return end_of_day(day, zone, field) if ends else start_of_day(day, zone, field)
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DateError(FieldError(
            f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 datetime.", INVALID_DATE,
            field)) from None
    return exact(moment, field)
