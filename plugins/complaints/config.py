"""The plugin's settings (``RAPPORT_COMPLAINTS_*``) and its vocabularies.

| variable | meaning | default |
|---|---|---|
| ``RAPPORT_COMPLAINTS_BUSINESS_HOURS`` | SLA calendar, ``mon-fri 09:00-17:00`` in ``RAPPORT_TIMEZONE``; empty: round the clock | empty |
| ``RAPPORT_COMPLAINTS_ESCALATION_AGENT`` | agent (global id or number) that takes over a critical complaint when it is escalated | none |
| ``RAPPORT_COMPLAINTS_DETECTION_SENSITIVITY`` | alarm score threshold, ``-log10`` of the Poisson tail probability | ``4`` |
| ``RAPPORT_COMPLAINTS_DETECTION_MIN_VOLUME`` | fewest complaints in a window that can raise a spike alert | ``10`` |
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from flask import Flask, current_app

from core.app import rapport
from core.config import ConfigError
from core.ids import parse_id

EXTENSION = "rapport_complaints"

DEFAULT_TYPES = [
    ("product_quality", "Product or service quality"),
    ("price", "Price or fees"),
    ("after_sales", "After-sales: repair, return, exchange"),
    ("logistics", "Logistics and delivery"),
    ("staff_attitude", "Staff attitude and competence"),
    ("other", "Anything else"),
]
DEFAULT_CHANNELS = [
    ("phone", "Phone or hotline"),
    ("email", "E-mail"),
    ("social_media", "Social media"),
    ("web", "Web form"),
    ("in_person", "In person"),
    ("other", "Any other channel"),
]
#: Causes confirmed at the CONFIRMED step (DOMAIN.md section 5).
CAUSES = ("quality_defect", "poor_communication", "expectations_too_high",
          "internal_management", "competitive_pressure", "other")

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CALENDAR = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)(?:-(mon|tue|wed|thu|fri|sat|sun))?"
                       r"\s+(\d\d):(\d\d)-(\d\d):(\d\d)$")


@dataclass(frozen=True)
class BusinessCalendar:
    """Working days (0 = Monday) and the working hours of each, in ``tz``."""

    weekdays: frozenset[int]
    opens: dt.time
    closes: dt.time
    tz: ZoneInfo


@dataclass(frozen=True)
class ComplaintSettings:
    timezone: ZoneInfo
    calendar: BusinessCalendar | None
    escalation_agent_id: int | None
    sensitivity: float
    min_volume: int
    types: dict[str, str]
    channels: dict[str, str]


def parse_calendar(raw: str, tz: ZoneInfo) -> BusinessCalendar | None:
    text = raw.strip().lower()
    if not text:
        return None
    match = _CALENDAR.match(text)
    if match is None:
        raise ConfigError(f"RAPPORT_COMPLAINTS_BUSINESS_HOURS={raw!r}: write working days and "
                          f"hours like 'mon-fri 09:00-17:00', or leave it empty")
    first, last, h1, m1, h2, m2 = match.groups()
    start, end = _DAYS.index(first), _DAYS.index(last or first)
    days = range(start, end + 1) if start <= end else [*range(start, 7), *range(0, end + 1)]
    try:
        opens, closes = dt.time(int(h1), int(m1)), dt.time(int(h2), int(m2))
    except ValueError:
        opens = closes = dt.time()
    if opens >= closes:
        raise ConfigError(f"RAPPORT_COMPLAINTS_BUSINESS_HOURS={raw!r}: the hours must be valid "
                          f"and the day must close after it opens")
    return BusinessCalendar(frozenset(days), opens, closes, tz)


def _registry(answers: list[list[tuple[str, str]] | None]) -> dict[str, str]:
    registry: dict[str, str] = {}
    for pairs in answers:
        for code, description in pairs or []:
            registry.setdefault(code, description)
    return registry


def read_settings(app: Flask) -> ComplaintSettings:
    """Validate the settings once, at start-up: a bad value stops the app with its fix."""
    state = rapport(app)
    extra = state.settings.extra
    tz = state.settings.tz
    calendar = parse_calendar(str(extra.get("RAPPORT_COMPLAINTS_BUSINESS_HOURS", "")), tz)
    raw_agent = str(extra.get("RAPPORT_COMPLAINTS_ESCALATION_AGENT", "")).strip()
    agent_id = None
    if raw_agent:
        try:  # the agent's global id, or its number
            agent_id = parse_id(raw_agent, "Agent")
        except ValueError:
            raise ConfigError(f"RAPPORT_COMPLAINTS_ESCALATION_AGENT={raw_agent!r}: give an "
                              "agent id (global id or number)") from None
    raw_sensitivity = str(extra.get("RAPPORT_COMPLAINTS_DETECTION_SENSITIVITY", "4")).strip()
    try:
        sensitivity = float(raw_sensitivity)
    except ValueError:
        sensitivity = -1.0
    if not 1.0 <= sensitivity <= 12.0:
        raise ConfigError(f"RAPPORT_COMPLAINTS_DETECTION_SENSITIVITY={raw_sensitivity!r}: give a "
                          f"score from 1 to 12 (-log10 of the tail probability; 4 = 1 in 10,000)")
    raw_volume = str(extra.get("RAPPORT_COMPLAINTS_DETECTION_MIN_VOLUME", "10")).strip()
    if not raw_volume.isdigit() or int(raw_volume) < 1:
        raise ConfigError(f"RAPPORT_COMPLAINTS_DETECTION_MIN_VOLUME={raw_volume!r}: give a "
                          f"whole number of complaints, at least 1")
    return ComplaintSettings(
        timezone=tz, calendar=calendar,
        escalation_agent_id=agent_id,
        sensitivity=sensitivity, min_volume=int(raw_volume),
        types=_registry(state.hook.rapport_complaint_types()),
        channels=_registry(state.hook.rapport_complaint_channels()))


def complaint_settings() -> ComplaintSettings:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
