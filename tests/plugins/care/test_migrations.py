"""`rapport db upgrade` on an empty database builds exactly the care models."""

from __future__ import annotations

from sqlalchemy import inspect

from core.db import db
from core.migrate import current_heads, upgrade
from tests.conftest import AppFactory
from tests.migrations import drop_everything, schema_differences


def test_upgrade_builds_exactly_the_models(make_app: AppFactory) -> None:
    app = make_app(enabled=["care"])
    drop_everything(app)
    upgrade(app)
    assert "care_0003" in current_heads(app)
    with app.app_context():
        tables = {t for t in inspect(db.engine).get_table_names() if t.startswith("care_")}
    assert tables == {"care_tasks", "care_rules", "care_rule_runs", "care_follow_ups",
                      "care_incidents", "care_announced_occasions"}
    assert schema_differences(app) == []
