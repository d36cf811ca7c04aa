"""One mechanism for changes: the audit entry and the outbox events of a change, written
together in the caller's transaction.

Every mutation, import and job calls ``record`` (directly, or through the GraphQL mutation
base class): the entry and the events commit or roll back with the change itself, so the
audit log never names a change that did not happen, and a relay never delivers one.

Personal values inside ``changes`` (e-mail, phone) are stored encrypted like the columns
they come from; events never carry them at all (a subscriber reads them through GraphQL
with its own scopes).
"""

from __future__ import annotations

import datetime as dt
import enum
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select

from core import context, crypto
from core.db import db, utcnow
from core.errors import camel
from core.ids import decode_global_id, global_id
from core.models import AuditEntry, AuditObject, OutboxEvent

#: Fields whose values ``changes`` holds encrypted (as their columns are).
ENCRYPTED_FIELDS = frozenset({"email", "phone", "emailNormalized", "phoneNormalized"})

#: Keys an event's ``data`` may never hold (CONTRACTS "Events").
FORBIDDEN_EVENT_KEYS = frozenset({"email", "phone", "emailNormalized", "phoneNormalized"})

#: What erasure writes in place of the erased person's values.
REDACTED = "[redacted]"

_RECORDED = "rapport_recorded_changes"
# Table-level inserts: the ORM's bulk insert would ask for the new ids back (RETURNING).
_OBJECTS = AuditObject.__table__
_OUTBOX = OutboxEvent.__table__


@dataclass(frozen=True)
class Event:
    """A domain event for the outbox.

    ``type`` is a CONTRACTS "Events" name (``customer.created``); ``aggregate_id`` the
    global id of the entity it concerns (the relay keeps order per aggregate); ``data``
    camelCase keys and global ids, never an e-mail or phone.
    """

    type: str
    aggregate_id: str
    data: dict[str, Any] = field(default_factory=dict)


def jsonable(value: Any) -> Any:
    """``value`` with dates, Decimals, enums and sets turned into JSON values."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _seal(value: Any) -> Any:
    if value is None or value == REDACTED:
        return value
    return crypto.encrypt(str(value))


def unseal(name: str, value: Any) -> Any:
    """The clear value of ``changes[name]``'s ``value`` as ``record`` stored it."""
    if name not in ENCRYPTED_FIELDS or value is None or value == REDACTED:
        return value
    return crypto.decrypt(str(value))


def camel_changes(changed: Mapping[str, Sequence[Any]],
                  id_types: Mapping[str, str] | None = None) -> dict[str, list[Any]]:
    """A service's ``{snake_field: (before, after)}`` as ``record`` takes it: camelCase
    names, and the fields of ``id_types`` (``{"owner_id": "Agent"}``) as global ids."""
    id_types = id_types or {}
    result: dict[str, list[Any]] = {}
    for name, (before, after) in changed.items():
        kind = id_types.get(name)
        if kind is not None:
            before = None if before is None else global_id(kind, before)
            after = None if after is None else global_id(kind, after)
        result[camel(name)] = [before, after]
    return result


def _sealed_changes(changes: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    sealed: dict[str, list[Any]] = {}
    for name, pair in changes.items():
        values = [jsonable(v) for v in pair]
        if len(values) != 2:
            raise ValueError(f"changes[{name!r}] must be [before, after], got {pair!r}")
        if name in ENCRYPTED_FIELDS:
            values = [_seal(v) for v in values]
        sealed[name] = values
    return sealed


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


_suspended = False


@contextmanager
def suspended_for_benchmark() -> Iterator[None]:
    """Make ``record`` write nothing inside the block.

    Only bench/bench_audit.py uses it, to measure mutations without the audit log in the
    same process; production code never turns the audit log off.
    """
    global _suspended
    previous, _suspended = _suspended, True
    try:
        yield
    finally:
        _suspended = previous


def record(operation: str | None, objects: Iterable[str],
           changes: Mapping[str, Sequence[Any]] | None = None,
           events: Iterable[Event] = ()) -> None:
    """Write the audit entry and the outbox events of a change in the caller's transaction.

    ``operation``: the mutation, CLI command or job kind (None: the current context's);
    ``objects``: the global ids the change concerns; ``changes``: ``{field: [before,
    after]}`` for customer data (camelCase field names); ``events``: what subscribers
    hear. Nothing is committed here: the caller's transaction decides.
    """
    if _suspended:
        return
    current = context.current()
    name = operation or current.operation or _caller()
    object_ids = list(dict.fromkeys(objects))
    for object_id in object_ids:
        decode_global_id(object_id)  # a typo'd id would make the entry unfindable
    pending = list(events)
    for event in pending:
        leaked = FORBIDDEN_EVENT_KEYS & event.data.keys()
        if leaked:
            raise ValueError(f"event {event.type} may not carry {', '.join(sorted(leaked))}")
    actor = current.actor
    actor_json = actor.to_json()
    now = utcnow()
    session = db.session
    entry_id = session.execute(insert(AuditEntry).values(
        occurred_at=now, actor=actor_json,
        actor_agent_id=actor.agent_id or actor.on_behalf_of_agent_id,
        actor_service=actor.service, operation=name[:120], object_ids=object_ids,
        changes=_sealed_changes(changes) if changes else None,
        request_id=current.request_id).returning(AuditEntry.id)).scalar_one()
    if object_ids:
        session.execute(insert(_OBJECTS),
                        [{"entry_id": entry_id, "object_id": o} for o in object_ids])
    if pending:
        session.execute(insert(_OUTBOX), [
            {"event_id": new_event_id(), "type": event.type,
             "aggregate_id": event.aggregate_id, "data": jsonable(event.data),
             "actor": actor_json, "occurred_at": now} for event in pending])
    session.info[_RECORDED] = session.info.get(_RECORDED, 0) + 1


def _caller() -> str:
    """The service that called ``record`` (a script or shell outside any request, command
    or job names no operation): ``core.services.staff.create_agent``."""
    frame = sys._getframe(2)
    return f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_name}"


def recorded_count() -> int:
    """How many ``record`` calls the current session has seen (the mutation base class
    compares it before and after a mutation to know whether the service recorded one)."""
    return int(db.session.info.get(_RECORDED, 0))


#: Keys of an event's ``data`` that would hold a person's values; erasure redacts them
#: (events are written without them, this is the safety net for a plugin's event).
PERSONAL_EVENT_KEYS = frozenset({
    "name", "birthDate", "gender", "education", "occupation", "incomeBand", "country",
    "region", "city", "attributes", "tags", "externalId", "note", "text", "comment",
    "payload", "answers",
})


def redact(object_id: str) -> int:
    """Erase the values of ``object_id``'s changes from the audit log and the outbox.

    Every audit entry naming the object keeps its who/what/when (the erasure itself is
    accountable) but each ``[before, after]`` becomes ``[redacted, redacted]``; the
    object's outbox events lose their personal keys. In the caller's transaction;
    returns how many audit entries were redacted.
    """
    session = db.session
    entries = session.scalars(
        select(AuditEntry).join(AuditObject, AuditObject.entry_id == AuditEntry.id)
        .where(AuditObject.object_id == object_id, AuditEntry.changes.is_not(None))).all()
    redacted = 0
    for entry in entries:
        cleared = {name: [None if v is None else REDACTED for v in pair]
                   for name, pair in (entry.changes or {}).items()}
        if cleared != entry.changes:
            entry.changes = cleared
            redacted += 1
    for event in session.scalars(select(OutboxEvent).where(
            OutboxEvent.aggregate_id == object_id)):
        data = dict(event.data or {})
        if PERSONAL_EVENT_KEYS & data.keys():
            event.data = {k: (REDACTED if k in PERSONAL_EVENT_KEYS and v is not None else v)
                          for k, v in data.items()}
    session.flush()
    return redacted
