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


def test_plugin_filter_fields_follow_their_names_not_their_import_order() -> None:
    """Graphene orders an input type's fields by when each field object was created: the
    plugins' customer-filter fields are mounted afresh in name order, so the SDL does not
    depend on which plugin module a process imported first (it did: the committed SDL
    failed to match in one full run and matched alone)."""
    import graphene
    from marshmallow import fields
    from sqlalchemy import true

    from api.queries import build_filter_input
    from core.services.segments import CustomerFilterField

    def extra(name: str) -> CustomerFilterField:
        return CustomerFilterField(name=name, field=fields.String(), scope="customers:read",
                                   condition=lambda value: true(),
                                   graphql_type=graphene.String(description=name))

    imported_first, imported_later = extra("zeta_field"), extra("alpha_field")
    built = build_filter_input({"zeta_field": imported_first, "alpha_field": imported_later})
    names = list(built._meta.fields)
    assert names[-2:] == ["alpha_field", "zeta_field"]
    assert built._meta.fields["zeta_field"].description == "zeta_field"
