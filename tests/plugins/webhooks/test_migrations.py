"""`rapport db upgrade` on an empty database builds exactly the webhooks models."""

from __future__ import annotations

from sqlalchemy import inspect

from core.db import db
from core.migrate import current_heads, upgrade
from tests.conftest import AppFactory
from tests.migrations import drop_everything, schema_differences


def test_upgrade_builds_exactly_the_models(make_app: AppFactory) -> None:
    app = make_app(enabled=["webhooks"])
    drop_everything(app)
    upgrade(app)
    assert "webhooks_0001" in current_heads(app)
    with app.app_context():
        tables = {t for t in inspect(db.engine).get_table_names() if t.startswith("webhooks_")}
    assert tables == {"webhooks_endpoints", "webhooks_deliveries", "webhooks_attempts"}
    assert schema_differences(app) == []


def test_tables_stay_out_when_the_plugin_is_disabled(make_app: AppFactory) -> None:
    app = make_app(enabled=[])
    drop_everything(app)
    upgrade(app)
    with app.app_context():
        tables = inspect(db.engine).get_table_names()
    assert not [t for t in tables if t.startswith("webhooks_")]
