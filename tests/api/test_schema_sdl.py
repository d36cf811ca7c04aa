"""The committed schema.graphql is the API front-end apps code against: drift fails."""

from __future__ import annotations

import pathlib

from flask import Flask

SDL = pathlib.Path(__file__).resolve().parents[2] / "schema.graphql"


def test_committed_sdl_matches_the_schema(app: Flask) -> None:
    built = app.extensions["rapport_graphql"].schema.sdl()
    assert SDL.read_text() == built, (
        "schema.graphql is out of date: review the change, then run `make schema`")
