"""The application factory: config -> database -> plugin manager -> app."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pluggy
from flask import Flask, current_app
from sqlalchemy import event
from sqlalchemy.engine import Engine

from core import connections, crypto, http, ratelimit
from core.builtin import MONETARY_KINDS
from core.config import Settings, load_settings
from core.db import db
from core.plugins import PluginInfo, build_plugin_manager, enabled_plugin_names
from core import timeouts  # noqa: F401 - registers the statement time limits on engines


@dataclass
class Rapport:
    """Per-app state: settings, the plugin manager and the registries plugins fill."""

    settings: Settings
    pm: pluggy.PluginManager
    plugins: list[PluginInfo]
    scopes: dict[str, str] = field(default_factory=dict)
    interaction_kinds: dict[str, str] = field(default_factory=dict)
    monetary_kinds: frozenset[str] = MONETARY_KINDS

    @property
    def hook(self) -> Any:
        return self.pm.hook

    @property
    def enabled_plugins(self) -> set[str]:
        return enabled_plugin_names(self.pm)


def rapport(app: Flask | None = None) -> Rapport:
    """The Rapport state of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    return cast(Rapport, target.extensions["rapport"])


def _database_url(settings: Settings, app: Flask) -> str:
    url = settings.database_url
    if not url:
        os.makedirs(app.instance_path, exist_ok=True)
        return f"sqlite:///{os.path.join(app.instance_path, 'rapport.db')}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        # psycopg 3 is the supported driver; accept the plain URL people copy from docs.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _registry(pairs_per_plugin: Iterable[list[tuple[str, str]] | None]) -> dict[str, str]:
    registry: dict[str, str] = {}
    for pairs in pairs_per_plugin:
        for name, description in pairs or []:
            registry.setdefault(name, description)
    return registry


def create_app(config: Mapping[str, Any] | None = None, *, plugins: Iterable[object] = ()
               ) -> Flask:
    """Build a Rapport app.

    ``config`` overrides the ``RAPPORT_*`` environment (same key names). ``plugins`` are
    extra plugin objects to register directly, after the entry-point plugins.
    """
    settings = load_settings(config)
    app = Flask("rapport", instance_path=settings.extra.get("RAPPORT_INSTANCE_PATH") or None)
    settings = replace(settings, secret_key=crypto.secret_key(app, settings))
    app.config.update(
        SECRET_KEY=settings.secret_key,
        TESTING=settings.env == "test",
        SQLALCHEMY_DATABASE_URI=_database_url(settings, app),
        # No pre-ping round trip per checkout: core.connections checks liveness locally.
        SQLALCHEMY_ENGINE_OPTIONS={"pool_recycle": connections.POOL_RECYCLE_SECONDS},
    )
    app.json.sort_keys = False  # type: ignore[attr-defined] - GraphQL answers in query order
    crypto.init_app(app, settings)
    db.init_app(app)
    from core import operations  # it uses rapport() from this module

    operations.init_app(app, settings)
    http.init_app(app)

    pm, infos = build_plugin_manager(settings, plugins)
    state = Rapport(settings=settings, pm=pm, plugins=infos)
    state.scopes = _registry(pm.hook.rapport_register_scopes())
    state.interaction_kinds = _registry(pm.hook.rapport_interaction_kinds())
    app.extensions["rapport"] = state

    routes = [bp for blueprints in pm.hook.rapport_register_routes() for bp in blueprints or []]
    for blueprint in routes:
        app.register_blueprint(blueprint)
    ratelimit.init_app(app, routes, settings.rate_limit, settings.rate_limit_storage)
    pm.hook.rapport_init_app(app=app)
    for commands in pm.hook.rapport_cli_commands():
        for command in commands or []:
            app.cli.add_command(command)
    return app
