"""`rapport db upgrade` builds exactly the tables the models declare, on both databases."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import column, insert, inspect, table, text

from core.db import JSONDocument, UTCDateTime, db
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


def test_keys_that_wrote_customers_receive_the_reassign_scope(make_app: AppFactory,
                                                              request: Any) -> None:
    """core_0009: giving a customer a new owner needs ``customers:reassign`` since; keys
    holding ``customers:write`` before receive it, so no client that set owners breaks."""
    app = make_app()
    drop_everything(app)
    upgrade(app, "core_0008")
    request.addfinalizer(lambda: upgrade(app))  # every table back for the fixture's clean-up
    keys = table("api_keys", column("name"), column("service"), column("prefix"),
                 column("secret_hash"), column("scopes", JSONDocument),
                 column("created_at", UTCDateTime()))
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(insert(keys), [
            {"name": n, "service": n, "prefix": n, "secret_hash": "0" * 64, "scopes": s,
             "created_at": now}
            for n, s in (("shop", ["customers:read", "customers:write"]),
                         ("reader", ["customers:read"]))])
    upgrade(app)
    with app.app_context():
        scopes = dict(db.session.execute(text("SELECT name, scopes FROM api_keys")).all())
        db.session.remove()
    scopes = {k: v if isinstance(v, list) else json.loads(v) for k, v in scopes.items()}
    assert scopes == {"shop": ["customers:read", "customers:reassign", "customers:write"],
                      "reader": ["customers:read"]}
