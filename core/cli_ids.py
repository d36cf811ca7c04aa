"""The CLI's id arguments: a global id (as GraphQL, reports and messages show it) or the
plain database number, so ``rapport surveys report U3VydmV5OjM=`` and ``... report 3``
name the same survey."""

from __future__ import annotations

from typing import Any

import click

from core.ids import parse_id


class ObjectId(click.ParamType):
    """A click type for the id of one GraphQL type; converts to the database id."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        self.name = f"{type_name} id"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return parse_id(value, self.type_name)
        except ValueError as exc:
            self.fail(f"{exc} Give the {self.type_name}'s global id (as GraphQL shows it) "
                      "or its number.", param, ctx)
