"""The always-on built-in plugin that serves the GraphQL API.

Kept light (imports inside the hooks): ``rapport --help`` imports it for its command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from core.hookspecs import hookimpl

if TYPE_CHECKING:
    from flask import Blueprint, Flask


@hookimpl
def rapport_add_hookspecs(plugin_manager: object) -> None:
    from api import hookspecs

    plugin_manager.add_hookspecs(hookspecs)  # type: ignore[attr-defined]


@hookimpl
def rapport_init_app(app: Flask) -> None:
    from api import view
    from api.schema import build_schema
    from core.app import rapport

    state = rapport(app)
    app.extensions["rapport_graphql"] = view.GraphQLService(build_schema(state.pm),
                                                            state.settings)


@hookimpl
def rapport_register_routes() -> list[Blueprint]:
    from api import graphiql, view

    return [view.blueprint, graphiql.blueprint]


@click.command("schema")
def schema_command() -> None:
    """Print the GraphQL schema (SDL) with every enabled plugin."""
    from flask import current_app

    click.echo(current_app.extensions["rapport_graphql"].schema.sdl(), nl=False)


@hookimpl
def rapport_cli_commands() -> list[click.Command]:
    return [schema_command]
