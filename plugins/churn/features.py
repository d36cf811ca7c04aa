"""Churn features and BTYD summaries, computed in the database as of a date.

``feature_select(customers, spec)`` is one SELECT for a selectable of customer ids: a
GROUP BY over their interactions dated on or before ``as_of`` (recency, frequency,
monetary value and tenure from purchases in the base currency; counts of every
interaction kind in 30/90/365-day windows and a 90-day trend), their demographics and
declared custom attributes, and every installed plugin's ``rapport_churn_features``
contribution, LEFT JOINed. ``feature_chunks`` runs it over keyset chunks of customer ids,
so scoring a million customers holds one chunk in memory at a time.

Missing values (docs/churn.md, "Features"):

- no purchase by ``as_of``: ``recency_days`` = ``tenure_days`` (as if the last activity
  were the start of the relationship), ``frequency`` = ``monetary`` =
  ``avg_order_value`` = 0 and ``no_purchase`` = 1;
- no interaction at all: ``days_since_last_interaction`` = ``tenure_days``;
- unknown birth date: ``age_years`` = 0 and ``age_missing`` = 1; unknown gender,
  education or income band: every one-hot column 0;
- a declared number or boolean attribute absent (or of another JSON type): 0 and
  ``attr_<key>_missing`` = 1; a category attribute: every one-hot column 0;
- a plugin's NULL: 0 and ``<column>_missing`` = 1.

``btyd_select`` gives the summary the BG/NBD and Gamma-Gamma models need (CONTRACTS.md,
"Statistics conventions"): purchases grouped per day of RAPPORT_TIMEZONE (the offset it
has at ``as_of``), frequency = number of repeat purchase days, recency = last purchase day
minus first, T = ``as_of``'s day minus first, monetary = mean total of the repeat days;
in days or weeks.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Boolean, ColumnElement, Float, Integer, Select, and_, case, cast, exists, extract, func,
    Table, literal, literal_column, or_, select, text,
)
from sqlalchemy.exc import CompileError
from sqlalchemy.sql import FromClause
from sqlalchemy.sql.util import find_tables

from core.app import rapport
from core.db import MONEY_SCALE, UTCDateTime, db
from core.lazy import lazy_module
from core.models import (
    AttributeType, Customer, CustomerAttributeDefinition, CustomerStatus, Interaction,
)

from plugins.churn.models import TimeUnit

if TYPE_CHECKING:
    import numpy as np
else:  # imported on first use: the app starts without the statistics stack
    np = lazy_module("numpy")

WINDOWS = (30, 90, 365)
TREND_DAYS = 90
DEMOGRAPHICS = ("gender", "education", "income_band")
#: One-hot columns per demographic field: the most frequent values.
MAX_CATEGORIES = 12
DEFAULT_CHUNK = 10_000
PURCHASE = "purchase"
_MONEY_UNIT = float(10 ** MONEY_SCALE)

#: (low, high]: the customer ids of a keyset chunk.
IdRange = tuple[int, int]


def _dialect() -> str:
    return db.session.get_bind().dialect.name


def column_part(value: str) -> str:
    """A value as a column-name part: lowercase letters, digits and underscores."""
    return re.sub(r"[^a-z0-9]+", "_", value.strip().lower()).strip("_") or "blank"


# --- What the features are -----------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that fixes the feature columns besides the installed plugins: the
    interaction kinds, the demographic categories and the declared attributes. Stored
    with a model version (``to_json``) so scoring builds the columns it was trained on."""

    as_of: dt.datetime
    base_currency: str
    kinds: tuple[str, ...]
    demographics: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: (key, type, categories) of declared number / boolean / category attributes.
    attributes: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    #: Contractual history as features (``tenure_periods``, ``period_year``): a model
    #: fitted on customers that carry renewal periods (older specs: without them).
    contract: bool = False

    def to_json(self) -> str:
        data = asdict(self)
        data["as_of"] = self.as_of.isoformat()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        data = json.loads(text)
        return cls(as_of=dt.datetime.fromisoformat(data["as_of"]),
                   base_currency=data["base_currency"], kinds=tuple(data["kinds"]),
                   demographics={k: tuple(v) for k, v in data["demographics"].items()},
                   attributes=tuple((k, t, tuple(c)) for k, t, c in data["attributes"]),
                   contract=bool(data.get("contract", False)))

    def at(self, as_of: dt.datetime) -> FeatureSpec:
        """The same columns as of another date (scoring with a model fitted earlier)."""
        return FeatureSpec(as_of, self.base_currency, self.kinds, self.demographics,
                           self.attributes, self.contract)


def feature_spec(as_of: dt.datetime) -> FeatureSpec:
    """The spec for the current registries and data: one query per demographic field."""
    state = rapport()
    demographics: dict[str, tuple[str, ...]] = {}
    for name in DEMOGRAPHICS:
        column = getattr(Customer, name)
        # Customers existing by then, their own start date included: a record created
        # after the fit date for a customer whose history predates it keeps its values.
        values = db.session.scalars(
            select(column).where(column.is_not(None), _existing_by(as_of))
            .group_by(column).order_by(func.count().desc(), column).limit(MAX_CATEGORIES)).all()
        demographics[name] = tuple(sorted({v for v in values if v.strip()}))
    attributes = tuple(
        (d.key, d.type.value, tuple(d.categories or ()))
        for d in db.session.scalars(select(CustomerAttributeDefinition).where(
            CustomerAttributeDefinition.type.in_(
                [AttributeType.NUMBER, AttributeType.BOOLEAN, AttributeType.CATEGORY]))
            .order_by(CustomerAttributeDefinition.key)))
    contract = db.session.scalar(select(Customer.id).where(
        Customer.tenure_periods.is_not(None)).limit(1)) is not None
    return FeatureSpec(as_of, state.settings.base_currency,
                       tuple(sorted(state.interaction_kinds)), demographics, attributes,
                       contract)


# --- SQL helpers that differ between the databases -------------------------------------------


def _days_between(later: Any, earlier: Any) -> ColumnElement[float]:
    """Fractional days from ``earlier`` to ``later`` (timestamps)."""
    if _dialect() == "sqlite":
        return cast(func.julianday(later) - func.julianday(earlier), Float)
    return cast(extract("epoch", later - earlier) / 86400.0, Float)


def _epoch_days(moment: Any) -> ColumnElement[float]:
    if _dialect() == "sqlite":
        return cast(func.julianday(moment) - 2440587.5, Float)
    return cast(extract("epoch", moment) / 86400.0, Float)


def _floor(value: ColumnElement[float]) -> ColumnElement[int]:
    if _dialect() == "sqlite":
        # CAST truncates towards zero: below 0 (days before 1970) that is the floor + 1,
        # so a negative non-integer value takes one off.
        truncated = cast(value, Integer)
        return truncated - case((value < truncated, 1), else_=0)
    return cast(func.floor(value), Integer)


def _age_years(as_of: dt.datetime) -> ColumnElement[float]:
    day = as_of.date()
    if _dialect() == "sqlite":
        days = func.julianday(literal(day.isoformat())) - func.julianday(Customer.birth_date)
    else:
        days = literal(day) - Customer.birth_date
    return cast(days, Float) / 365.25


def _json_number(key: str) -> ColumnElement[Any]:
    """The attribute as a float when it is a JSON number, else NULL (never a cast error)."""
    if _dialect() == "sqlite":
        path = f'$."{key}"'
        return case((func.json_type(Customer.attributes, path).in_(["integer", "real"]),
                     cast(func.json_extract(Customer.attributes, path), Float)))
    value = Customer.attributes.op("->")(key)
    return case((func.jsonb_typeof(value) == "number",
                 cast(Customer.attributes.op("->>")(key), Float)))


def _json_flag(key: str) -> ColumnElement[Any]:
    """1.0 / 0.0 for a JSON boolean, else NULL."""
    if _dialect() == "sqlite":
        kind = func.json_type(Customer.attributes, f'$."{key}"')
        return case((kind == "true", 1.0), (kind == "false", 0.0))
    text = Customer.attributes.op("->>")(key)
    return case((func.jsonb_typeof(Customer.attributes.op("->")(key)) == "boolean",
                 case((text == "true", 1.0), else_=0.0)))


def _json_text(key: str) -> ColumnElement[Any]:
    if _dialect() == "sqlite":
        return func.json_extract(Customer.attributes, f'$."{key}"')
    return Customer.attributes.op("->>")(key)


# --- The feature query -------------------------------------------------------------------------


def _in_chunk(column: Any, customers: FromClause, id_range: IdRange | None
              ) -> list[ColumnElement[bool]]:
    """``column`` among the chunk's customers; with the chunk's id range as well, so
    PostgreSQL reads the (customer_id, occurred_at) index range instead of scanning the
    whole table for every chunk."""
    conditions = [column.in_(select(customers.c.customer_id))]
    if id_range is not None:
        conditions += [column > id_range[0], column <= id_range[1]]
    return conditions


def _activity(customers: FromClause, spec: FeatureSpec, id_range: IdRange | None
              ) -> FromClause:
    """One GROUP BY over the customers' interactions dated on or before ``as_of``."""
    as_of = spec.as_of
    purchase = and_(Interaction.kind == PURCHASE, Interaction.currency == spec.base_currency)
    columns: list[Any] = [
        Interaction.customer_id,
        func.min(Interaction.occurred_at).label("first_interaction"),
        func.max(Interaction.occurred_at).label("last_interaction"),
        func.min(case((purchase, Interaction.occurred_at))).label("first_purchase"),
        func.max(case((purchase, Interaction.occurred_at))).label("last_purchase"),
        func.sum(case((purchase, 1), else_=0)).label("purchases"),
        cast(func.sum(case((purchase, Interaction.amount), else_=0)), Float).label("spent"),
    ]
    for kind in spec.kinds:
        name = column_part(kind)
        is_kind = Interaction.kind == kind
        for days in WINDOWS:
            recent = and_(is_kind, Interaction.occurred_at > as_of - dt.timedelta(days=days))
            columns.append(func.sum(case((recent, 1), else_=0)).label(f"{name}_{days}d"))
        before = and_(is_kind,
                      Interaction.occurred_at > as_of - dt.timedelta(days=2 * TREND_DAYS),
                      Interaction.occurred_at <= as_of - dt.timedelta(days=TREND_DAYS))
        columns.append(func.sum(case((before, 1), else_=0)).label(f"{name}_previous"))
    return (select(*columns)
            .where(*_in_chunk(Interaction.customer_id, customers, id_range),
                   Interaction.occurred_at <= as_of)
            .group_by(Interaction.customer_id).subquery("churn_activity"))


def _as_number(column: ColumnElement[Any]) -> ColumnElement[float]:
    if isinstance(column.type, Boolean):
        return case((column, 1.0), else_=0.0)
    return cast(column, Float)


def _flag(condition: ColumnElement[bool]) -> ColumnElement[float]:
    return case((condition, 1.0), else_=0.0)


@dataclass(frozen=True)
class FactorColumn:
    """Which explanation factor a feature column belongs to (``feature_layout``).

    The columns of one quantity form one factor: an attribute's one-hot columns, a value
    and its missing indicator. ``label`` names the factor for people; a one-hot column
    stands for ``value``, and a customer none of whose one-hot columns is 1 has ``other``.
    ``role``: ``value``, ``missing`` or ``onehot``.
    """

    group: str
    label: str
    role: str = "value"
    value: str | None = None
    other: str | None = None


_DEMOGRAPHIC_LABELS = {"gender": "Gender", "education": "Education",
                       "income_band": "Income band"}
#: Demographic / attribute one-hot factors of a customer with none of the values.
_UNKNOWN = "not known"
_OTHER = "other or not set"


def feature_select(customers: FromClause, spec: FeatureSpec,
                   id_range: IdRange | None = None,
                   layout: dict[str, FactorColumn] | None = None) -> Select[Any]:
    """``customer_id`` then every feature (floats, no NULLs), one row per customer.

    ``id_range`` (low, high]: the ids of ``customers`` lie within it (a keyset chunk).
    ``layout``, when given, is filled with the factor of each column (``FactorColumn``);
    columns left out of it are factors of their own, named by the column.
    """
    if layout is None:
        layout = {}
    as_of_value = literal(spec.as_of, UTCDateTime)
    ids = customers.c.customer_id
    activity = _activity(customers, spec, id_range)
    a = activity.c
    created = case((and_(a.first_interaction.is_not(None),
                         a.first_interaction < Customer.created_at), a.first_interaction),
                   else_=Customer.created_at)
    start = func.coalesce(a.first_purchase, created)
    # A customer's own start date (customerSince: 00:00 of that day in RAPPORT_TIMEZONE, at
    # the offset the zone has at as_of) wins over what the records show: a contract that
    # began years before the CRM did.
    offset = spec.as_of.astimezone(rapport().settings.tz).utcoffset() or dt.timedelta()
    since_days = _epoch_days(Customer.customer_since) - offset.total_seconds() / 86400.0
    tenure = func.coalesce(literal(spec.as_of.timestamp() / 86400.0, Float) - since_days,
                           _days_between(as_of_value, start))
    purchases = func.coalesce(a.purchases, 0)
    spent = func.coalesce(a.spent, 0.0) / _MONEY_UNIT
    columns: list[Any] = [
        ids.label("customer_id"),
        func.coalesce(_days_between(as_of_value, a.last_purchase), tenure).label("recency_days"),
        cast(purchases, Float).label("frequency"),
        spent.label("monetary"),
        case((purchases > 0, spent / purchases), else_=0.0).label("avg_order_value"),
        tenure.label("tenure_days"),
        _flag(a.last_purchase.is_(None)).label("no_purchase"),
        func.coalesce(_days_between(as_of_value, a.last_interaction), tenure)
        .label("days_since_last_interaction"),
    ]
    for kind in spec.kinds:
        name = column_part(kind)
        for days in WINDOWS:
            columns.append(cast(func.coalesce(a[f"{name}_{days}d"], 0), Float)
                           .label(f"{name}_{days}d"))
        columns.append(cast(func.coalesce(a[f"{name}_{TREND_DAYS}d"], 0)
                            - func.coalesce(a[f"{name}_previous"], 0), Float)
                       .label(f"{name}_trend_{TREND_DAYS}d"))
    if spec.contract:
        columns += [cast(func.coalesce(Customer.tenure_periods, 0), Float)
                    .label("tenure_periods"),
                    _flag(Customer.tenure_periods.is_(None)).label("tenure_periods_missing"),
                    _flag(Customer.period == "year").label("period_year")]
        layout["tenure_periods"] = FactorColumn("tenure_periods", "Renewal periods completed")
        layout["tenure_periods_missing"] = FactorColumn(
            "tenure_periods", "Renewal periods completed", "missing")
        layout["period_year"] = FactorColumn("period", "Renewal period", "onehot", "year",
                                             "month")
    age = _age_years(spec.as_of)
    columns += [func.coalesce(age, 0.0).label("age_years"),
                _flag(Customer.birth_date.is_(None)).label("age_missing")]
    layout["age_years"] = FactorColumn("age", "Age")
    layout["age_missing"] = FactorColumn("age", "Age", "missing")
    taken = {c.name for c in columns}

    def unique(name: str) -> str:
        """Values differing only in punctuation (<25k, 25k) get numbered column names."""
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}_{n}"
        taken.add(candidate)
        return candidate

    for name, values in spec.demographics.items():
        column = getattr(Customer, name)
        label = _DEMOGRAPHIC_LABELS.get(name, name)
        for value in values:
            columns.append(_flag(column == value).label(
                unique(f"{name}_{column_part(value)}")))
            layout[columns[-1].name] = FactorColumn(name, label, "onehot", value, _UNKNOWN)
    for key, kind, categories in spec.attributes:
        prefix = f"attr_{column_part(key)}"
        group = f"attr:{key}"
        if kind == AttributeType.CATEGORY:
            text = _json_text(key)
            for c in categories:
                columns.append(_flag(text == c).label(unique(f"{prefix}_{column_part(c)}")))
                layout[columns[-1].name] = FactorColumn(group, key, "onehot", c, _OTHER)
            continue
        value = _json_number(key) if kind == AttributeType.NUMBER else _json_flag(key)
        columns += [func.coalesce(value, 0.0).label(unique(prefix)),
                    _flag(value.is_(None)).label(unique(f"{prefix}_missing"))]
        layout[columns[-2].name] = FactorColumn(group, key)
        layout[columns[-1].name] = FactorColumn(group, key, "missing")

    stmt_from = customers.join(Customer, Customer.id == ids).outerjoin(
        activity, a.customer_id == ids)
    contributions = rapport().hook.rapport_churn_features(customers=customers, as_of=spec.as_of)
    for position, contribution in enumerate(c for c in contributions if c is not None):
        sub = contribution.subquery(f"churn_plugin_{position}")
        stmt_from = stmt_from.outerjoin(sub, sub.c.customer_id == ids)
        for column in sub.c:
            if column.name == "customer_id" or column.name in taken:
                continue
            taken.add(column.name)
            columns += [func.coalesce(_as_number(column), 0.0).label(column.name),
                        _flag(column.is_(None)).label(f"{column.name}_missing")]
            layout[column.name] = FactorColumn(column.name, column.name)
            layout[f"{column.name}_missing"] = FactorColumn(column.name, column.name,
                                                            "missing")
    stmt = select(*columns).select_from(stmt_from)
    if id_range is not None:
        stmt = stmt.where(Customer.id > id_range[0], Customer.id <= id_range[1])
    return stmt


# --- Chunks of customers -----------------------------------------------------------------------


def _existing_by(as_of: dt.datetime) -> ColumnElement[bool]:
    """Customers that existed by ``as_of`` (created, or with an interaction, by then) and
    are not erased."""
    return and_(Customer.status != CustomerStatus.ERASED,
                or_(Customer.created_at <= as_of,
                    # Its own start date: a record created later for an older customer.
                    Customer.customer_since
                    <= as_of.astimezone(rapport().settings.tz).date(),
                    exists().where(Interaction.customer_id == Customer.id,
                                   Interaction.occurred_at <= as_of)))


#: ``sampled``: a customer is in a sample of share s when a multiplicative hash of its id,
#: uniform on [0, 2^31), is below s x 2^31 (deterministic: a refit on the same data picks
#: the same customers; the arithmetic stays within 64-bit integers on both databases).
_HASH_MODULUS = 2 ** 31
_HASH_MULTIPLIER = 1_103_515_245


def sampled(share: float) -> ColumnElement[bool]:
    """Customers in a pseudo-random sample of about ``share`` of them, chosen in SQL."""
    hashed = ((Customer.id % _HASH_MODULUS) * _HASH_MULTIPLIER + 12_345) % _HASH_MODULUS
    return hashed < int(share * _HASH_MODULUS)


#: For the transactions that run chunk queries (PostgreSQL). A chunk's GROUP BY sorts ~10
#: rows per customer: 4 MB (the default work_mem) spilled it to disk (10 MB external
#: merges per 20,000 customers). JIT compiled the feature query's ~40 aggregates afresh
#: for every chunk: 210 ms of its 730 ms (measured on 20,000 customers, 10 plugins' kinds).
_CHUNK_SETTINGS = ("SET LOCAL work_mem = '64MB'", "SET LOCAL jit = off")


def customer_chunks(as_of: dt.datetime, chunk_size: int = DEFAULT_CHUNK,
                    only: Sequence[int] | None = None, share: float = 1.0,
                    within: IdRange | None = None) -> Iterator[tuple[FromClause, IdRange]]:
    """Selectables of ``customer_id`` in keyset chunks by id, each with its id range. One
    query at the first step reads the ids (8 bytes each) and fixes every chunk's range;
    the later steps run no query, so a caller may hand its connection to another thread
    between chunks. With ``share`` < 1, only a sample of that share of the customers
    (``sampled``); with ``within`` = (after, up_to), only ids in that range."""
    condition = _existing_by(as_of)
    if only is not None:
        condition = and_(condition, Customer.id.in_(list(only)))
    if within is not None:
        condition = and_(condition, Customer.id > within[0], Customer.id <= within[1])
    if share < 1.0:
        condition = and_(condition, sampled(share))
    if _dialect() == "postgresql":
        # psycopg prepares a statement run five times and PostgreSQL may then keep one
        # generic plan, blind to each chunk's id range: measured on 1M customers, chunks
        # went from 1 s to over 90 s each. Plan every chunk for its own range (this
        # transaction only).
        db.session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        for setting in _CHUNK_SETTINGS:
            db.session.execute(text(setting))
    ids = fetch_matrix(select(Customer.id).where(condition).order_by(Customer.id))[:, 0]
    ends = [int(v) for v in ids[chunk_size - 1::chunk_size]]
    if len(ids) % chunk_size:
        ends.append(int(ids[-1]))
    last = within[0] if within is not None else 0
    for end in ends:
        yield (select(Customer.id.label("customer_id"))
               .where(condition, Customer.id > last, Customer.id <= end)
               .subquery("churn_customers"), (last, end))
        last = end


# --- Reading a numeric result into numpy ------------------------------------------------------

#: PostgreSQL's binary COPY: an 11-byte signature, 32-bit flags, 32-bit header extension
#: length (0), then tuples (16-bit field count, then per field a 32-bit length and the
#: value), then a 16-bit -1.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER = 19


def fetch_matrix(stmt: Select[Any]) -> np.ndarray:
    """The rows of ``stmt`` (every column numeric) as a float64 matrix, NULL as NaN.

    On PostgreSQL the result comes as one binary COPY of float8 values that numpy reads
    in place: no Python object per value (a million customers x 80 features is 80
    million of them, most of the time scoring took). Elsewhere, rows through the driver.
    Values travel as float8: integers (customer ids) are exact up to 2^53.
    """
    if _dialect() != "postgresql":
        rows = db.session.execute(stmt).all()
        width = len(stmt.selected_columns)
        return np.asarray([[np.nan if v is None else v for v in row] for row in rows],
                          dtype=np.float64).reshape(-1, width)
    sql, width = _copy_sql(stmt)
    driver = db.session.connection().connection.driver_connection
    with driver.cursor() as cursor:  # type: ignore[union-attr]
        return _read_copy(cursor, sql, width)


def _copy_sql(stmt: Select[Any]) -> tuple[str, int]:
    """``COPY (stmt, every column as float8, NULL as NaN) TO STDOUT`` in binary, and the
    number of columns. Literal values are rendered by SQLAlchemy (COPY takes no
    parameters)."""
    sub = stmt.subquery("churn_numbers")
    nan = literal_column("'NaN'::float8")
    wrapped = select(*[func.coalesce(cast(c, Float), nan) for c in sub.c]).order_by(
        next(iter(sub.c)))
    dialect = db.session.get_bind().dialect
    try:
        sql = str(wrapped.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    except CompileError as exc:
        raise RuntimeError(
            f"a churn feature query holds a value SQLAlchemy cannot write inline ({exc}); "
            f"a rapport_churn_features implementation must use numbers, strings, dates or "
            f"booleans (docs/plugin_hooks.md)") from exc
    if dialect.identifier_preparer._double_percents:
        # The pyformat dialect writes every % as %% (operators, literals, names) for the
        # driver to undo when it binds parameters; COPY is sent without any, so undo it
        # here (an exact inverse: a literal's own %% was written %%%%).
        sql = sql.replace("%%", "%")
    return f"COPY ({sql}) TO STDOUT (FORMAT binary)", len(sub.c)


def _read_copy(cursor: Any, sql: str, width: int) -> np.ndarray:
    with cursor.copy(sql) as copy:
        data = b"".join(bytes(block) for block in copy)
    if not data.startswith(_COPY_SIGNATURE) or data[15:19] != b"\x00\x00\x00\x00":
        raise RuntimeError("unexpected binary COPY header from PostgreSQL")
    body = data[_COPY_HEADER:-2]
    row = np.dtype([("n", ">i2"), ("f", [("len", ">i4"), ("v", ">f8")], (width,))])
    if len(body) % row.itemsize:
        raise RuntimeError("binary COPY rows of an unexpected size (a non-float column?)")
    table = np.frombuffer(body, dtype=row)
    if (table["n"] != width).any() or (table["f"]["len"] != 8).any():
        raise RuntimeError("binary COPY rows of an unexpected shape")
    return table["f"]["v"].astype(np.float64)


J = TypeVar("J")

#: How long a read-ahead statement waits for a table lock before the job runs on the
#: caller's connection instead (see ``matrices_ahead``).
READ_AHEAD_LOCK_TIMEOUT = "2s"


def matrices_ahead(jobs: Iterable[tuple[J, list[Select[Any]]]],
                   before_session: Callable[[], None] | None = None
                   ) -> Iterator[tuple[J, list[np.ndarray]]]:
    """``(key, [fetch_matrix(s) for s in statements])`` for each job, in order.

    On PostgreSQL the statements of the next job run on a second connection, in a worker
    thread, while the caller works on the current one: the database computes chunk i + 1's
    features on one core while Python scores chunk i and the caller's connection writes
    it on another (a scoring run on a 2-CPU machine took about a third less time). The
    reads see committed data, as the caller's own READ COMMITTED statements do; the
    caller keeps its transaction for the writes.

    The second connection must take its own table locks while the caller's transaction
    already holds them: behind a DDL statement queued meanwhile (an ``ALTER TABLE`` waiting
    for the caller to commit) it would wait for ever, and the caller for it. So it waits
    at most ``READ_AHEAD_LOCK_TIMEOUT``; then that job and every later one run on the
    caller's connection (``before_session`` is called first, to let the caller finish
    what it was doing on it), which holds the locks already.
    """
    if _dialect() != "postgresql":
        for key, statements in jobs:
            yield key, [fetch_matrix(s) for s in statements]
        return

    from psycopg.errors import LockNotAvailable  # PostgreSQL is psycopg 3 (the postgres extra)

    def on_session(statements: list[Select[Any]]) -> list[np.ndarray]:
        if before_session is not None:
            before_session()
        return [fetch_matrix(s) for s in statements]

    with db.engine.connect() as connection, ThreadPoolExecutor(
            1, thread_name_prefix="churn-read-ahead") as pool:
        for setting in (*_CHUNK_SETTINGS,
                        f"SET LOCAL lock_timeout = '{READ_AHEAD_LOCK_TIMEOUT}'"):
            connection.exec_driver_sql(setting)
        driver = connection.connection.driver_connection

        def run(sqls: list[tuple[str, int]]) -> list[np.ndarray]:
            with driver.cursor() as cursor:  # type: ignore[union-attr]
                return [_read_copy(cursor, sql, width) for sql, width in sqls]

        queue: deque[tuple[J, list[Select[Any]], Future[list[np.ndarray]] | None]] = deque()
        degraded = False

        def settle() -> tuple[J, list[np.ndarray]]:
            nonlocal degraded
            key, statements, future = queue.popleft()
            if future is not None and not degraded:
                try:
                    return key, future.result()
                except LockNotAvailable:
                    degraded = True
            if future is not None:
                wait([f for _, _, f in queue if f is not None] + [future])
            return key, on_session(statements)

        for key, statements in jobs:
            queue.append((key, statements, None if degraded else pool.submit(
                run, [_copy_sql(s) for s in statements])))
            if len(queue) > 1:
                yield settle()
        while queue:
            yield settle()
        if not degraded:
            connection.rollback()


def refresh_statistics(as_of: dt.datetime) -> list[str]:
    """PostgreSQL: ANALYZE the tables the feature and BTYD queries read (every installed
    plugin's included) that were never analyzed or changed by more than a fifth since.

    A fit right after a bulk load otherwise runs before autovacuum has analyzed the new
    rows: without statistics the planner chose nested loops that took 28 s for 300
    customers instead of 8 ms. Run in its own autocommit connection, so no lock stays
    held through the fit or the scoring run; the tables analyzed are returned.
    """
    if _dialect() != "postgresql":
        return []
    empty = select(Customer.id.label("customer_id")).where(Customer.id < 0).subquery()
    spec = FeatureSpec(as_of, rapport().settings.base_currency, ())
    statements = [feature_select(empty, spec), btyd_select(empty, as_of, TimeUnit.DAY,
                                                            spec.base_currency)]
    names = sorted({t.name for stmt in statements
                    for t in find_tables(stmt, include_aliases=True, include_joins=True,
                                         include_selects=True)
                    if isinstance(t, Table)})
    return analyze_stale(names)


def analyze_stale(names: Sequence[str]) -> list[str]:
    """PostgreSQL: ANALYZE those of the tables ``names`` that autovacuum would analyze now
    but has not yet (never analyzed, or changed since by more than the server's
    ``autovacuum_analyze_threshold + autovacuum_analyze_scale_factor x rows``: 50 + 10% by
    default), in an autocommit connection of its own; the tables analyzed.

    The threshold is the server's own, not a fixed floor: a table analyzed while it was
    nearly empty (autovacuum passing early in a load) and then filled with a few hundred
    rows kept statistics saying "empty" under the 1,000-row floor this used to have, and
    the planner's nested loops made one feature query of a 240-customer fit take 43 s.
    ANALYZE of a small table costs milliseconds; a large one rarely changes by a tenth
    between two fits.

    The change counters alone are not enough: a backend reports its writes to the
    statistics at most once a second and, when it goes idle, up to ten seconds later, so
    a fit started right after a load (another process, or the same one) read
    ``n_mod_since_analyze = 0`` for a table analyzed while empty and 1,400 rows larger
    since; one feature query then took 19 s instead of 10 ms. The table's size on disk
    has no such delay: a table grown by more than the scale factor's share of the pages
    it had when last analyzed is analyzed again."""
    if _dialect() != "postgresql":
        return []
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        stale = connection.execute(text(
            "SELECT c.relname FROM pg_class c "
            "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.relname = ANY(:names) AND c.relkind IN ('r', 'p') "
            "AND c.relnamespace = current_schema()::regnamespace "
            "AND (c.reltuples < 0 OR coalesce(s.n_mod_since_analyze, 0) > "
            "     current_setting('autovacuum_analyze_threshold')::float8 "
            "     + current_setting('autovacuum_analyze_scale_factor')::float8 "
            "       * c.reltuples "
            "     OR pg_relation_size(c.oid) / current_setting('block_size')::float8 > "
            "        c.relpages * (1 + current_setting('autovacuum_analyze_scale_factor')"
            "                          ::float8)) ORDER BY 1"),
            {"names": names}).scalars().all()
        if stale:
            quote = connection.dialect.identifier_preparer.quote
            connection.exec_driver_sql("ANALYZE " + ", ".join(quote(n) for n in stale))
    return list(stale)


@dataclass
class FeatureChunk:
    customer_ids: np.ndarray  # int64, ascending
    values: np.ndarray        # float64, one row per customer, one column per feature name


def feature_names(spec: FeatureSpec) -> list[str]:
    """The columns ``feature_chunks`` yields, in order (the installed plugins included)."""
    empty = select(Customer.id.label("customer_id")).where(Customer.id < 0).subquery()
    return [c.name for c in feature_select(empty, spec).selected_columns][1:]


def feature_layout(spec: FeatureSpec) -> dict[str, FactorColumn]:
    """The factor of each feature column (``FactorColumn``), every column included (a
    column of its own is named by itself); attributes named by their declared label (one
    query)."""
    empty = select(Customer.id.label("customer_id")).where(Customer.id < 0).subquery()
    layout: dict[str, FactorColumn] = {}
    names = [c.name for c in feature_select(empty, spec, layout=layout).selected_columns][1:]
    keys = [key for key, _, _ in spec.attributes]
    labels = dict(db.session.execute(select(
        CustomerAttributeDefinition.key, CustomerAttributeDefinition.label).where(
        CustomerAttributeDefinition.key.in_(keys))).all()) if keys else {}
    out: dict[str, FactorColumn] = {}
    for name in names:
        found = layout.get(name)
        if found is None:
            out[name] = FactorColumn(name, name)
        elif found.group.startswith("attr:"):
            key = found.group[len("attr:"):]
            out[name] = FactorColumn(found.group, labels.get(key) or key, found.role,
                                     found.value, found.other)
        else:
            out[name] = found
    return out


def feature_chunks(spec: FeatureSpec, chunk_size: int = DEFAULT_CHUNK,
                   only: Sequence[int] | None = None, share: float = 1.0
                   ) -> Iterator[FeatureChunk]:
    """The feature matrix of every customer existing by ``spec.as_of`` (or of the
    ``share`` sample of them), chunk by chunk, the next chunk read ahead."""
    jobs = ((None, [feature_select(customers, spec, id_range).order_by(
        customers.c.customer_id)])
        for customers, id_range in customer_chunks(spec.as_of, chunk_size, only, share))
    for _, (table,) in matrices_ahead(jobs):
        if len(table):
            yield FeatureChunk(table[:, 0].astype(np.int64), table[:, 1:])


# --- BTYD summary ------------------------------------------------------------------------------


def btyd_select(customers: FromClause, as_of: dt.datetime, time_unit: TimeUnit,
                base_currency: str, id_range: IdRange | None = None) -> Select[Any]:
    """``customer_id, frequency, recency, T, monetary`` of customers with a purchase in the
    base currency by ``as_of``; monetary is NULL without a repeat purchase day."""
    offset = as_of.astimezone(rapport().settings.tz).utcoffset() or dt.timedelta()
    shift = offset.total_seconds() / 86400.0
    day = _floor(_epoch_days(Interaction.occurred_at) + shift).label("day")
    daily = (select(Interaction.customer_id, day,
                    cast(func.sum(Interaction.amount), Float).label("total"))
             .where(*_in_chunk(Interaction.customer_id, customers, id_range),
                    Interaction.kind == PURCHASE, Interaction.currency == base_currency,
                    Interaction.occurred_at <= as_of)
             .group_by(Interaction.customer_id, day).subquery("churn_purchase_days"))
    ordered = select(daily.c.customer_id, daily.c.day, daily.c.total,
                     func.row_number().over(partition_by=daily.c.customer_id,
                                            order_by=daily.c.day).label("n")
                     ).subquery("churn_purchase_days_ordered")
    as_of_day = int(np.floor(as_of.timestamp() / 86400.0 + shift))
    unit = 7.0 if time_unit == TimeUnit.WEEK else 1.0
    repeats = func.count() - 1
    return (select(
        ordered.c.customer_id,
        repeats.label("frequency"),
        (cast(func.max(ordered.c.day) - func.min(ordered.c.day), Float) / unit).label("recency"),
        (cast(as_of_day - func.min(ordered.c.day), Float) / unit).label("T"),
        (func.sum(case((ordered.c.n > 1, ordered.c.total))) / _MONEY_UNIT
         / func.nullif(repeats, 0)).label("monetary"))
        .group_by(ordered.c.customer_id))


@dataclass
class BtydChunk:
    customer_ids: np.ndarray  # int64
    frequency: np.ndarray     # int64: repeat purchase days
    recency: np.ndarray       # float64, in the time unit
    T: np.ndarray             # float64, in the time unit
    monetary: np.ndarray      # float64; NaN without a repeat day


def _btyd_statement(customers: FromClause, as_of: dt.datetime, time_unit: TimeUnit,
                    currency: str, id_range: IdRange) -> Select[Any]:
    stmt = btyd_select(customers, as_of, time_unit, currency, id_range)
    return stmt.order_by(stmt.selected_columns.customer_id)


def btyd_chunks(as_of: dt.datetime, time_unit: TimeUnit = TimeUnit.DAY,
                chunk_size: int = DEFAULT_CHUNK, only: Sequence[int] | None = None,
                share: float = 1.0) -> Iterator[BtydChunk]:
    """BTYD summaries of the buyers among the customers existing by ``as_of`` (or the
    ``share`` sample of them), chunk by chunk, the next chunk read ahead."""
    currency = rapport().settings.base_currency
    jobs = ((None, [_btyd_statement(customers, as_of, time_unit, currency, id_range)])
            for customers, id_range in customer_chunks(as_of, chunk_size, only, share))
    for _, (table,) in matrices_ahead(jobs):
        if not len(table):
            continue
        table = table.reshape(-1, 5)
        yield BtydChunk(table[:, 0].astype(np.int64), table[:, 1].astype(np.int64),
                        table[:, 2], table[:, 3], table[:, 4])
