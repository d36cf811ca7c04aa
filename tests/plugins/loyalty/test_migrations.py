"""`rapport db upgrade` on an empty database builds exactly the loyalty models."""

from __future__ import annotations


from sqlalchemy import inspect

from core.db import db
from core.migrate import current_heads, upgrade
from tests.conftest import AppFactory
from tests.migrations import drop_everything, schema_differences


def test_upgrade_builds_exactly_the_models(make_app: AppFactory) -> None:
    app = make_app(enabled=["loyalty"])
    drop_everything(app)
    upgrade(app)
    assert "loyalty_0002" in current_heads(app)
    with app.app_context():
        tables = {t for t in inspect(db.engine).get_table_names() if t.startswith("loyalty_")}
    assert tables == {"loyalty_account", "loyalty_ledger", "loyalty_lot_use", "loyalty_earn_rule",
                      "loyalty_tier", "loyalty_tier_history", "loyalty_reward"}
    assert schema_differences(app) == []
    heads = current_heads(app)
    upgrade(app)  # a second run has nothing to do
    assert current_heads(app) == heads


def test_tables_stay_out_when_the_plugin_is_disabled(make_app: AppFactory) -> None:
    app = make_app(enabled=[])
    drop_everything(app)
    upgrade(app)
    with app.app_context():
        tables = inspect(db.engine).get_table_names()
    assert "customers" in tables
    assert not [t for t in tables if t.startswith("loyalty_")]
