"""SLA targets, due times on the business calendar, breach computed when read."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from flask import Flask

from core.config import ConfigError
from core.errors import UserError
from plugins.complaints import service, sla
from plugins.complaints.config import parse_calendar
from tests.conftest import AppFactory
from tests.plugins.complaints.conftest import customer, file, move

PARIS = ZoneInfo("Europe/Paris")


def _paris(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS).astimezone(dt.timezone.utc)


def test_business_hours_arithmetic() -> None:
    calendar = parse_calendar("mon-fri 09:00-17:00", PARIS)
    # Friday 2026-11-20 16:00 Paris + 4 working hours = Monday 12:00
    assert sla.add_hours(_paris(2026, 11, 20, 16), 4, calendar) == _paris(2026, 11, 23, 12)
    # Saturday night: the clock starts Monday 09:00
    assert sla.add_hours(_paris(2026, 11, 21, 23), 8, calendar) == _paris(2026, 11, 23, 17)
    # 24 working hours = three working days
    assert sla.add_hours(_paris(2026, 11, 23, 9), 24, calendar) == _paris(2026, 11, 25, 17)
    # Across the end of summer time (Sunday 2026-10-25): working hours stay local
    assert sla.add_hours(_paris(2026, 10, 23, 16), 2, calendar) == _paris(2026, 10, 26, 10)
    assert sla.add_hours(_paris(2026, 11, 20, 16), 4, None) == _paris(2026, 11, 20, 20)


@pytest.mark.parametrize("raw", ["weekdays", "mon-fri 17:00-09:00", "mon-fri 25:00-26:00"])
def test_bad_calendars_stop_start_up(raw: str) -> None:
    with pytest.raises(ConfigError):
        parse_calendar(raw, PARIS)


def test_calendar_setting_drives_due_times(make_app: AppFactory) -> None:
    app = make_app(enabled=["complaints"], RAPPORT_TIMEZONE="Europe/Paris",
                   RAPPORT_COMPLAINTS_BUSINESS_HOURS="mon-fri 09:00-17:00")
    with app.app_context():
        friday = _paris(2026, 11, 20, 16)
        high = file(customer(), at=friday, severity="high")
        assert high.first_response_due == _paris(2026, 11, 23, 12)
        critical = file(customer("Bob"), at=friday, severity="critical")  # wall clock
        assert critical.first_response_due == friday + dt.timedelta(hours=1)
        assert critical.resolution_due == friday + dt.timedelta(hours=24)


def test_configured_targets_apply_to_new_complaints(complaints_app: Flask) -> None:
    start = dt.datetime(2026, 11, 2, 8, tzinfo=dt.timezone.utc)
    before = file(customer(), at=start, severity="low")
    service.set_sla_policy({"severity": "low", "first_response_hours": 2,
                            "resolution_hours": 10, "business_hours": False})
    after = file(customer("Bob"), at=start, severity="low")
    assert before.first_response_due == start + dt.timedelta(hours=24)
    assert after.first_response_due == start + dt.timedelta(hours=2)
    assert after.resolution_due == start + dt.timedelta(hours=10)
    with pytest.raises(UserError) as exc:
        service.set_sla_policy({"severity": "low", "first_response_hours": 5,
                                "resolution_hours": 4})
    assert [e.field for e in exc.value.errors] == ["resolutionHours"]


def test_breach_is_computed_at_read_time(complaints_app: Flask) -> None:
    start = dt.datetime(2026, 11, 2, 8, tzinfo=dt.timezone.utc)
    complaint = file(customer(), at=start, severity="high")  # 4 h / 72 h
    assert not sla.state(complaint, start + dt.timedelta(hours=3)).breached
    late = sla.state(complaint, start + dt.timedelta(hours=5))
    assert late.first_response_breached and not late.resolution_breached
    move(complaint.id, "confirmed", start + dt.timedelta(hours=2), cause="quality_defect")
    assert not sla.state(complaint, start + dt.timedelta(hours=71)).breached
    assert sla.state(complaint, start + dt.timedelta(hours=73)).resolution_breached
