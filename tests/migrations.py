"""Helpers for the tests that run `rapport db upgrade` on an empty database."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from sqlalchemy import text

from core.db import db
from core.migrate import table_filter


def drop_everything(app: Flask) -> None:
    """The fixtures create tables with create_all; start from nothing instead."""
    with app.app_context():
        db.session.remove()
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        else:
            db.metadata.drop_all(db.engine)


def schema_differences(app: Flask) -> list[Any]:
    """What Alembic's autogenerate sees between the models and the database."""
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "include_object": table_filter(app.extensions["rapport"].enabled_plugins),
            "compare_type": True})
        return compare_metadata(context, db.metadata)
