"""Interactions: record one, or a batch (API calls of up to 1,000, importer chunks)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import (
    ARRAY, BigInteger, ColumnElement, DateTime, String, and_, bindparam, func, insert, or_,
    select, tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import QueryableAttribute

from core import changes as audit
from core.app import rapport
from core.db import Money, db, utcnow
from core.errors import ErrorCode, FieldError, UserError, errors_from_marshmallow
from core.ids import global_id, shown_id
from core.models import Customer, CustomerStatus, Interaction
from core.schemas import InteractionSchema
from core.services import load, transaction

_COLUMNS = ("customer_id", "kind", "channel", "occurred_at", "amount", "currency", "payload",
            "source", "external_id", "refers_to_id", "agent_id")


def interaction_schema(now: dt.datetime | None = None) -> InteractionSchema:
    state = rapport()
    return InteractionSchema(kinds=set(state.interaction_kinds),
                             monetary_kinds=state.monetary_kinds, now=now)


def record_interaction(raw: Mapping[str, Any]) -> Interaction:
    """Record one interaction. Re-sending a known ``source`` + ``external_id`` returns the
    interaction already stored (idempotent) and fires nothing."""
    data = load(interaction_schema(), raw)
    with transaction():
        if data.get("external_id"):
            existing = db.session.scalar(select(Interaction).where(
                Interaction.source == data["source"],
                Interaction.external_id == data["external_id"]))
            if existing is not None:
                return existing
        problems = _reference_errors([data])
        if problems:
            raise UserError(problems[0][1])
        interaction = Interaction(**{k: data.get(k) for k in _COLUMNS})
        interaction.payload = interaction.payload or {}
        db.session.add(interaction)
        db.session.flush()
        rapport().hook.rapport_interaction_recorded(interaction=interaction)
        gid = global_id("Interaction", interaction.id)
        customer = global_id("Customer", interaction.customer_id)
        audit.record(None, [gid, customer], None, [audit.Event(
            "interaction.recorded", gid, {
                "interactionId": gid, "customerId": customer, "kind": interaction.kind,
                "occurredAt": interaction.occurred_at,
                "amount": interaction.amount, "currency": interaction.currency})])
    return interaction


def _reference_errors(rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, list[FieldError]]]:
    """Check customers and referred interactions exist, in two queries for the batch."""
    customer_ids = {r["customer_id"] for r in rows}
    customers = dict(db.session.execute(select(Customer.id, Customer.status).where(
        Customer.id.in_(customer_ids))).all()) if customer_ids else {}
    refer_ids = {r["refers_to_id"] for r in rows if r.get("refers_to_id") is not None}
    referred = dict(db.session.execute(select(Interaction.id, Interaction.customer_id).where(
        Interaction.id.in_(refer_ids))).all()) if refer_ids else {}
    problems: list[tuple[int, list[FieldError]]] = []
    for index, row in enumerate(rows):
        errors: list[FieldError] = []
        status = customers.get(row["customer_id"])
        if status is None:
            shown = shown_id("Customer", row["customer_id"])
            errors.append(FieldError(f"No customer with id {shown}.",
                                     ErrorCode.NOT_FOUND, "customerId"))
        elif status == CustomerStatus.ERASED:
            errors.append(FieldError("The customer is erased; nothing can be recorded for it.",
                                     ErrorCode.NOT_ALLOWED, "customerId"))
        ref = row.get("refers_to_id")
        if ref is not None:
            if ref not in referred:
                errors.append(FieldError(f"No interaction with id "
                                         f"{shown_id('Interaction', ref)} to refer to.",
                                         ErrorCode.NOT_FOUND, "refersTo"))
            elif referred[ref] != row["customer_id"]:
                errors.append(FieldError("The referred interaction belongs to another customer.",
                                         ErrorCode.INVALID, "refersTo"))
        if errors:
            problems.append((index, errors))
    return problems


@dataclass
class BatchResult:
    """What happened to each item of a batch, by its index in the input."""

    recorded_ids: dict[int, int] = field(default_factory=dict)   # index -> new id
    existing_ids: dict[int, int] = field(default_factory=dict)   # index -> id already stored
    errors: list[FieldError] = field(default_factory=list)       # field paths start "<index>."
    rejected: dict[int, list[FieldError]] = field(default_factory=dict)

    @property
    def recorded(self) -> int:
        return len(self.recorded_ids)


def external_key_condition(source: QueryableAttribute[Any],
                           external_id: QueryableAttribute[Any],
                           keys: Iterable[tuple[str, str]]) -> ColumnElement[bool]:
    """``(source, external_id) IN keys``, in a form that uses the unique index.

    On PostgreSQL the pairs go as two array parameters, ``IN (SELECT * FROM unnest(...))``,
    which is planned as index lookups whatever the statistics say. A row-value IN list of
    1,000 pairs took ~370 ms, and ``source = s AND external_id IN (<1,000 values>)``
    scanned every row of the source when statistics were stale (a table growing during an
    import with autovacuum off): ~100 ms at 700k rows, against ~3 ms. SQLite uses the
    index for a plain IN list, one per source.
    """
    pairs = list(keys)
    if db.session.get_bind().dialect.name == "postgresql":
        unnested = func.unnest(
            bindparam(None, [s for s, _ in pairs], type_=ARRAY(String)),
            bindparam(None, [e for _, e in pairs], type_=ARRAY(String)),
        ).table_valued("source", "external_id").render_derived(name="wanted")
        return tuple_(source, external_id).in_(select(unnested.c.source,
                                                      unnested.c.external_id))
    by_source: dict[str, list[str]] = defaultdict(list)
    for key_source, key_id in pairs:
        by_source[key_source].append(key_id)
    return or_(*(and_(source == key_source, external_id.in_(ids))
                 for key_source, ids in by_source.items()))


#: Column types of the PostgreSQL bulk insert, each sent as one array parameter.
_ARRAY_TYPES: dict[str, Any] = {
    "id": BigInteger(), "customer_id": BigInteger(), "kind": String(), "channel": String(),
    "occurred_at": DateTime(timezone=True), "amount": BigInteger(), "currency": String(),
    "payload": JSONB(), "source": String(), "external_id": String(),
    "refers_to_id": BigInteger(), "agent_id": BigInteger(),
    "recorded_at": DateTime(timezone=True),
}


def _insert_postgresql(rows: list[dict[str, Any]]) -> list[int]:
    """Ids from the sequence up front, then one ``INSERT ... SELECT FROM unnest(arrays)``.

    One short statement whatever the batch size: psycopg does not cache the plan of a
    large multi-row VALUES statement and parsed it again on every batch (28% of an
    import's time), and with the ids known there is no RETURNING order to depend on.
    """
    table = Interaction.__table__
    ids = sorted(db.session.scalars(
        select(func.nextval(func.pg_get_serial_sequence(table.name, "id")))
        .select_from(func.generate_series(1, len(rows)))).all())
    dialect = db.session.get_bind().dialect
    money = Money()
    now = utcnow()
    values: dict[str, list[Any]] = {name: [] for name in _ARRAY_TYPES}
    for new_id, row in zip(ids, rows):
        values["id"].append(new_id)
        for name in _COLUMNS:
            value = row.get(name)
            if name == "amount":
                value = money.process_bind_param(value, dialect)
            values[name].append(value)
        values["recorded_at"].append(now)
    arrays = func.unnest(*(bindparam(None, values[name], type_=ARRAY(kind))
                           for name, kind in _ARRAY_TYPES.items())
                         ).table_valued(*_ARRAY_TYPES).render_derived(name="batch")
    db.session.execute(table.insert().from_select(
        list(_ARRAY_TYPES), select(*(arrays.c[name] for name in _ARRAY_TYPES))))
    return ids


def _insert_returning_ids(rows: list[dict[str, Any]]) -> list[int]:
    """Insert a batch; the new ids in the order of ``rows``.

    SQLite would fall back to one INSERT per row for SQLAlchemy's ordered RETURNING; there
    a single writer holds the lock and rowids are assigned in VALUES order, so ascending
    ids are the parameter order. ``render_nulls``: the ORM otherwise leaves out None
    values and starts a new INSERT whenever the next row's set of non-None columns differs.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        return _insert_postgresql(rows)
    return sorted(db.session.scalars(insert(Interaction).returning(Interaction.id), rows,
                                     execution_options={"render_nulls": True}).all())


class BatchRejected(UserError):
    """A batch had invalid items and partial acceptance was not asked: nothing written."""

    def __init__(self, result: BatchResult):
        self.result = result
        super().__init__(result.errors)


def record_interactions(raws: Sequence[Mapping[str, Any]], *, partial: bool = False,
                        now: dt.datetime | None = None,
                        rejected: Mapping[int, list[FieldError]] | None = None) -> BatchResult:
    """Record a batch in one transaction, with set-based checks and one multi-row INSERT.

    Items whose ``source`` + ``external_id`` already exist are skipped (re-imports). With
    ``partial=False`` any invalid item rejects the whole batch (``UserError``, nothing
    written; ``BatchRejected``); with ``partial=True`` the valid items are recorded and the others reported.
    Fires ``rapport_interactions_recorded`` once with the new ids. ``rejected`` are items
    the caller already found invalid (by index; their rows are not read), so every error of
    the batch is reported together.
    """
    schema = interaction_schema(now)
    result = BatchResult(rejected=dict(rejected or {}))
    valid: list[tuple[int, dict[str, Any]]] = []
    for index, raw in enumerate(raws):
        if index in result.rejected:
            continue
        try:
            valid.append((index, dict(schema.load(raw))))
        except ValidationError as exc:
            result.rejected[index] = errors_from_marshmallow(exc)

    with transaction():
        keyed = [(i, r) for i, r in valid if r.get("external_id")]
        if keyed:
            keys = {(r["source"], r["external_id"]) for _, r in keyed}
            stored = dict(((s, e), i) for s, e, i in db.session.execute(
                select(Interaction.source, Interaction.external_id, Interaction.id).where(
                    external_key_condition(Interaction.source, Interaction.external_id,
                                           keys))))
            seen: dict[tuple[str, str], int] = {}
            fresh: list[tuple[int, dict[str, Any]]] = []
            for index, row in valid:
                key = (row.get("source"), row.get("external_id"))
                if row.get("external_id") and key in stored:
                    result.existing_ids[index] = stored[key]  # type: ignore[index]
                elif row.get("external_id") and key in seen:
                    result.rejected[index] = [FieldError(
                        f"Same source and external id as item {seen[key]} of this batch.",
                        ErrorCode.UNIQUE, "externalId")]  # type: ignore[index]
                else:
                    if row.get("external_id"):
                        seen[key] = index  # type: ignore[index]
                    fresh.append((index, row))
            valid = fresh

        for position, errors in _reference_errors([r for _, r in valid]):
            result.rejected[valid[position][0]] = errors
        valid = [(i, r) for i, r in valid if i not in result.rejected]

        result.errors = [e.prefixed(str(index)) for index in sorted(result.rejected)
                         for e in result.rejected[index]]
        if result.rejected and not partial:
            raise BatchRejected(result)
        if valid:
            rows = [{k: r.get(k) for k in _COLUMNS} | {"payload": r.get("payload") or {}}
                    for _, r in valid]
            ids = _insert_returning_ids(rows)
            result.recorded_ids = {index: new_id for (index, _), new_id in zip(valid, ids)}
            rapport().hook.rapport_interactions_recorded(interaction_ids=list(ids))
        record_batch("interactions.imported", "Interaction", result)
    return result


def record_batch(event_type: str, type_name: str, result: BatchResult) -> None:
    """One audit entry and one summarising event for a batch (an API batch, an import
    chunk): counts and the range of new ids, not one entry per row. The event is written
    only when the batch created something."""
    new = sorted(result.recorded_ids.values())
    first = global_id(type_name, new[0]) if new else None
    last = global_id(type_name, new[-1]) if new else None
    counts = {"recorded": len(new), "skipped": len(result.existing_ids),
              "rejected": len(result.rejected)}
    audit.record(None, [], {**{k: [None, v] for k, v in counts.items()},
                            "firstId": [None, first], "lastId": [None, last]},
                 [audit.Event(event_type, first, {**counts, "firstId": first, "lastId": last})]
                 if first is not None else [])
