"""The posting engine: the only code that changes balances, lots and the ledger.

Locking: every writer takes the account row lock before it reads or changes the
account's lots, so lots need no locks of their own. A single debit takes it with the
conditional ``UPDATE ... SET balance = balance - x WHERE balance >= x`` (no overdraft, no
lost update, one statement); credits add to balances with one upsert per account and
batch debits lock their accounts with ``SELECT ... FOR UPDATE``, both in customer id
order, so two batches never deadlock. A new lot is invisible to others until its
transaction commits, so it may be written before its account is locked. SQLite
serialises writers and ignores ``FOR UPDATE``.

Invariants kept here: balance = sum of the account's entries = sum of its lots'
``remaining``; balance >= 0 (also a CHECK); each debit entry's ``loyalty_lot_use`` rows
add up to its points.

Expiry: points of a lot past its ``expires_at`` are never spent. Every debit (``debit``,
and the refunds' batch through ``expire_open_lots``) first writes off, under the account
lock it holds and in its transaction, the member's lots past expiry as of its ``now``,
with the same ``expire`` entries the expiry job writes (``write_expiries``, shared); the
job writes them for everyone else.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import (
    BigInteger, all_, any_, bindparam, func, insert, literal, select, text, update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from core import changes
from core.db import JSONDocument, UTCDateTime, db
from core.errors import ErrorCode, UserError
from core.models import Customer, CustomerStatus
from core.services import in_transaction, not_found, transaction

from plugins.loyalty import audit as loyalty_audit
from plugins.loyalty.errors import LoyaltyErrorCode
from plugins.loyalty.functions import CALL_DEBIT
from plugins.loyalty.models import Account, EntryKind, LedgerEntry, LotUse

_accounts = Account.__table__
_ledger = LedgerEntry.__table__
_uses = LotUse.__table__

#: Lots are spent soonest expiry first (first in, first out whenever lots share a
#: validity), then oldest first; lots that never expire come last.
LOT_ORDER = (_ledger.c.expires_at.asc().nulls_last(), _ledger.c.occurred_at.asc(),
             _ledger.c.id.asc())

#: The columns a row for ``insert_entries`` may carry (absent ones are NULL).
ENTRY_COLUMNS = ("customer_id", "kind", "points", "occurred_at", "recorded_at", "reason",
                 "interaction_id", "earn_rule_id", "reward_id", "actor_id", "idempotency_key",
                 "request_fingerprint", "expires_at", "remaining", "shortfall", "details")


@dataclass
class Lot:
    id: int
    customer_id: int
    remaining: int
    interaction_id: int | None = None
    expires_at: dt.datetime | None = None

    def due(self, as_of: dt.datetime) -> bool:
        """Past its expiry at ``as_of``: its points may no longer be spent."""
        return self.expires_at is not None and self.expires_at <= as_of


# --- Accounts ------------------------------------------------------------------------------


def active_customer(customer_id: int, field: str = "customerId") -> None:
    """Refuse an unknown or erased customer before anything is written."""
    status = db.session.scalar(select(Customer.status).where(Customer.id == customer_id))
    if status is None:
        raise not_found("customer", customer_id, field, type_name="Customer")
    if status == CustomerStatus.ERASED:
        raise UserError.single("The customer is erased; their points can no longer move.",
                               ErrorCode.NOT_ALLOWED, field)


def open_accounts(customer_ids: Iterable[int], now: dt.datetime) -> None:
    """Open the accounts that do not exist yet (membership starts at the first credit)."""
    credit_balances(dict.fromkeys(customer_ids, 0), now)


def credit_balances(credits: Mapping[int, int], now: dt.datetime) -> None:
    """Add points to accounts, opening those that do not exist: one upsert per account,
    in customer id order (the order locks are taken in, so batches never deadlock)."""
    rows = [{"customer_id": c, "balance": points, "created_at": now, "updated_at": now}
            for c, points in sorted(credits.items())]
    if not rows:
        return
    dialect = db.session.get_bind().dialect.name
    stmt = pg_insert(_accounts) if dialect == "postgresql" else sqlite_insert(_accounts)
    db.session.execute(stmt.on_conflict_do_update(
        index_elements=["customer_id"],
        set_={"balance": _accounts.c.balance + stmt.excluded.balance,
              "updated_at": stmt.excluded.updated_at}), rows)


def lock_accounts(customer_ids: Iterable[int]) -> dict[int, int]:
    """Lock the accounts (customer id order) and return their balances."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    rows = db.session.execute(
        select(Account.customer_id, Account.balance).where(among(Account.customer_id, ids))
        .order_by(Account.customer_id).with_for_update())
    return {customer_id: balance for customer_id, balance in rows}


def add_to_balances(deltas: Mapping[int, int], now: dt.datetime) -> None:
    """Apply signed deltas to locked accounts, one executemany."""
    params = [{"b_customer": c, "b_delta": d, "b_now": now}
              for c, d in sorted(deltas.items()) if d]
    if params:
        db.session.execute(
            update(_accounts).where(_accounts.c.customer_id == bindparam("b_customer"))
            .values(balance=_accounts.c.balance + bindparam("b_delta"),
                    updated_at=bindparam("b_now")), params)


# --- Entries and lots ----------------------------------------------------------------------


def insert_entries(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Multi-row INSERT of ledger entries; their ids in the order of ``rows``.

    PostgreSQL returns them in parameter order (SQLAlchemy's sorted insertmanyvalues);
    SQLite has one writer, which assigns ascending rowids in VALUES order.
    """
    if not rows:
        return []
    full = [{column: row.get(column) for column in ENTRY_COLUMNS} for row in rows]
    if db.session.get_bind().dialect.name == "sqlite":
        return sorted(db.session.scalars(insert(_ledger).returning(_ledger.c.id), full).all())
    return list(db.session.scalars(
        insert(_ledger).returning(_ledger.c.id, sort_by_parameter_order=True), full).all())


def append_entries(rows: Sequence[Mapping[str, Any]]) -> None:
    """Bulk write of entries whose ids are not needed; every row carries the same keys.

    PostgreSQL gets them through COPY (several times faster than multi-row INSERTs for a
    100,000-entry batch), SQLite through one executemany.
    """
    if not rows:
        return
    if db.session.get_bind().dialect.name != "postgresql":
        db.session.execute(insert(_ledger), list(rows))
        return
    from psycopg.types.json import Jsonb  # PostgreSQL only: psycopg is an optional extra

    def copyable(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        return Jsonb(value) if isinstance(value, dict) else value

    columns = list(rows[0])
    cursor = db.session.connection().connection.driver_connection.cursor()  # type: ignore
    with cursor.copy(f"COPY loyalty_ledger ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([copyable(row[c]) for c in columns])


def among(column: Any, ids: Collection[int]) -> Any:
    """``column IN ids``; on PostgreSQL ``= ANY(array)``: one bind parameter instead of one
    per id, which keeps a 10,000-id batch's statement short to send and to plan."""
    if db.session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(list(ids), ARRAY(BigInteger)))
    return column.in_(ids)


def not_among(column: Any, ids: Collection[int]) -> Any:
    """``column NOT IN ids``; on PostgreSQL ``<> ALL(array)`` (see ``among``)."""
    if db.session.get_bind().dialect.name == "postgresql":
        return column != all_(literal(list(ids), ARRAY(BigInteger)))
    return column.not_in(ids)


def open_lots(customer_ids: Iterable[int]) -> dict[int, list[Lot]]:
    """Every lot with points left, per customer, in spending order (those past expiry
    included: see ``expire_open_lots``)."""
    found: dict[int, list[Lot]] = defaultdict(list)
    ids = sorted(set(customer_ids))
    if not ids:
        return found
    for lot_id, customer_id, remaining, interaction_id, expires_at in db.session.execute(
            select(LedgerEntry.id, LedgerEntry.customer_id, LedgerEntry.remaining,
                   LedgerEntry.interaction_id, LedgerEntry.expires_at)
            .where(among(LedgerEntry.customer_id, ids), LedgerEntry.remaining > 0)
            .order_by(LedgerEntry.customer_id, *LOT_ORDER)):
        found[customer_id].append(Lot(lot_id, customer_id, remaining, interaction_id,
                                      expires_at))
    return found


# --- Expiry --------------------------------------------------------------------------------


def overdue_points(customer_id: Any, as_of: dt.datetime) -> Any:
    """SQL: the points still in the member's lots past expiry at ``as_of`` (0 if none),
    correlated to ``customer_id`` (a column or a value). The partial index on open lots
    answers it."""
    return func.coalesce(
        select(func.sum(_ledger.c.remaining))
        .where(_ledger.c.customer_id == customer_id, _ledger.c.remaining > 0,
               _ledger.c.expires_at <= as_of)
        .scalar_subquery(), 0)


def due_lots(customer_ids: Collection[int], as_of: dt.datetime) -> list[Lot]:
    """The lots of these members past their expiry at ``as_of`` with points left, in
    customer and lot order. Read them under the accounts' locks."""
    return [Lot(lot_id, customer_id, remaining, None, expires_at)
            for lot_id, customer_id, remaining, expires_at in db.session.execute(
                select(LedgerEntry.id, LedgerEntry.customer_id, LedgerEntry.remaining,
                       LedgerEntry.expires_at)
                .where(among(LedgerEntry.customer_id, customer_ids),
                       LedgerEntry.expires_at <= as_of, LedgerEntry.remaining > 0)
                .order_by(LedgerEntry.customer_id, LedgerEntry.id))]


def write_expiries(lots: Sequence[Lot], now: dt.datetime) -> dict[int, int]:
    """Write off lots past expiry: one ``expire`` entry per lot for the points still in
    it, dated at the lot's expiry (whenever this runs), its lot use, the lot emptied.

    The one way expiry entries are written, by the job and by debits alike. The caller
    holds the accounts' locks and moves their balances by the points returned per member
    (positive numbers), in the same transaction.
    """
    lots = sorted(lots, key=lambda lot: (lot.customer_id, lot.id))
    if not lots:
        return {}
    entry_ids = insert_entries([{
        "customer_id": lot.customer_id, "kind": EntryKind.EXPIRE, "points": -lot.remaining,
        "occurred_at": lot.expires_at, "recorded_at": now} for lot in lots])
    record_uses([(entry_id, lot.id, lot.remaining) for entry_id, lot in zip(entry_ids, lots)])
    expired: dict[int, int] = defaultdict(int)
    for lot in lots:
        expired[lot.customer_id] += lot.remaining
    return dict(expired)


def expire_open_lots(lots: Mapping[int, list[Lot]], as_of: dt.datetime,
                     now: dt.datetime) -> dict[int, int]:
    """For a batch debit that read its members' ``open_lots`` under their locks: write off
    the lots past expiry at ``as_of`` and take them out of ``lots`` (so they cannot be
    spent). Returns the points expired per member; the caller moves the balances. No
    statement unless a lot is due."""
    due = [lot for member in lots.values() for lot in member if lot.due(as_of)]
    if not due:
        return {}
    for customer_id in {lot.customer_id for lot in due}:
        lots[customer_id][:] = [lot for lot in lots[customer_id] if not lot.due(as_of)]
    return write_expiries(due, now)


def plan_use(lots: Sequence[Lot], points: int, first: Callable[[Lot], bool] | None = None
             ) -> list[tuple[Lot, int]]:
    """Which lots pay ``points``: those matching ``first`` before the others, each group
    in spending order. Mutates the lots' ``remaining``; the lots must cover ``points``."""
    ordered = [lot for lot in lots if first(lot)] + [lot for lot in lots if not first(lot)] \
        if first else list(lots)
    uses: list[tuple[Lot, int]] = []
    left = points
    for lot in ordered:
        if left == 0:
            break
        take = min(lot.remaining, left)
        if take:
            lot.remaining -= take
            left -= take
            uses.append((lot, take))
    if left:
        raise RuntimeError(f"lots short by {left} points: balance and lots disagree")
    return uses


def record_uses(uses: Sequence[tuple[int, int, int]]) -> None:
    """Store ``(entry_id, lot_id, points)`` and take the points off the lots."""
    if not uses:
        return
    db.session.execute(
        update(_ledger).where(_ledger.c.id == bindparam("b_lot"))
        .values(remaining=_ledger.c.remaining - bindparam("b_points")),
        [{"b_lot": lot, "b_points": points} for _, lot, points in uses])
    db.session.execute(insert(_uses), [{"entry_id": entry, "lot_id": lot, "points": points}
                                       for entry, lot, points in uses])


def credit(entry: LedgerEntry, now: dt.datetime) -> LedgerEntry:
    """Post one credit (a new lot) for an active customer, opening the account if needed."""
    entry.remaining = entry.points
    entry.recorded_at = now
    db.session.add(entry)
    db.session.flush()
    credit_balances({entry.customer_id: entry.points}, now)
    return entry


# A single debit is the hot path (every redemption). On PostgreSQL it is one call of the
# ``loyalty_debit`` function (plugins/loyalty/functions.py), sent as driver SQL. On SQLite
# its SQL is written out once here, so a call costs no statement building. The order of the
# window in _TAKE is LOT_ORDER's; it never spends a lot past expiry at :as_of (the debit
# writes those off instead).
_CLAIM = """INSERT INTO loyalty_ledger (customer_id, kind, points, occurred_at, recorded_at,
    reason, reward_id, actor_id, idempotency_key, request_fingerprint, details)
VALUES (:customer_id, :kind, -:amount, :occurred_at, :recorded_at, :reason, :reward_id,
    :actor_id, :idempotency_key, :request_fingerprint, :details)
RETURNING id"""
_DEBIT = """UPDATE loyalty_account SET balance = balance - :amount, updated_at = :recorded_at
WHERE customer_id = :customer_id AND balance >= :amount
  AND EXISTS (SELECT 1 FROM customers WHERE id = :customer_id AND status <> 'erased')"""
_TAKE = """ranked AS (
    SELECT id, remaining, sum(remaining) OVER (
        ORDER BY expires_at ASC NULLS LAST, occurred_at ASC, id ASC) AS running
    FROM loyalty_ledger WHERE customer_id = :customer_id AND remaining > 0
      AND (expires_at IS NULL OR expires_at > :as_of)),
take AS (
    SELECT id, CASE WHEN remaining < :amount - (running - remaining) THEN remaining
                    ELSE :amount - (running - remaining) END AS points
    FROM ranked WHERE running - remaining < :amount)"""
_USES = """INSERT INTO loyalty_lot_use (entry_id, lot_id, points)
SELECT :entry_id, id, points FROM {source} RETURNING points"""
_RECORDED_AT = bindparam("recorded_at", type_=UTCDateTime())
_AS_OF = bindparam("as_of", type_=UTCDateTime())
_ENTRY_TYPES = (bindparam("occurred_at", type_=UTCDateTime()), _RECORDED_AT,
                bindparam("details", type_=JSONDocument))

#: SQLite has no INSERT or UPDATE inside WITH: the same steps, four statements (more when
#: lots are past expiry). It serialises writers, so the debit's RETURNING may tell the
#: points past expiry (its subquery cannot be stale).
_SQLITE_CLAIM = text(_CLAIM).bindparams(*_ENTRY_TYPES)
_SQLITE_DEBIT = text(f"""{_DEBIT}
RETURNING balance, (SELECT coalesce(sum(remaining), 0) FROM loyalty_ledger
    WHERE customer_id = :customer_id AND remaining > 0 AND expires_at <= :as_of)""").bindparams(
    _RECORDED_AT, _AS_OF)
_SQLITE_USES = text(f"WITH {_TAKE}\n{_USES.format(source='take')}").bindparams(_AS_OF)
_SQLITE_SPEND = text("""UPDATE loyalty_ledger SET remaining = remaining - (
    SELECT u.points FROM loyalty_lot_use AS u
    WHERE u.entry_id = :entry_id AND u.lot_id = loyalty_ledger.id)
WHERE id IN (SELECT lot_id FROM loyalty_lot_use WHERE entry_id = :entry_id)""")


def _insufficient(available: int, needed: int, expired: int) -> UserError:
    message = f"The customer has {available} points; {needed} are needed."
    if expired:
        message += (f" {expired} more points have passed their expiry date and can no "
                    f"longer be spent.")
    return UserError.single(message, LoyaltyErrorCode.INSUFFICIENT_POINTS, "points")


def debit(entry: LedgerEntry, now: dt.datetime, *, audited: bool = False) -> LedgerEntry:
    """Post one debit (``entry.points`` < 0), spending lots in LOT_ORDER.

    The entry's INSERT comes first and claims its idempotency key; the conditional UPDATE
    takes the account's lock and checks the balance and the customer's status at once;
    then, under that lock, the lots to spend are chosen by a running total in SQL and
    their uses recorded, whatever their number. Returns the entry, persistent. On
    PostgreSQL all of this is one round trip (the ``loyalty_debit`` function).

    Lots past their expiry at ``now`` are never spent: under the same lock and in the same
    transaction the debit writes them off first (``write_expiries``: the entries the job
    would write) and takes their points off the balance. If what is left does not cover
    the debit, ``INSUFFICIENT_POINTS``, and the transaction (expiry included) rolls back.
    Nothing more is paid when no lot is due: the check rides on the statements above.

    ``audited``: also write the entry's audit entry and points event
    (``loyalty_audit.entry_recorded``); on PostgreSQL in the same statement as the debit,
    so a redemption is one round trip before its commit.
    """
    points = -entry.points
    entry.recorded_at = now
    params = {"customer_id": entry.customer_id, "kind": entry.kind.value, "amount": points,
              "occurred_at": entry.occurred_at, "recorded_at": now, "reason": entry.reason,
              "reward_id": entry.reward_id, "actor_id": entry.actor_id,
              "idempotency_key": entry.idempotency_key,
              "request_fingerprint": entry.request_fingerprint, "details": entry.details,
              "as_of": now}
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        return _debit_postgresql(entry, params, now, audited)
    overdue = 0
    entry.id = db.session.execute(_SQLITE_CLAIM, params).scalar_one()
    row = db.session.execute(_SQLITE_DEBIT, params).first()
    if row is None:
        _refused(entry, points, now)
    if row[1]:
        # the balance left after the debit must still hold the points past expiry
        overdue = int(row[1])
        if row[0] < overdue:
            raise _insufficient(row[0] + points - overdue, points, overdue)
        _write_off(entry.customer_id, due_lots([entry.customer_id], now), now)
    where = {"customer_id": entry.customer_id, "amount": points, "entry_id": entry.id,
             "as_of": now}
    spent = sum(db.session.execute(_SQLITE_USES, where).scalars())
    if spent != points:
        _disagree(entry, spent, points)
    db.session.execute(_SQLITE_SPEND, where)
    _persistent(entry)
    if audited:
        loyalty_audit.entry_recorded(entry)
    return entry


def _debit_postgresql(entry: LedgerEntry, params: dict[str, Any], now: dt.datetime,
                      audited: bool) -> LedgerEntry:
    """One round trip: the ``loyalty_debit`` function (plugins/loyalty/functions.py),
    with the audit entry and the event in the same statement when ``audited``."""
    points = params["amount"]
    values = {**params, "now": now, "details": json.dumps(params["details"])}
    if audited:
        objects, events = loyalty_audit.entry_change(entry, loyalty_audit.DEBIT_ENTRY)
        rows = changes.record_with(CALL_DEBIT, values, loyalty_audit.DEBIT_ENTRY, None,
                                   objects, None, events)
    else:
        rows = db.session.connection().exec_driver_sql(CALL_DEBIT, values).all()
    if not rows:
        _refused(entry, points, now)
    entry.id = rows[0][0]
    spent = int(rows[0][1])
    due = [Lot(lot_id, entry.customer_id, remaining, None, expires_at)
           for _, _, lot_id, remaining, expires_at in rows if lot_id is not None]
    overdue = sum(lot.remaining for lot in due)
    if spent < points and spent + overdue >= points:
        raise _insufficient(spent, points, overdue)
    if spent != points:
        _disagree(entry, spent, points)
    if due:
        _write_off(entry.customer_id, due, now)
    return _persistent(entry)


def _refused(entry: LedgerEntry, points: int, now: dt.datetime) -> NoReturn:
    """The conditional UPDATE changed nothing: say why (unknown or erased customer,
    balance short)."""
    active_customer(entry.customer_id)
    balance, overdue = db.session.execute(
        select(Account.balance, overdue_points(Account.customer_id, now))
        .where(Account.customer_id == entry.customer_id)).first() or (0, 0)
    raise _insufficient(balance - overdue, points, overdue)


def _disagree(entry: LedgerEntry, spent: int, points: int) -> NoReturn:
    raise RuntimeError(f"the lots of customer {entry.customer_id} hold {spent} of the "
                       f"{points} points debited: balance and lots disagree")


#: Columns of an entry: those a debit does not set are NULL in its row.
_ENTRY_ATTRIBUTES = tuple(attr.key for attr in LedgerEntry.__mapper__.column_attrs)


def _persistent(entry: LedgerEntry) -> LedgerEntry:
    """The debit's entry as a detached object holding its row, without reading it back:
    the columns it did not set are NULL in the row. It stays out of the session (nothing
    in it is left to flush, and the commit has nothing to expire: reading it afterwards
    costs no statement)."""
    make_transient_to_detached(entry)
    loaded = entry.__dict__
    for key in _ENTRY_ATTRIBUTES:
        if key not in loaded:
            set_committed_value(entry, key, None)
    return entry


def _write_off(customer_id: int, due: Sequence[Lot], now: dt.datetime) -> None:
    """A single debit's expiry: its member's lots past expiry, under the lock it holds."""
    expired = write_expiries(due, now)
    add_to_balances({customer_id: -expired.get(customer_id, 0)}, now)


# --- Idempotency ---------------------------------------------------------------------------


def fingerprint(operation: str, data: Mapping[str, Any]) -> str:
    """A digest of what was asked (the key itself excluded), to tell replays from reuse."""
    payload = {k: v for k, v in data.items() if k != "idempotency_key"}
    canonical = json.dumps({"operation": operation, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _first_result(key: str, digest: str) -> LedgerEntry | None:
    entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == key))
    if entry is not None and entry.request_fingerprint != digest:
        raise UserError.single(
            "This idempotency key was used for a different request; use a new key for a new "
            "operation.", LoyaltyErrorCode.IDEMPOTENCY_CONFLICT, "idempotencyKey")
    return entry


def once(key: str, digest: str, customer_id: int,
         operation: Callable[[], LedgerEntry]) -> LedgerEntry:
    """Run ``operation`` in one transaction, unless ``key`` already has a result.

    The operation's first write is its entry, which claims the key (a unique index): a
    replay (same key, same request) fails there and returns the entry the first call
    wrote, whatever changed since; the same key with another request is
    ``IDEMPOTENCY_CONFLICT``. Two concurrent first calls race on the index: the loser
    rolls back and returns the winner's entry. Only failures pay for the extra look-ups.

    Inside an outer transaction (a GraphQL mutation, a job), a failed write cannot be
    rolled back alone: a replay is looked up first, and on PostgreSQL the operation runs
    in a savepoint so that losing the race rolls back only its own writes. (SQLite
    serialises writers, so no race can happen between the look-up and the write there.)
    """
    if in_transaction():
        return _once_nested(key, digest, customer_id, operation)
    try:
        with transaction():
            return operation()
    except (IntegrityError, UserError) as exc:
        with transaction():
            first = _first_result(key, digest)
            if first is None and isinstance(exc, IntegrityError):
                active_customer(customer_id)  # an unknown customer fails the foreign key
        if first is None:
            raise
        return first


def _once_nested(key: str, digest: str, customer_id: int,
                 operation: Callable[[], LedgerEntry]) -> LedgerEntry:
    first = _first_result(key, digest)
    if first is not None:
        return first
    try:
        if db.session.get_bind().dialect.name != "postgresql":
            return operation()  # a failed statement leaves SQLite's transaction usable
        with db.session.begin_nested():
            return operation()
    except IntegrityError:
        first = _first_result(key, digest)
        if first is None:
            active_customer(customer_id)  # an unknown customer fails the foreign key
            raise
        return first
