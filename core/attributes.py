"""Declared customer attributes: the one rule that types their values on every write path
(createCustomer, updateCustomer, the CSV / JSON Lines import), so a number attribute holds
numbers whichever way it was written. Undeclared keys are kept as given, untyped."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, func, select

from core.db import db
from core.errors import ErrorCode, FieldError
from core.ids import global_id
from core.models import AttributeType, Customer, CustomerAttributeDefinition

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


#: Customers read per round trip when stored values are checked against a declaration.
CHECK_CHUNK = 5000


def _has_key(key: str) -> ColumnElement[bool]:
    if db.session.get_bind().dialect.name == "postgresql":
        return Customer.attributes.op("?")(key)  # JSONB: has the key
    return func.json_type(Customer.attributes, f'$."{key}"').is_not(None)  # keys: \w only


def stored_misfits(definition: CustomerAttributeDefinition) -> FieldError | None:
    """An error when customers already hold values of ``definition.key`` that its type
    (or its categories) cannot hold, naming how many and one customer; None when they all
    fit. Declaring a type over such values would leave data the type promises away (a
    number attribute holding "many"), so ``define_customer_attribute`` refuses it: the
    values are corrected or removed first. The values are streamed in chunks of
    ``CHECK_CHUNK`` and checked with the same rule as every write (``typed_attribute``)."""
    if AttributeType(definition.type) is AttributeType.TEXT:
        return None  # text holds any value
    stmt = (select(Customer.id, Customer.attributes[definition.key])
            .where(_has_key(definition.key)).order_by(Customer.id)
            .execution_options(yield_per=CHECK_CHUNK))
    count = 0
    example: tuple[int, Any, str] | None = None
    for customer_id, value in db.session.execute(stmt):
        if value is None:
            continue
        try:
            typed_attribute(definition, value)
        except ValueError as exc:
            count += 1
            if example is None:
                example = (customer_id, value, str(exc))
    if example is None:
        return None
    customer_id, value, reason = example
    kind = AttributeType(definition.type).value
    field = "categories" if kind == "category" else "type"
    return FieldError(
        f"{count:,} stored value{'s' if count > 1 else ''} of attribute {definition.key!r} "
        f"{'do' if count > 1 else 'does'} not fit the type {kind}: e.g. customer "
        f"{global_id('Customer', customer_id)} holds {value!r} ({reason[:1].lower()}"
        f"{reason[1:]}). Correct or remove {'those values' if count > 1 else 'that value'} "
        f"first (updateCustomer with attributes {{{definition.key}: null}} removes one), "
        f"then declare the attribute again.", ErrorCode.CONFLICT, field)
