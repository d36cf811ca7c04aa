"""`rapport db upgrade` builds exactly the segments models; the nightly schedule is seeded."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import column, insert, inspect, select, table, text

from core.db import JSONDocument, UTCDateTime, db
from core.job_tables import Schedule
from core.migrate import current_heads, upgrade
from core.scheduler import seed_schedules
from tests.conftest import AppFactory
from tests.migrations import drop_everything, schema_differences


def test_upgrade_builds_exactly_the_models(make_app: AppFactory) -> None:
    app = make_app(enabled=["segments"])
    drop_everything(app)
    upgrade(app)
    assert "segments_0002" in current_heads(app)
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


def test_names_become_case_folded_keys_on_existing_rows(make_app: AppFactory) -> None:
    """segments_0002 on rows saved before: a key longer than its name ("ß" folds to "ss")
    fits, and two names one key apart (possible on SQLite before) are told apart by
    renaming the later one, within the name's 200 characters."""
    app = make_app(enabled=["segments"])
    drop_everything(app)
    upgrade(app, "segments_0001")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    segments = table("segments_segments", column("name"), column("filter", JSONDocument),
                     column("created_by", JSONDocument), column("created_at", UTCDateTime()),
                     column("updated_at", UTCDateTime()))
    names = ["ß" * 150, "A" * 200, "a" * 200, "Plain"]
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(insert(segments), [{"name": n, "filter": {}, "created_by": {},
                                         "created_at": now, "updated_at": now}
                                        for n in names])
    upgrade(app)
    with app.app_context():
        rows = db.session.execute(text(
            "SELECT id, name, name_key FROM segments_segments ORDER BY id")).all()
        db.session.remove()
    renamed = "a" * (200 - len(f" ({rows[2].id})")) + f" ({rows[2].id})"
    assert [(r.name, r.name_key) for r in rows] == [
        ("ß" * 150, "ss" * 150), ("A" * 200, "a" * 200), (renamed, renamed), ("Plain", "plain")]
