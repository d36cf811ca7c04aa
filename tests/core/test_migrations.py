"""`rapport db upgrade` builds exactly the tables the models declare, on both databases."""

from __future__ import annotations


from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from core.db import db
from core.migrate import alembic_config, current_heads, upgrade
from tests.conftest import AppFactory
from tests.migrations import drop_everything, schema_differences


def test_upgrade_matches_the_models_with_a_plugin_branch(make_app: AppFactory) -> None:
    app = make_app(enabled=["referrals"])
    drop_everything(app)
    upgrade(app)
    with app.app_context(), db.engine.connect() as conn:
        script = ScriptDirectory.from_config(alembic_config(app, conn))
        assert current_heads(app) == set(script.get_heads())
    assert "referrals_0001" in current_heads(app)
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
    assert {"customers", "interactions", "referrals_referral", "alembic_version"} <= tables
    assert schema_differences(app) == []
    upgrade(app)  # idempotent


def test_disabled_plugin_tables_are_not_created(make_app: AppFactory) -> None:
    app = make_app(enabled=[])
    drop_everything(app)
    upgrade(app)
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
    assert "referrals_referral" not in tables
    assert "customers" in tables
