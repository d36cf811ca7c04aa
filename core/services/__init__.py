"""Domain operations: validated data in, domain objects out, one transaction, hooks fired."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from marshmallow import Schema, ValidationError
from sqlalchemy.orm import Session

from core.db import db
from core.errors import ErrorCode, UserError, errors_from_marshmallow


@contextmanager
def transaction() -> Iterator[Session]:
    """Commit what the block wrote, or roll all of it back (hooks included) on any error."""
    session = db.session
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


def load(schema: Schema, raw: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Validate ``raw`` with ``schema``; a failure becomes a ``UserError`` with field paths."""
    try:
        return dict(schema.load(raw, partial=partial))
    except ValidationError as exc:
        raise UserError(errors_from_marshmallow(exc)) from None


def not_found(what: str, ident: object, field: str = "id") -> UserError:
    return UserError.single(f"No {what} with id {ident}.", ErrorCode.NOT_FOUND, field)
