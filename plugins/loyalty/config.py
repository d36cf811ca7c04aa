"""The programme's settings (``RAPPORT_LOYALTY_*``) and the calendar arithmetic it needs.

| variable | meaning | default |
|---|---|---|
| ``RAPPORT_LOYALTY_POINT_VALUE`` | value of one point in ``RAPPORT_BASE_CURRENCY`` (liability) | ``0.01`` |
| ``RAPPORT_LOYALTY_EXPIRY_MONTHS`` | validity of earned points when a rule names none; ``never`` | ``24`` |
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from flask import Flask, current_app

from core.app import rapport
from core.config import ConfigError

from plugins.loyalty.models import CapPeriod

EXTENSION = "rapport_loyalty"


@dataclass(frozen=True)
class LoyaltySettings:
    point_value: Decimal
    base_currency: str
    default_expiry_months: int | None
    timezone: ZoneInfo


def read_settings(app: Flask) -> LoyaltySettings:
    """Validate the settings once, at start-up: a bad value stops the app with its fix."""
    settings = rapport(app).settings
    raw_value = str(settings.extra.get("RAPPORT_LOYALTY_POINT_VALUE", "0.01")).strip()
    try:
        point_value = Decimal(raw_value)
    except InvalidOperation:
        point_value = Decimal(-1)
    if not point_value.is_finite() or point_value < 0:
        raise ConfigError(f"RAPPORT_LOYALTY_POINT_VALUE={raw_value!r}: give the value of one "
                          f"point in {settings.base_currency}, such as 0.01")
    raw_months = str(settings.extra.get("RAPPORT_LOYALTY_EXPIRY_MONTHS", "24")).strip().lower()
    months: int | None
    if raw_months == "never":
        months = None
    elif raw_months.isdigit() and 1 <= int(raw_months) <= 600:
        months = int(raw_months)
    else:
        raise ConfigError(f"RAPPORT_LOYALTY_EXPIRY_MONTHS={raw_months!r}: give a number of "
                          f"months from 1 to 600, or 'never'")
    return LoyaltySettings(point_value, settings.base_currency, months, settings.tz)


def loyalty_settings() -> LoyaltySettings:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def add_months(moment: dt.datetime, months: int, tz: ZoneInfo | None = None) -> dt.datetime:
    """The same day and time ``months`` later (the month's last day when it is shorter).

    With ``tz`` (the business time zone), the day and time are those on the wall clock
    there, and the result is in UTC.
    """
    if tz is not None:
        return add_months(moment.astimezone(tz), months).astimezone(dt.timezone.utc)
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def period_bounds(moment: dt.datetime, period: CapPeriod, tz: ZoneInfo
                  ) -> tuple[dt.datetime, dt.datetime]:
    """The calendar day/week (Monday)/month/year containing ``moment`` in ``tz``, in UTC."""
    return _period_of_day(moment.astimezone(tz).date(), period, tz)


@functools.lru_cache(maxsize=4096)
def _period_of_day(day: dt.date, period: CapPeriod, tz: ZoneInfo
                   ) -> tuple[dt.datetime, dt.datetime]:
    if period == CapPeriod.DAY:
        start, end = day, day + dt.timedelta(days=1)
    elif period == CapPeriod.WEEK:
        start = day - dt.timedelta(days=day.weekday())
        end = start + dt.timedelta(days=7)
    elif period == CapPeriod.MONTH:
        start = day.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
    else:
        start, end = day.replace(month=1, day=1), day.replace(year=day.year + 1, month=1, day=1)
    return local_midnight(start, tz), local_midnight(end, tz)


def local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.timezone.utc)


def month_starts(first: dt.date, last: dt.date) -> list[dt.date]:
    """The first day of every month from ``first``'s month to ``last``'s, inclusive."""
    months = []
    current = first.replace(day=1)
    while current <= last:
        months.append(current)
        current = (current + dt.timedelta(days=32)).replace(day=1)
    return months
