"""Keyset (cursor) pagination: no OFFSET, so page 1,000 costs what page 1 costs."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from graphql import GraphQLError
from sqlalchemy import ColumnElement, tuple_
from sqlalchemy.orm import QueryableAttribute

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
    if isinstance(value, dt.date):
        return value.toordinal()  # read back as a date where the cursor's kind is dt.date
    if isinstance(value, Decimal):
        return {"d": str(value)}
    return value


def _typed(value: Any, kind: type | None = None) -> Any:
    if kind is dt.date:  # a day is its ordinal (see ``_plain``)
        if (not isinstance(value, int) or isinstance(value, bool)
                or not 1 <= value <= dt.date.max.toordinal()):
            raise ValueError
        return dt.date.fromordinal(value)
    if isinstance(value, dict) and "t" in value:
        return dt.datetime.fromisoformat(value["t"])
    if isinstance(value, dict) and "d" in value:
        return Decimal(value["d"])
    return value


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([_plain(v) for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


#: Cursors we hand out are a few dozen characters; anything much longer is not one of ours.
_MAX_CURSOR_LENGTH = 1024
_INT64 = 2**63


def _valid_cursor_value(value: Any, kind: type | None) -> bool:
    """A value a keyset comparison can bind: scalar, aware, in BIGINT range, of ``kind``."""
    if isinstance(value, bool) or isinstance(value, (list, dict)):
        return False
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        return False
    if isinstance(value, dt.datetime) and value.utcoffset() is None:
        return False
    if isinstance(value, Decimal) and not value.is_finite():
        return False
    # JSON reads NaN and Infinity, which SQL compares as NULL (SQLite) or above every
    # number (PostgreSQL): never in one of our cursors.
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if kind is None:
        return True
    return isinstance(value, kind) and not (kind is float and isinstance(value, int))


def decode_cursor(cursor: str, length: int,
                  kinds: Sequence[type] | None = None) -> list[Any]:
    """The values of a cursor from ``encode_cursor``; ``kinds``: the type of each value
    (``dt.date`` values are read back from their ordinal only where the kind says so).

    Anything else (edited, truncated, from another sort order) is BAD_USER_INPUT rather
    than a database error.
    """
    try:
        if len(cursor) > _MAX_CURSOR_LENGTH:
            raise ValueError
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != length:
            raise ValueError
        typed = [_typed(v, kinds[i] if kinds else None) for i, v in enumerate(values)]
        if not all(_valid_cursor_value(v, kinds[i] if kinds else None)
                   for i, v in enumerate(typed)):
            raise ValueError
        return typed
    except (ValueError, TypeError, ArithmeticError, RecursionError):
        raise bad_input("Invalid cursor: pass the endCursor of a previous page "
                        "unchanged.") from None


def after_condition(columns: Sequence[ColumnElement[Any]], values: Sequence[Any],
                    descending: bool) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``columns`` (all one direction).

    A row-value comparison, ``(c1, c2) > (v1, v2)``: PostgreSQL turns it into the start of
    an index range on an index over ``(c1, c2)``, so page 1,000 reads what page 1 reads.
    The equivalent ``c1 > v1 OR (c1 = v1 AND c2 > v2)`` is only a filter: the scan then
    starts at the beginning of the index. The columns must not be NULL (sort NULLs through
    ``coalesce``). SQLite supports row values since 3.15.
    """
    if len(columns) == 1:
        return columns[0] < values[0] if descending else columns[0] > values[0]
    row = tuple_(*columns)
    return row < tuple(values) if descending else row > tuple(values)


class LazyCursors(Sequence[str]):
    """The cursors of a page's nodes, each encoded on first use.

    Most queries select no cursor; encoding one costs a few microseconds (JSON + base64),
    which adds up on nested connections (100 customers x 5 interactions).
    """

    __slots__ = ("_nodes", "_key", "_encoded")

    def __init__(self, nodes: Sequence[Any], key: Callable[[Any], Sequence[Any]]):
        self._nodes = nodes
        self._key = key
        self._encoded: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self._nodes)))]
        if index < 0:
            index += len(self._nodes)
        cursor = self._encoded.get(index)
        if cursor is None:
            cursor = self._encoded[index] = encode_cursor(self._key(self._nodes[index]))
        return cursor

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return repr(list(self))


@dataclass
class Page:
    """One page of a connection; ``total`` is called only if ``totalCount`` is asked.

    ``cursors`` is any sequence of strings (``make_page`` gives a ``LazyCursors``).
    """

    nodes: list[Any]
    cursors: Sequence[str]
    has_next_page: bool
    has_previous_page: bool
    total: Callable[[], Any] = field(default=lambda: 0)


def make_page(rows: Sequence[Any], first: int, after: str | None,
              key: Callable[[Any], Sequence[Any]], total: Callable[[], Any]) -> Page:
    """Build a page from up to ``first + 1`` rows fetched in keyset order."""
    nodes = list(rows[:first])
    return Page(nodes=nodes, cursors=LazyCursors(nodes, key),
                has_next_page=len(rows) > first, has_previous_page=bool(after),
                total=total)


@dataclass(frozen=True, eq=False)  # eq: SQL expressions compare into SQL, not bools
class Keyset:
    """A list's order, stated once for the cursor condition, the ORDER BY, a row's cursor
    and the cursor's types; build one per list (a module constant for a nested list, whose
    loader and resolver share it).

    ``order``: the sort keys, ORM attributes or SQL expressions (coalesce NULLs away), the
    last one unique; ``kinds``: the Python type of each cursor value (``int``, ``str``,
    ``float``, ``dt.datetime``, ``dt.date``, ``Decimal``), so an edited cursor is
    BAD_USER_INPUT, never a database error; ``descending``: the direction of every key;
    ``key``: a row's cursor values, needed where a key is not a plain attribute (the
    default reads each attribute's name off the row: ORM objects and named rows alike).
    """

    order: tuple[Any, ...]
    kinds: tuple[type, ...]
    descending: bool = False
    key: Callable[[Any], Sequence[Any]] | None = None

    def __post_init__(self) -> None:
        if len(self.order) != len(self.kinds):
            raise TypeError("Keyset: one kind per sort key.")
        if self.key is None and not all(isinstance(c, QueryableAttribute)
                                        for c in self.order):
            raise TypeError("Keyset: pass key= to read the cursor of an expression.")

    def decode(self, after: str | None) -> tuple[Any, ...] | None:
        """The typed values of the cursor ``after`` (None for the first page)."""
        return tuple(decode_cursor(after, len(self.order), self.kinds)) if after else None

    def after(self, values: Sequence[Any], columns: Sequence[Any] = ()) -> ColumnElement[bool]:
        """Rows strictly after the cursor values, in this order (of ``columns`` if given:
        the same keys read off a subquery)."""
        return after_condition(list(columns or self.order), values, self.descending)

    def ordering(self, columns: Sequence[Any] = ()) -> list[Any]:
        """The ORDER BY of this order (of ``columns`` if given, as for ``after``)."""
        keys = list(columns or self.order)
        return [c.desc() for c in keys] if self.descending else keys

    def values(self, row: Any) -> Sequence[Any]:
        """A row's cursor values."""
        if self.key is not None:
            return self.key(row)
        return [getattr(row, c.key) for c in self.order]

    def page(self, rows: Sequence[Any], size: int, after: str | None,
             total: Callable[[], Any]) -> Page:
        """A page of ``size`` from up to ``size + 1`` rows fetched in this order."""
        return make_page(rows, size, after, self.values, total)

    def query_page(self, query: Any, first: int | None, after: str | None,
                   total: Callable[[], Any] | None = None) -> Page:
        """One page of ``query`` (an ORM ``select`` without ORDER BY) after ``after``; the
        total counts the unpaged query (or calls ``total``) when a client selects it."""
        from sqlalchemy import func, select

        from core.db import db

        size = page_size(first)
        values = self.decode(after)
        paged = query if values is None else query.where(self.after(values))
        rows = db.session.scalars(paged.order_by(*self.ordering()).limit(size + 1)).all()
        return self.page(rows, size, after, total or (lambda: db.session.scalar(
            select(func.count()).select_from(query.subquery()))))


def keyset_page(query: Any, order: Sequence[Any], first: int | None, after: str | None, *,
                kinds: Sequence[type], descending: bool = False,
                key: Callable[[Any], Sequence[Any]] | None = None,
                total: Callable[[], Any] | None = None) -> Page:
    """One page of ``query`` (an ORM ``select``) in the order of the ``order`` attributes
    or expressions (all ascending, or all descending), after the cursor ``after``;
    ``kinds`` are the cursor values' types, so an edited cursor is BAD_USER_INPUT, not a
    database error; ``key``, a row's cursor values where ``order`` holds an expression.

    The direction is given once, for the cursor condition and the ORDER BY alike, and the
    total counts the unpaged query when a client selects it (or calls ``total``, e.g. a
    batched count). (``Keyset.query_page``.)
    """
    return Keyset(tuple(order), tuple(kinds), descending, key).query_page(query, first, after,
                                                                          total)


def rows_per_parent(model: Any, parent: Any, keys: Sequence[Any], keyset: Keyset,
                    limit: int, after: Sequence[Any] | None) -> list[list[Any]]:
    """For a nested connection's loader: up to ``limit`` rows of ``model`` for each of the
    ``keys`` of its ``parent`` column (a mapped attribute), in ``keyset``'s order after the
    typed cursor values ``after`` (``Keyset.decode``); a list per key, in ``keys``' order.

    One ROW_NUMBER() query for a whole page of parents (windowed over the ids, then the
    rows joined by ``model.id``), however many parents the page has.
    """
    from collections import defaultdict

    from sqlalchemy import func, select

    from core.db import db

    where = [parent.in_(keys)]
    if after is not None:
        where.append(keyset.after(after))
    position = func.row_number().over(partition_by=parent,
                                      order_by=keyset.ordering()).label("position")
    ranked = select(model.id, position).where(*where).subquery()
    found: dict[Any, list[Any]] = defaultdict(list)
    for row in db.session.scalars(
            select(model).join(ranked, ranked.c.id == model.id)
            .where(ranked.c.position <= limit).order_by(parent, *keyset.ordering())):
        found[getattr(row, parent.key)].append(row)
    return [found.get(k, []) for k in keys]
