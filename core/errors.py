"""Errors a person can act on: a stable code, a message, and the input field at fault.

Services raise ``UserError``; the API maps it to the domain's ``XError`` type and the CLI
prints it. Anything else that escapes is a bug and is reported without detail.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError


class ErrorCode:
    """Codes shared by every domain; a domain's GraphQL enum adds its own."""

    INVALID = "INVALID"
    REQUIRED = "REQUIRED"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    NOT_FOUND = "NOT_FOUND"
    UNIQUE = "UNIQUE"
    CONFLICT = "CONFLICT"
    NOT_ALLOWED = "NOT_ALLOWED"
    TOO_MANY = "TOO_MANY"


@dataclass(frozen=True)
class FieldError:
    message: str
    code: str = ErrorCode.INVALID
    field: str | None = None

    def prefixed(self, prefix: str) -> FieldError:
        path = prefix if not self.field else f"{prefix}.{self.field}" if prefix else self.field
        return FieldError(self.message, self.code, path or None)


class UserError(Exception):
    """One or more expected failures of an operation; nothing was written."""

    def __init__(self, errors: FieldError | Iterable[FieldError]):
        self.errors = [errors] if isinstance(errors, FieldError) else list(errors)
        super().__init__("; ".join(
            f"{e.field}: {e.message}" if e.field else e.message for e in self.errors))

    @classmethod
    def single(cls, message: str, code: str = ErrorCode.INVALID, field: str | None = None
               ) -> UserError:
        return cls(FieldError(message, code, field))


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_REQUIRED_MESSAGES = {"Missing data for required field.", "Field may not be null."}


def _code_for(message: str) -> str:
    if message in _REQUIRED_MESSAGES:
        return ErrorCode.REQUIRED
    if message == "Unknown field.":
        return ErrorCode.UNKNOWN_FIELD
    return ErrorCode.INVALID


def errors_from_marshmallow(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Flatten marshmallow's nested messages into camelCase field paths."""
    out: list[FieldError] = []

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                part = str(key) if isinstance(key, int) else camel(str(key))
                walk(value, path if key == "_schema" else [*path, part])
        elif isinstance(node, list):
            for item in node:
                walk(item, path)
        else:
            out.append(FieldError(str(node), _code_for(str(node)),
                                  ".".join([prefix, *path] if prefix else path) or None))

    walk(exc.messages, [])
    return out
