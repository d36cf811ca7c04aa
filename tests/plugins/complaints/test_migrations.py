"""`rapport db upgrade` on an empty database builds exactly the complaints models."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from core.db import db
from core.migrate import current_heads, upgrade
from tests.conftest import AppFactory


def _drop_everything(app: Any) -> None:
    with app.app_context():
        db.session.remove()
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        else:
            db.metadata.drop_all(db.engine)


def _differences(app: Any) -> list[Any]:
    enabled = app.extensions["rapport"].enabled_plugins

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
                ) -> bool:
        if type_ != "table":
            return True
        table = compare_to if reflected else obj
        return table is not None and table.info.get("rapport_plugin") in (None, *enabled)

    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include,
                                                         "compare_type": True})
        return compare_metadata(context, db.metadata)


def test_upgrade_builds_exactly_the_models(make_app: AppFactory) -> None:
    app = make_app(enabled=["complaints"])
    _drop_everything(app)
    upgrade(app)
    assert "complaints_0001" in current_heads(app)
    with app.app_context():
        tables = {t for t in inspect(db.engine).get_table_names()
                  if t.startswith("complaints_")}
    assert tables == {"complaints_complaint", "complaints_timeline", "complaints_sla_policy"}
    assert _differences(app) == []
    heads = current_heads(app)
    upgrade(app)
    assert current_heads(app) == heads


def test_tables_stay_out_when_the_plugin_is_disabled(make_app: AppFactory) -> None:
    app = make_app(enabled=[])
    _drop_everything(app)
    upgrade(app)
    with app.app_context():
        tables = inspect(db.engine).get_table_names()
    assert not [t for t in tables if t.startswith("complaints_")]
