"""Alembic environment: runs on the app's engine; only enabled plugins' tables count."""

from __future__ import annotations

from typing import Any

from alembic import context

from core.crypto import EncryptedString
from core.db import Money, UTCDateTime, db
from core.migrate import table_filter

config = context.config
enabled: set[str] = config.attributes["enabled_plugins"]


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render our column types as plain names imported from ``core.db`` / ``core.crypto``."""
    if type_ == "type" and isinstance(obj, (Money, UTCDateTime, EncryptedString)):
        name = type(obj).__name__
        autogen_context.imports.add(f"from {type(obj).__module__} import {name}")
        return f"{name}()"
    return False


context.configure(
    render_item=render_item,
    connection=config.attributes["connection"],
    target_metadata=db.metadata,
    include_object=table_filter(enabled),
    render_as_batch=True,  # SQLite needs table rebuilds for most ALTERs
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
