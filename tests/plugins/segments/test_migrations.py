"""`rapport db upgrade` builds exactly the segments models; the nightly schedule is seeded."""

from __future__ import annotations

from sqlalchemy import inspect, select

from core.db import db
from core.job_tables import Schedule
from core.migrate import current_heads, upgrade
from core.scheduler import seed_schedules
from tests.conftest import AppFactory
from tests.migrations import drop_everything, schema_differences


def test_upgrade_builds_exactly_the_models(make_app: AppFactory) -> None:
    app = make_app(enabled=["segments"])
    drop_everything(app)
    upgrade(app)
    assert "segments_0001" in current_heads(app)
    with app.app_context():
        tables = {t for t in inspect(db.engine).get_table_names() if t.startswith("segments_")}
    assert tables == {"segments_segments", "segments_value_tiers"}
    assert schema_differences(app) == []


def test_the_nightly_tiers_schedule_is_seeded(make_app: AppFactory) -> None:
    app = make_app(enabled=["segments"])
    with app.app_context():
        assert "segments-value-tiers" in seed_schedules()
        schedule = db.session.scalar(select(Schedule).where(
            Schedule.name == "segments-value-tiers"))
        assert (schedule.kind, schedule.cron) == ("segments.tiers", "40 2 * * *")
