"""`rapport db upgrade` builds exactly the tables the models declare, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from core.db import db
from core.migrate import alembic_config, current_heads, upgrade
from tests.conftest import AppFactory


def _empty_database(app: Any) -> None:
    """The fixture created tables with create_all; start from nothing instead."""
    with app.app_context():
        db.session.remove()
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        else:
            db.metadata.drop_all(db.engine)


def _diff(app: Any) -> list[Any]:
    with app.app_context(), db.engine.connect() as conn:
        enabled = app.extensions["rapport"].enabled_plugins

        def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
                    ) -> bool:
            if type_ == "table":
                table = compare_to if reflected else obj
                if table is None:
                    return False
                return table.info.get("rapport_plugin") in (None, *enabled)
            return True

        context = MigrationContext.configure(conn, opts={
            "include_object": include, "compare_type": True})
        return compare_metadata(context, db.metadata)


def test_upgrade_matches_the_models_with_a_plugin_branch(make_app: AppFactory) -> None:
    app = make_app(enabled=["referrals"])
    _empty_database(app)
    upgrade(app)
    with app.app_context(), db.engine.connect() as conn:
        script = ScriptDirectory.from_config(alembic_config(app, conn))
        assert current_heads(app) == set(script.get_heads())
    assert "referrals_0001" in current_heads(app)
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
    assert {"customers", "interactions", "referrals_referral", "alembic_version"} <= tables
    assert _diff(app) == []
    upgrade(app)  # idempotent


def test_disabled_plugin_tables_are_not_created(make_app: AppFactory) -> None:
    app = make_app(enabled=[])
    _empty_database(app)
    upgrade(app)
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
    assert "referrals_referral" not in tables
    assert "customers" in tables
