"""Keyset (cursor) pagination: no OFFSET, so page 1,000 costs what page 1 costs."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from graphql import GraphQLError
from sqlalchemy import ColumnElement, and_, or_

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


def bad_input(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE_SIZE
    if first < 0 or first > MAX_PAGE_SIZE:
        raise bad_input(f"first must be between 0 and {MAX_PAGE_SIZE} (got {first}).")
    return first


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"t": value.isoformat()}
    if isinstance(value, Decimal):
        return {"d": str(value)}
    return value


def _typed(value: Any) -> Any:
    if isinstance(value, dict) and "t" in value:
        return dt.datetime.fromisoformat(value["t"])
    if isinstance(value, dict) and "d" in value:
        return Decimal(value["d"])
    return value


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([_plain(v) for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, length: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != length:
            raise ValueError
        return [_typed(v) for v in values]
    except (ValueError, TypeError, json.JSONDecodeError):
        raise bad_input("Invalid cursor: pass the endCursor of a previous page "
                        "unchanged.") from None


def after_condition(columns: Sequence[ColumnElement[Any]], values: Sequence[Any],
                    descending: bool) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``columns`` (all one direction)."""
    clauses = []
    for i, column in enumerate(columns):
        equal = [columns[j] == values[j] for j in range(i)]
        step = column < values[i] if descending else column > values[i]
        clauses.append(and_(*equal, step))
    return or_(*clauses)


@dataclass
class Page:
    """One page of a connection; ``total`` is called only if ``totalCount`` is asked."""

    nodes: list[Any]
    cursors: list[str]
    has_next_page: bool
    has_previous_page: bool
    total: Callable[[], Any] = field(default=lambda: 0)


def make_page(rows: Sequence[Any], first: int, after: str | None,
              key: Callable[[Any], Sequence[Any]], total: Callable[[], Any]) -> Page:
    """Build a page from up to ``first + 1`` rows fetched in keyset order."""
    nodes = list(rows[:first])
    return Page(nodes=nodes, cursors=[encode_cursor(key(n)) for n in nodes],
                has_next_page=len(rows) > first, has_previous_page=after is not None,
                total=total)
