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
import json
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
    hear. Nothing is committed here: the caller's transaction decides. On PostgreSQL it is
    one statement; on SQLite one per table.
    """
    if _suspended:
        return
    entry, rows = _prepare(operation, objects, changes, events, sys._getframe(1))
    session = db.session
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(_PG_RECORD, _pg_parameters(entry, rows))
    else:
        _write_each(session, entry, rows)
    _count(session, rows)


@dataclass(frozen=True)
class Returned:
    """Stands, in ``record_with``'s objects and event data, for the global id of type
    ``type_name`` of the id its statement returns in its column ``column``."""

    type_name: str
    column: str

    @property
    def token(self) -> str:
        # NUL cannot occur in PostgreSQL text, so no stored value can look like this.
        return f"\x00returned:{self.type_name}\x00"


def record_with(statement: str, parameters: Mapping[str, Any], returned: Returned,
                operation: str | None, objects: Iterable[str | Returned],
                changes: Mapping[str, Sequence[Any]] | None = None,
                events: Iterable[Event] = ()) -> list[Any]:
    """PostgreSQL only: run ``statement`` and ``record`` its change in ONE statement.

    ``statement`` is driver SQL (``%(name)s`` placeholders) returning rows with a column
    ``returned.column``: the id of the row the change created (the same id on every row;
    no row, or NULL, when nothing was done: then nothing is recorded and the caller
    raises). ``returned`` may stand in ``objects`` and in events' data for that id's
    global id (of type ``returned.type_name``). Returns the statement's rows. The audit
    entry is written whatever the caller finds in the rows afterwards: a caller that
    refuses the change raises, and its transaction (or savepoint) takes the entry back
    with the rest. SQLite has no INSERT inside WITH: there, run the change, then ``record``.
    """
    sentinel = returned.token
    swapped = [sentinel if o == returned else o for o in objects]
    pending = [Event(e.type, e.aggregate_id,
                     {k: sentinel if v == returned else v for k, v in e.data.items()})
               for e in events]
    session = db.session
    if _suspended:
        return list(session.connection().exec_driver_sql(statement, parameters).all())
    entry, rows = _prepare(operation, swapped, changes, pending, sys._getframe(1),
                           sentinel=sentinel)
    audit = {f"audit_{k}": v for k, v in _pg_parameters(entry, rows).items()}
    result = session.connection().exec_driver_sql(
        _PG_RECORD_WITH.format(statement=statement, column=returned.column),
        {**parameters, **audit, "audit_type": returned.type_name,
         "audit_token": _dumps(sentinel)}).all()
    if result and getattr(result[0], returned.column) is not None:
        _count(session, rows)
    return list(result)


def _prepare(operation: str | None, objects: Iterable[str],
             changes: Mapping[str, Sequence[Any]] | None, events: Iterable[Event],
             frame: Any, sentinel: str | None = None
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The entry's and the events' values, checked (ids, forbidden keys) and sealed."""
    current = context.current()
    name = operation or current.operation or _caller(frame)
    object_ids = list(dict.fromkeys(objects))
    for object_id in object_ids:
        if object_id != sentinel:
            decode_global_id(object_id)  # a typo'd id would make the entry unfindable
    pending = list(events)
    for event in pending:
        leaked = FORBIDDEN_EVENT_KEYS & event.data.keys()
        if leaked:
            raise ValueError(f"event {event.type} may not carry {', '.join(sorted(leaked))}")
    actor = current.actor
    entry = {"occurred_at": utcnow(), "actor": actor.to_json(),
             "actor_agent_id": actor.agent_id or actor.on_behalf_of_agent_id,
             "actor_service": actor.service, "operation": name[:120],
             "object_ids": object_ids,
             "changes": _sealed_changes(changes) if changes else None,
             "request_id": current.request_id}
    rows = [{"event_id": new_event_id(), "type": event.type,
             "aggregate_id": event.aggregate_id, "data": jsonable(event.data)}
            for event in pending]
    return entry, rows


def _count(session: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.info[WROTE_EVENTS] = True
    session.info[_RECORDED] = session.info.get(_RECORDED, 0) + 1


#: Set in ``session.info`` when a transaction wrote outbox events (core.outbox wakes the
#: relay after its commit).
WROTE_EVENTS = "rapport_outbox_written"

#: PostgreSQL: the entry, its object rows and the events in one statement (data-modifying
#: CTEs; the objects' INSERT takes the entry's id from the first). Written out once, sent
#: as driver SQL: no statement building per call; psycopg prepares it after a few uses.
_PG_RECORD = """WITH entry AS (
    INSERT INTO audit_entries (occurred_at, actor, actor_agent_id, actor_service, operation,
                               object_ids, changes, request_id)
    VALUES (%(occurred_at)s, %(actor)s::jsonb, %(actor_agent_id)s, %(actor_service)s,
            %(operation)s, %(object_ids)s::jsonb, %(changes)s::jsonb, %(request_id)s)
    RETURNING id),
objects AS (
    INSERT INTO audit_objects (entry_id, object_id)
    SELECT entry.id, object_id FROM entry, jsonb_array_elements_text(%(object_ids)s::jsonb)
        AS object_id)
INSERT INTO outbox_events (event_id, type, aggregate_id, data, actor, occurred_at)
SELECT e.doc ->> 'event_id', e.doc ->> 'type', e.doc ->> 'aggregate_id', e.doc -> 'data',
       %(actor)s::jsonb, %(occurred_at)s
FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS e(doc, n) ORDER BY e.n"""


#: ``record_with``: the caller's statement first (materialised: run once), then the same
#: three INSERTs, the token of ``Returned`` replaced in the JSON texts by the global id of
#: the id the statement returned; nothing is written when it returned no id.
_PG_RECORD_WITH = """WITH work AS MATERIALIZED ({statement}),
returned AS (
    SELECT to_json(encode(convert_to(CAST(%(audit_type)s AS text) || ':' || w.id, 'UTF8'),
                          'base64'))::text AS gid
    FROM (SELECT (SELECT {column} FROM work LIMIT 1) AS id) AS w WHERE w.id IS NOT NULL),
entry AS (
    INSERT INTO audit_entries (occurred_at, actor, actor_agent_id, actor_service, operation,
                               object_ids, changes, request_id)
    SELECT %(audit_occurred_at)s, %(audit_actor)s::jsonb, %(audit_actor_agent_id)s,
           %(audit_actor_service)s, %(audit_operation)s,
           replace(CAST(%(audit_object_ids)s AS text), %(audit_token)s, returned.gid)::jsonb,
           %(audit_changes)s::jsonb, %(audit_request_id)s
    FROM returned
    RETURNING id, object_ids),
objects AS (
    INSERT INTO audit_objects (entry_id, object_id)
    SELECT entry.id, object_id FROM entry, jsonb_array_elements_text(entry.object_ids)
        AS object_id),
events AS (
    INSERT INTO outbox_events (event_id, type, aggregate_id, data, actor, occurred_at)
    SELECT e.doc ->> 'event_id', e.doc ->> 'type', e.doc ->> 'aggregate_id', e.doc -> 'data',
           %(audit_actor)s::jsonb, %(audit_occurred_at)s
    FROM returned, jsonb_array_elements(replace(CAST(%(audit_events)s AS text), %(audit_token)s,
                                                 returned.gid)::jsonb)
        WITH ORDINALITY AS e(doc, n) ORDER BY e.n)
SELECT * FROM work"""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _pg_parameters(entry: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    # No changes: a JSON null, as the table-level insert of the SQLite path stores it.
    return {**entry, "actor": _dumps(entry["actor"]), "object_ids": _dumps(entry["object_ids"]),
            "changes": _dumps(entry["changes"]), "events": _dumps(rows)}


def _write_each(session: Any, entry: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """SQLite: no INSERT inside WITH; one statement per table."""
    entry_id = session.execute(insert(AuditEntry).values(**entry)
                               .returning(AuditEntry.id)).scalar_one()
    if entry["object_ids"]:
        session.execute(insert(_OBJECTS),
                        [{"entry_id": entry_id, "object_id": o} for o in entry["object_ids"]])
    if rows:
        session.execute(insert(_OUTBOX), [
            {**row, "actor": entry["actor"], "occurred_at": entry["occurred_at"]}
            for row in rows])


def _caller(frame: Any) -> str:
    """The service that called ``record`` (a script or shell outside any request, command
    or job names no operation): ``core.services.staff.create_agent``."""
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
