"""Domain operations: validated data in, domain objects out, one transaction, hooks fired."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from marshmallow import Schema, ValidationError
from sqlalchemy.orm import Session

from core.connections import end_read_only
from core.db import db
from core.errors import ErrorCode, UserError, errors_from_marshmallow
from core.ids import shown_id


_DEPTH = "rapport_transaction_depth"


@contextmanager
def transaction() -> Iterator[Session]:
    """Commit what the block wrote, or roll all of it back (hooks included) on any error.

    Re-entrant: a block inside another neither commits nor rolls back by itself; the
    outermost block does, so a mutation or a job can wrap a service call and the audit
    entry commits in the same transaction as the change. An error inside an inner block
    that the outer block catches still rolls the whole transaction back: what the inner
    block half-wrote cannot be told apart from the rest.
    """
    session = db.session
    depth = session.info.get(_DEPTH, 0)
    if not depth:
        end_read_only(session())  # a read-only request that writes after all (core.connections)
    session.info[_DEPTH] = depth + 1
    try:
        yield session
    except BaseException:
        if depth:
            session.info[_DOOMED] = True
        else:
            session.rollback()
        raise
    else:
        if not depth:
            if session.info.pop(_DOOMED, False):
                session.rollback()
                raise TransactionAborted(
                    "An inner transaction failed; everything was rolled back.")
            session.commit()
    finally:
        session.info[_DEPTH] = depth
        if not depth:
            session.info.pop(_DOOMED, None)


_DOOMED = "rapport_transaction_doomed"


def in_transaction() -> bool:
    """Whether a ``transaction()`` block is open (a new one would be an inner block)."""
    return bool(db.session.info.get(_DEPTH, 0))


class TransactionAborted(RuntimeError):
    """The outermost block ended normally after an inner block had failed."""


def load(schema: Schema, raw: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Validate ``raw`` with ``schema``; a failure becomes a ``UserError`` with field paths."""
    try:
        return dict(schema.load(raw, partial=partial))
    except ValidationError as exc:
        raise UserError(errors_from_marshmallow(exc)) from None


def not_found(what: str, ident: object, field: str = "id", *, type_name: str | None = None
              ) -> UserError:
    """``No <what> with id <ident>.``: a database id is shown as the global id of
    ``type_name`` (the id a client sent and can look up), never as the internal integer."""
    shown = shown_id(type_name, ident) if type_name is not None else ident
    return UserError.single(f"No {what} with id {shown}.", ErrorCode.NOT_FOUND, field)
