"""Global ids: the one way core, plugins, the CLI, events and the audit log name an object.

The encoding is graphene relay's (standard base64 of ``"Type:id"``), so an id read in an
audit entry or an event is the id GraphQL's ``node(id:)`` accepts, without importing api.
"""

from __future__ import annotations

import base64
import binascii

from core.db import MAX_ID


def global_id(type_name: str, pk: int) -> str:
    """The global id of row ``pk`` of the GraphQL type ``type_name``."""
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode("ascii")


def decode_global_id(value: str, type_name: str | None = None) -> tuple[str, int]:
    """``(type name, database id)`` behind a global id; ValueError if it is not one.

    With ``type_name`` the id must name that type.
    """
    try:
        text = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
        kind, _, raw = text.partition(":")
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if not kind or not raw.isascii() or not raw.isdigit():
            raise ValueError
        number = int(raw)
    except (ValueError, UnicodeError, binascii.Error, AttributeError):
        raise ValueError(f"Not a global id: {value!r}.") from None
    if not 0 < number <= MAX_ID:
        raise ValueError(f"Not a global id: {value!r}.")
    if type_name is not None and kind != type_name:
        raise ValueError(f"Not a {type_name} id: {value!r}.")
    return kind, number


def parse_id(value: str | int, type_name: str) -> int:
    """The database id named by ``value``: a global id of ``type_name`` or a positive
    integer (what the CLI and report URLs accept); ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = str(value).strip()
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if not (text.isascii() and text.isdigit()):
            return decode_global_id(text, type_name)[1]
        number = int(text)
    if not 0 < number <= MAX_ID:
        raise ValueError(f"Not a {type_name} id: {value!r}.")
    return number


def shown_id(type_name: str, ident: object) -> str:
    """How a message names an object: the global id of a database id, anything else
    (a global id already, an external reference) as it is."""
    if isinstance(ident, int) and not isinstance(ident, bool) and 0 < ident <= MAX_ID:
        return global_id(type_name, ident)
    return str(ident)
