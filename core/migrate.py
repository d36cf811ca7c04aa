"""Alembic, wired to the app: core's branch plus every enabled plugin's branch."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from flask import Flask

from core.app import rapport
from core.crypto import Progress
from core.db import db

MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")


def table_filter(enabled: set[str]) -> Callable[..., bool]:
    """Alembic's ``include_object``: core tables and the enabled plugins' tables only."""

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool,
                       compare_to: Any) -> bool:
        if type_ != "table":
            return True
        table = compare_to if reflected else obj
        if table is None:  # in the database, declared by no loaded model
            return name == "alembic_version"
        return table.info.get("rapport_plugin") in (None, *enabled)

    return include_object


def alembic_config(app: Flask, connection: Any) -> Config:
    state = rapport(app)
    dirs = [os.path.join(MIGRATIONS, "versions")]
    for extra in state.hook.rapport_migration_dirs():
        dirs.extend(extra or [])
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("version_locations", " ".join(dirs))
    config.set_main_option("path_separator", "space")
    config.attributes["connection"] = connection
    config.attributes["enabled_plugins"] = state.enabled_plugins
    return config


def upgrade(app: Flask, target: str = "heads", progress: Progress | None = None) -> None:
    """Bring the database to the newest revision of every enabled branch.

    ``progress`` shows the batches of data migrations (the CLI passes a progress bar).
    """
    with app.app_context(), db.engine.begin() as connection:
        config = alembic_config(app, connection)
        config.attributes["progress"] = progress
        command.upgrade(config, target)


def revision(app: Flask, message: str, branch: str, autogenerate: bool,
             version_dir: str | None = None) -> None:
    """Write a revision on ``branch``; a plugin's first one starts its branch in
    ``version_dir`` (one of its ``rapport_migration_dirs``), depending on core's head."""
    with app.app_context(), db.engine.begin() as connection:
        config = alembic_config(app, connection)
        script = ScriptDirectory.from_config(config)
        if any(branch in rev.branch_labels for rev in script.walk_revisions()):
            command.revision(config, message=message, autogenerate=autogenerate,
                             head=f"{branch}@head", version_path=version_dir)
            return
        if not version_dir:
            raise CommandError(f"Branch {branch!r} has no revision yet: give --version-dir, "
                               f"the plugin's migrations directory, to start it.")
        command.revision(config, message=message, autogenerate=autogenerate, head="base",
                         branch_label=branch, version_path=version_dir,
                         depends_on=script.get_revision("core@head").revision)


def current_heads(app: Flask) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    with app.app_context(), db.engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())
