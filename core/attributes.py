"""Declared customer attributes: the one rule that types their values on every write path
(createCustomer, updateCustomer, the CSV / JSON Lines import), so a number attribute holds
numbers whichever way it was written. Undeclared keys are kept as given, untyped."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from core.db import db
from core.errors import ErrorCode, FieldError
from core.models import AttributeType, CustomerAttributeDefinition

_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})


def typed_attribute(definition: CustomerAttributeDefinition, value: Any) -> Any:
    """A declared attribute's value in its type. Text is read as a file gives it ("12",
    "yes", "2024-05-31"); typed JSON values pass when they already fit.

    Raises ``ValueError`` with a message for the user (or the rejects file).
    """
    kind = AttributeType(definition.type)
    if kind is AttributeType.NUMBER:
        return _number(value)
    if kind is AttributeType.BOOLEAN:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError("true or false is expected (also yes/no, 1/0).")
    if kind is AttributeType.DATE:
        try:
            return dt.date.fromisoformat(str(value).strip()).isoformat()
        except ValueError:
            raise ValueError("an ISO date such as 2024-05-31 is expected.") from None
    if kind is AttributeType.CATEGORY:
        text = str(value).strip()
        if text not in (definition.categories or []):
            raise ValueError(f"one of {', '.join(definition.categories or [])} is expected.")
        return text
    return str(value)


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValueError("a number is expected.")
    if isinstance(value, (int, float)):
        number: int | float = value
    else:
        text = str(value).strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise ValueError("a number is expected.") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError("a finite number is expected.")
    return number


def declared_attributes() -> dict[str, CustomerAttributeDefinition]:
    return {d.key: d for d in db.session.scalars(select(CustomerAttributeDefinition))}


def typed_attributes(attributes: Mapping[str, Any],
                     definitions: Mapping[str, CustomerAttributeDefinition] | None = None
                     ) -> tuple[dict[str, Any], list[FieldError]]:
    """``attributes`` with declared keys typed, and an error per value that does not fit.
    A None (which removes the key on update) is never typed."""
    if definitions is None:
        definitions = declared_attributes() if attributes else {}
    typed: dict[str, Any] = {}
    errors: list[FieldError] = []
    for key, value in attributes.items():
        definition = definitions.get(key)
        if definition is None or value is None:
            typed[key] = value
            continue
        try:
            typed[key] = typed_attribute(definition, value)
        except ValueError as exc:
            errors.append(FieldError(f"{definition.label}: {exc}", ErrorCode.INVALID,
                                     f"attributes.{key}"))
    return typed, errors
