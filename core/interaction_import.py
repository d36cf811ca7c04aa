"""The PostgreSQL path of ``rapport import interactions``: set-based checks, one COPY.

Per batch (one transaction, as on SQLite):

1. Each row is converted in Python by a check compiled from ``InteractionSchema``'s rules
   (``fast_interaction``). It accepts only rows the schema certainly accepts and gives the
   same values; any other row (a lower-case currency, an offset the fast check does not
   take, an error) is loaded by the schema itself, so accepted values and error messages
   are marshmallow's own. ``tests/core/test_interaction_import.py`` runs a table of edge
   cases through both.
2. Two set-wise look-ups for the whole batch: the customers by (source, external id) with
   their status, and the stored interactions among the rows' own keys and the keys they
   refer to.
3. References inside the batch are resolved in rounds, as the SQLite path records them:
   a row waits for the row it refers to, a row whose target never comes is rejected.
4. Ids are taken from the sequence up front and the accepted rows go in with one
   ``COPY interactions FROM STDIN`` (psycopg, binary adaptation in C); the plugins' batch
   hook ``rapport_interactions_recorded`` then sees the new ids, and one audit entry and
   one ``interactions.imported`` event summarise the batch (``record_batch``).

The rejects, their order of precedence (identity, customer, reference, schema, duplicate,
erased customer / other customer's interaction) and their messages are the SQLite path's.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import func, select, text

from core.app import rapport
from core.db import MONEY_SCALE, Money, db, utcnow
from core.errors import ErrorCode, FieldError, errors_from_marshmallow
from core.importers import (
    INTERACTION_COLUMNS, INTERACTION_REQUIRED, BatchOutcome, Record, _column_path,
    _customer_key, _INTERACTION_ALIASES, _missing_columns, _missing_identity, _pending,
    DEFAULT_SOURCE,
)
from core.models import CustomerStatus, Interaction
from core.money import currency_decimals
from core.schemas import FUTURE_TOLERANCE, InteractionSchema, _KIND, has_surrogate
from core.services import transaction
from core.services.interactions import (
    BatchResult, interaction_schema, record_batch,
)

#: Amounts the fast check takes as they are: plain decimals, at most 4 places, < 1e14.
_PLAIN_AMOUNT = re.compile(r"[0-9]{1,14}(?:\.[0-9]{1,4})?")
_PLAIN_CURRENCY = re.compile(r"[A-Z]{3}")
_MONEY_FACTOR = Decimal(10) ** MONEY_SCALE
_UTC = dt.timezone.utc
_COPY_COLUMNS = ("id", "customer_id", "kind", "channel", "occurred_at", "amount", "currency",
                 "payload", "source", "external_id", "refers_to_id", "recorded_at")

#: kind, channel, occurred_at (aware UTC), amount (units of 10^-4), currency, payload (JSON)
Converted = tuple[str, str | None, dt.datetime, int | None, str | None, str]


class FastCheck:
    """``InteractionSchema``'s rules for the rows an import usually holds, as one function.

    ``convert(values)`` gives the stored values of an importer record, or ``None`` when it
    cannot tell: the caller then asks the schema. ``None`` is always safe; a value is only
    given for a row the schema accepts, with what the schema would give.
    """

    def __init__(self, kinds: set[str] | frozenset[str], monetary_kinds: frozenset[str],
                 now: dt.datetime):
        self.kinds = frozenset(k for k in kinds if _KIND.match(k))
        self.monetary_kinds = monetary_kinds
        # The schema compares with its own "now", taken later: an earlier bound is stricter.
        self.latest = now + FUTURE_TOLERANCE

    def convert(self, values: Mapping[str, Any]) -> Converted | None:
        kind = values.get("kind")
        occurred = values.get("occurred_at")
        if type(kind) is not str or kind not in self.kinds or type(occurred) is not str:
            return None
        for key, value in values.items():
            # NUL and lone surrogates: the schema refuses them, with its own message. (The
            # file reader refuses them before; this check does not rely on it.)
            if type(value) is str and ("\x00" in value or not value.isascii()
                                       and has_surrogate(value)):
                return None
            if "\x00" in key or not key.isascii() and has_surrogate(key):
                return None
        # The identity as the importer hands it to the schema (``_pending``), and its lengths.
        if len(str(values.get("source") or DEFAULT_SOURCE)) > 64 or \
                len(str(values["external_id"])) > 200:
            return None
        try:
            # marshmallow's DateTime("iso") is this very function.
            when = dt.datetime.fromisoformat(occurred)
            when = (when.replace(tzinfo=_UTC) if when.tzinfo is None else when).astimezone(_UTC)
        except (ValueError, OverflowError):
            return None
        if when > self.latest:
            return None
        channel = values.get("channel")
        if channel is not None and (type(channel) is not str or not channel
                                    or len(channel) > 40):
            return None
        amount, currency = values.get("amount"), values.get("currency")
        units: int | None = None
        if amount is None or currency is None:
            if amount is not None or currency is not None or kind in self.monetary_kinds:
                return None
        else:
            if type(currency) is not str or not _PLAIN_CURRENCY.fullmatch(currency):
                return None
            if type(amount) is str:
                text = amount
            elif type(amount) is int or type(amount) is Decimal:
                text = str(amount)
            else:
                return None
            if not _PLAIN_AMOUNT.fullmatch(text):
                return None
            number = Decimal(text)
            exponent = number.normalize().as_tuple().exponent
            if isinstance(exponent, int) and -exponent > currency_decimals(currency):
                return None
            units = int(number * _MONEY_FACTOR)
        if "payload" in values:
            return None
        payload: dict[str, Any] = {}
        for key, value in values.items():
            if key not in INTERACTION_COLUMNS:
                if type(value) is not str and type(value) is not int and type(value) is not bool:
                    return None  # nested or float: the schema judges (depth, finiteness)
                payload[key] = value
        return kind, channel, when, units, currency if units is not None else None, \
            json.dumps(payload) if payload else "{}"


def converted_from_schema(data: Mapping[str, Any]) -> Converted:
    """What the schema loaded, in the form ``FastCheck.convert`` gives."""
    amount = data.get("amount")
    return (data["kind"], data.get("channel"), data["occurred_at"],
            Money().process_bind_param(amount, None) if amount is not None else None,
            data.get("currency"), json.dumps(data.get("payload") or {}))


class _Row:
    __slots__ = ("line", "values", "key", "refers", "customer_id", "converted", "errors",
                 "target", "new_id")

    def __init__(self, line: int, values: Mapping[str, Any]):
        self.line = line
        self.values = values
        self.key = (str(values.get("source") or DEFAULT_SOURCE), str(values["external_id"]))
        refers = values.get("refers_to")
        self.refers = (self.key[0], str(refers)) if refers is not None else None
        self.customer_id = 0
        self.converted: Converted | None = None
        self.errors: list[FieldError] | None = None
        self.target: int | _Row | None = None  # a stored id, or a row of this batch
        self.new_id = 0


def _problems(errors: Sequence[FieldError]) -> list[FieldError]:
    return [FieldError(e.message, e.code, _column_path(e.field, _INTERACTION_ALIASES))
            for e in errors]


class PostgresInteractionImporter:
    """``Importer`` for interactions on PostgreSQL (see the module's docstring)."""

    def __init__(self) -> None:
        state = rapport()
        self.kinds = set(state.interaction_kinds)
        self.monetary_kinds = state.monetary_kinds
        self._schema: InteractionSchema | None = None
        # Statistics: see ``_analyze_when_grown``.
        self._rows_at_analyze: int | None = None  # read in the first batch's transaction
        self._rows_since = 0

    def _analyze_when_grown(self) -> None:
        """ANALYZE the table each time the import doubled it (from 10,000 rows).

        With autovacuum off or lagging, the plugins' batch statements were planned from no
        statistics or a nearly empty table's: a refund's look-up read every refund's index
        entry, and each batch grew slower with the table (56 ms per 1,000 rows at 200k).
        A doubling rule costs a handful of sampled ANALYZEs per import, and the import
        leaves statistics at most a factor two behind (PITFALLS: "an import should leave
        statistics fresh").
        """
        if self._rows_at_analyze is None or \
                self._rows_since < max(self._rows_at_analyze, 10_000):
            return
        with transaction():
            db.session.execute(text(f"ANALYZE {Interaction.__tablename__}"))
        self._rows_at_analyze += self._rows_since
        self._rows_since = 0

    def check_columns(self, columns: Sequence[str]) -> None:
        _missing_columns(columns, INTERACTION_REQUIRED)

    def _schema_verdict(self, row: _Row, check: FastCheck) -> None:
        converted = check.convert(row.values)
        if converted is not None:
            row.converted = converted
            return
        if self._schema is None:
            self._schema = interaction_schema()
        data = _pending(row.line, row.values, row.customer_id).data
        try:
            row.converted = converted_from_schema(self._schema.load(data))
        except ValidationError as exc:
            row.errors = _problems(errors_from_marshmallow(exc))

    def import_batch(self, records: Sequence[Record]) -> BatchOutcome:
        outcome = BatchOutcome()
        check = FastCheck(self.kinds, self.monetary_kinds, utcnow())
        self._schema = None
        rows: list[_Row] = []
        for record in records:
            problem = _missing_identity(record.values)
            if problem:
                outcome.rejected[record.line] = [problem]
            else:
                rows.append(_Row(record.line, record.values))
        if not rows:
            return outcome
        with transaction():
            if self._rows_at_analyze is None:
                self._rows_at_analyze = max(0, int(db.session.scalar(text(
                    "SELECT reltuples FROM pg_class WHERE oid = CAST(:name AS regclass)"),
                    {"name": Interaction.__tablename__}) or 0))
            customers = _customers({_customer_key(r.values) for r in rows})
            found: list[_Row] = []
            for row in rows:
                customer = customers.get(_customer_key(row.values))
                if customer is None:
                    source, external_id = _customer_key(row.values)
                    outcome.rejected[row.line] = [FieldError(
                        f"No customer with external id {external_id!r} in source {source!r}; "
                        f"import the customers first.", ErrorCode.NOT_FOUND,
                        "customer_external_id")]
                else:
                    row.customer_id = customer[0]
                    found.append(row)
            if not found:
                return outcome
            stored = _stored({r.key for r in found} | {r.refers for r in found if r.refers})
            accepted, existing = self._resolve(found, stored, customers, check, outcome)
            ids = _new_ids(len(accepted))
            for row, new_id in zip(accepted, ids):
                row.new_id = new_id
            _copy(accepted, utcnow())
            result = BatchResult(
                recorded_ids={row.line: row.new_id for row in accepted},
                existing_ids=existing,
                rejected={line: [] for line in outcome.rejected})
            if ids:
                rapport().hook.rapport_interactions_recorded(interaction_ids=list(ids))
            record_batch("interactions.imported", "Interaction", result)
        outcome.imported += len(accepted)
        outcome.skipped += len(existing)
        self._rows_since += len(accepted)
        self._analyze_when_grown()
        return outcome

    def _resolve(self, rows: list[_Row], stored: Mapping[tuple[str, str], tuple[int, int]],
                 customers: Mapping[tuple[str, str], tuple[int, CustomerStatus]],
                 check: FastCheck, outcome: BatchOutcome
                 ) -> tuple[list[_Row], dict[int, int]]:
        """Rounds, as the SQLite path records them: each round takes the rows whose
        referred interaction is known when it starts (stored, or accepted by an earlier
        round); a key met again in the same round is a duplicate, in a later round it is
        already there."""
        accepted: list[_Row] = []
        existing: dict[int, int] = {}
        known: dict[tuple[str, str], int | _Row] = {}   # accepted by an earlier round
        customer_of: dict[tuple[str, str], int] = {k: v[1] for k, v in stored.items()}
        statuses = {cid: status for cid, status in customers.values()}
        pending = rows
        while pending:
            def target(row: _Row) -> int | _Row | None:
                assert row.refers is not None
                if row.refers in stored:
                    return stored[row.refers][0]
                return known.get(row.refers)

            ready, waiting = [], []
            for row in pending:
                if row.refers is None:
                    ready.append(row)
                else:
                    found = target(row)
                    if found is None:
                        waiting.append(row)
                    else:
                        row.target = found
                        ready.append(row)
            if not ready:
                break
            pending = waiting
            seen: dict[tuple[str, str], int] = {}
            this_round: list[tuple[tuple[str, str], int | _Row]] = []
            for row in ready:
                self._schema_verdict(row, check)
                if row.errors:
                    outcome.rejected[row.line] = row.errors
                    continue
                if row.key in stored or row.key in known:
                    earlier = stored[row.key][0] if row.key in stored else known[row.key]
                    existing[row.line] = earlier if isinstance(earlier, int) else 0
                    this_round.append((row.key, earlier))
                    continue
                if row.key in seen:
                    outcome.rejected[row.line] = [FieldError(
                        f"Same source and external id as line {seen[row.key]} of this batch.",
                        ErrorCode.UNIQUE, "external_id")]
                    continue
                seen[row.key] = row.line
                errors: list[FieldError] = []
                if statuses.get(row.customer_id) == CustomerStatus.ERASED:
                    errors.append(FieldError(
                        "The customer is erased; nothing can be recorded for it.",
                        ErrorCode.NOT_ALLOWED, "customer_external_id"))
                if row.refers is not None:
                    owner = (customer_of.get(row.refers) if row.refers in stored
                             else row.target.customer_id)  # type: ignore[union-attr]
                    if owner != row.customer_id:
                        errors.append(FieldError(
                            "The referred interaction belongs to another customer.",
                            ErrorCode.INVALID, "refers_to"))
                if errors:
                    outcome.rejected[row.line] = errors
                    continue
                accepted.append(row)
                this_round.append((row.key, row))
            known.update(this_round)
        for row in pending:
            assert row.refers is not None
            outcome.rejected[row.line] = [FieldError(
                f"No interaction with external id {row.refers[1]!r} in source "
                f"{row.refers[0]!r} to refer to: it must be imported before, or come "
                f"earlier in the file (and not be rejected).", ErrorCode.NOT_FOUND,
                "refers_to")]
        return accepted, existing


# Each key is looked up through its unique index (LIMIT 1 keeps the LATERAL subquery a
# per-key index probe): with the statistics of a table that an import grows, or none at
# all when autovacuum lags, the planner otherwise hashes a sequential scan of the whole
# table for every batch (55 ms at 50k rows and growing, against 2-3 ms).
_CUSTOMERS_SQL = text("""
SELECT w.source, w.external_id, x.customer_id, c.status
FROM (SELECT k->>0 AS source, k->>1 AS external_id
      FROM json_array_elements(CAST(:keys AS json)) AS k) AS w
CROSS JOIN LATERAL (
    SELECT x.customer_id FROM customer_external_ids AS x
    WHERE x.source = w.source AND x.external_id = w.external_id LIMIT 1) AS x
JOIN customers AS c ON c.id = x.customer_id""")
_STORED_SQL = text("""
SELECT w.source, w.external_id, i.id, i.customer_id
FROM (SELECT k->>0 AS source, k->>1 AS external_id
      FROM json_array_elements(CAST(:keys AS json)) AS k) AS w
CROSS JOIN LATERAL (
    SELECT i.id, i.customer_id FROM interactions AS i
    WHERE i.source = w.source AND i.external_id = w.external_id LIMIT 1) AS i""")


def _keys_parameter(keys: set[tuple[str, str]]) -> dict[str, str]:
    """The pairs as one JSON array: encoded in C, where psycopg builds two text arrays
    element by element in Python (a third of the look-ups' client time)."""
    return {"keys": json.dumps(sorted(keys))}


def _customers(keys: set[tuple[str, str]]
               ) -> dict[tuple[str, str], tuple[int, CustomerStatus]]:
    """Each known customer key's id and status, one query."""
    rows = db.session.execute(_CUSTOMERS_SQL, _keys_parameter(keys)).all()
    return {(source, external_id): (customer_id, CustomerStatus(status))
            for source, external_id, customer_id, status in rows}


def _stored(keys: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
    """The id and customer of each stored interaction among ``keys``, one query."""
    rows = db.session.execute(_STORED_SQL, _keys_parameter(keys)).all()
    return {(source, external_id): (interaction_id, customer_id)
            for source, external_id, interaction_id, customer_id in rows}


def _new_ids(count: int) -> list[int]:
    if not count:
        return []
    return sorted(db.session.scalars(
        select(func.nextval(func.pg_get_serial_sequence(Interaction.__tablename__, "id")))
        .select_from(func.generate_series(1, count))).all())


def _copy(rows: Sequence[_Row], now: dt.datetime) -> None:
    """``COPY interactions FROM STDIN`` on the session's own connection (same transaction)."""
    if not rows:
        return
    connection = db.session.connection().connection.driver_connection
    statement = (f"COPY {Interaction.__tablename__} ({', '.join(_COPY_COLUMNS)}) "
                 f"FROM STDIN")
    with connection.cursor() as cursor:
        # The foreign-key checks run a saved plan per row: the importer's
        # ``force_custom_plan`` (for the plugins' statements) would plan each one again,
        # which made the COPY 1.7 times slower. Back to it for what follows.
        mode = cursor.execute("SELECT current_setting('plan_cache_mode'), "
                              "set_config('plan_cache_mode', 'auto', true)").fetchone()
        with cursor.copy(statement) as copy:
            for row in rows:
                assert row.converted is not None
                kind, channel, occurred, amount, currency, payload = row.converted
                target = row.target
                refers_id = target.new_id if isinstance(target, _Row) else target
                copy.write_row((row.new_id, row.customer_id, kind, channel, occurred, amount,
                                currency, payload, row.key[0], row.key[1], refers_id, now))
        if mode and mode[0] != "auto":
            cursor.execute(f"SET LOCAL plan_cache_mode = {mode[0]}")
