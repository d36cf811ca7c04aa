"""The always-on built-in plugin that serves the GraphQL API."""

from __future__ import annotations

import click
from flask import Blueprint, Flask, current_app

from api import graphiql, view
from api.schema import build_schema
from core.app import rapport
from core.hookspecs import hookimpl


@hookimpl
def rapport_add_hookspecs(plugin_manager: object) -> None:
    from api import hookspecs

    plugin_manager.add_hookspecs(hookspecs)  # type: ignore[attr-defined]


@hookimpl
def rapport_init_app(app: Flask) -> None:
    state = rapport(app)
    app.extensions["rapport_graphql"] = view.GraphQLService(build_schema(state.pm),
                                                            state.settings)


@hookimpl
def rapport_register_routes() -> list[Blueprint]:
    return [view.blueprint, graphiql.blueprint]


@click.command("schema")
def schema_command() -> None:
    """Print the GraphQL schema (SDL) with every enabled plugin."""
    click.echo(current_app.extensions["rapport_graphql"].schema.sdl(), nl=False)


@hookimpl
def rapport_cli_commands() -> list[click.Command]:
    return [schema_command]
