"""`rapport db upgrade` on an empty database builds exactly the complaints models."""

from __future__ import annotations


from sqlalchemy import inspect

from core.db import db
from core.migrate import current_heads, upgrade
from tests.conftest import AppFactory
from tests.migrations import drop_everything, schema_differences


def test_upgrade_builds_exactly_the_models(make_app: AppFactory) -> None:
    app = make_app(enabled=["complaints"])
    drop_everything(app)
    upgrade(app)
    assert "complaints_0001" in current_heads(app)
    with app.app_context():
        tables = {t for t in inspect(db.engine).get_table_names()
                  if t.startswith("complaints_")}
    assert tables == {"complaints_complaint", "complaints_timeline", "complaints_sla_policy"}
    assert schema_differences(app) == []
    heads = current_heads(app)
    upgrade(app)
    assert current_heads(app) == heads


def test_tables_stay_out_when_the_plugin_is_disabled(make_app: AppFactory) -> None:
    app = make_app(enabled=[])
    drop_everything(app)
    upgrade(app)
    with app.app_context():
        tables = inspect(db.engine).get_table_names()
    assert not [t for t in tables if t.startswith("complaints_")]
