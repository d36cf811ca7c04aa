"""The committed schema.graphql (core + built-in plugins) is what front-end apps code
against: any drift fails until it is reviewed and rewritten with `make schema`."""

from __future__ import annotations

import pathlib

from core.plugins import builtin_plugin_names
from tests.conftest import AppFactory

SDL = pathlib.Path(__file__).resolve().parents[2] / "schema.graphql"


def test_committed_sdl_matches_the_schema(make_app: AppFactory) -> None:
    app = make_app(enabled=builtin_plugin_names())
    built = app.extensions["rapport_graphql"].schema.sdl()
    assert SDL.read_text() == built, (
        "schema.graphql is out of date: review the change, then run `make schema`")
