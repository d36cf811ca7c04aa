"""Value tiers from RFM (recency, frequency, monetary): the ``segments.tiers`` job.

Over the purchases of a window (``windowDays`` days up to the end of ``asOf`` in
RAPPORT_TIMEZONE), per customer: recency (whole days from the last purchase to the end
of the window), frequency (purchases) and monetary (their spend in the base currency, net
of the window's refunds in it, at least 0).
Among the customers who bought in the window, each measure is scored 1-5 by quintiles
(NTILE(5) in SQL; 5 is the most recent, most frequent, highest spending; customers with
equal values share the lowest score among them), and the sum of the three scores gives
the tier: ``top`` 13-15, ``high`` 10-12, ``medium`` 7-9, ``low`` 3-6. A customer with no
purchase in the window is ``none``; erased customers get no tier.

One INSERT ... SELECT ... ON CONFLICT writes every customer's row (the tier before it
is kept as ``previous_tier``), then one audit entry and one ``segments.value_tiers.updated``
event sum the run up: counts per tier and the customers whose tier changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import (
    CursorResult, Date, Integer, case, extract, func, literal, null, select, union_all,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite

from core.app import rapport
from core.changes import Event, record
from core.dates import end_of_day
from core.db import UTCDateTime, db, utcnow
from core.ids import global_id
from core.jobs import JobKind, Progress
from core.models import Customer, CustomerStatus, Interaction
from core.money import quantize
from core.schemas import Day
from core.services import transaction

from plugins.segments.models import Tier, ValueTier

DEFAULT_WINDOW_DAYS = 365
#: At most this many changed customers are named in a run's event and audit entry.
CHANGED_LIMIT = 1000
EVENT_TYPE = "segments.value_tiers.updated"
#: The events of every run concern the same thing: the tiers (ordered per aggregate).
AGGREGATE = "segments.value_tiers"
#: (lowest sum of the R, F and M scores, tier), best first; below the last: LOW.
TIER_RULE = ((13, Tier.TOP), (10, Tier.HIGH), (7, Tier.MEDIUM))


class TiersParameters(Schema):
    class Meta:
        unknown = RAISE

    as_of = Day(data_key="asOf", load_default=None, metadata={
        "description": "the window ends with this day (default: today in RAPPORT_TIMEZONE)"})
    window_days = fields.Integer(data_key="windowDays", load_default=DEFAULT_WINDOW_DAYS,
                                 validate=validate.Range(1, 36_500))


@dataclass(frozen=True)
class TierRun:
    as_of: dt.date
    window_days: int
    customers: int
    counts: dict[str, int]
    changed: int
    #: The first ``CHANGED_LIMIT`` changed customers (by id).
    changed_ids: list[int]

    def to_json(self) -> dict[str, Any]:
        return {"asOf": self.as_of.isoformat(), "windowDays": self.window_days,
                "customers": self.customers, "tiers": self.counts,
                "changed": self.changed,
                "changedCustomerIds": [global_id("Customer", i) for i in self.changed_ids],
                "changedTruncated": self.changed > len(self.changed_ids)}


def _days_between(later: Any, earlier: Any) -> Any:
    """Whole days from ``earlier`` to ``later`` (a later-or-equal moment), in SQL."""
    if db.session.get_bind().dialect.name == "postgresql":
        return sql_cast(func.floor(extract("epoch", later - earlier) / 86400), Integer)
    seconds = (sql_cast(func.strftime("%s", later), Integer)
               - sql_cast(func.strftime("%s", earlier), Integer))
    return seconds // 86400


def _insert(dialect: str) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(ValueTier)


def compute_tiers(as_of: dt.date | None = None, window_days: int = DEFAULT_WINDOW_DAYS,
                  on_progress: Callable[[float, str], None] | None = None,
                  customer_ids: Sequence[int] | None = None) -> TierRun:
    """Score every customer and store their tier (one transaction); see the module.

    ``customer_ids``: score only these, ranked among themselves (``rapport demo`` scores
    each chunk it adds; the nightly run ranks everyone).
    """
    settings = rapport().settings
    day = as_of or dt.datetime.now(settings.tz).date()
    end = end_of_day(day, settings.tz, "asOf")
    start = end - dt.timedelta(days=window_days)
    now = utcnow()
    report = on_progress or (lambda fraction, message: None)
    report(0.0, "scoring customers")

    def among(column: Any) -> list[Any]:
        return [] if customer_ids is None else [column.in_(list(customer_ids))]

    base = settings.base_currency
    in_window = (Interaction.kind.in_(("purchase", "refund")), Interaction.occurred_at >= start,
                 Interaction.occurred_at < end)
    eligible = select(Customer.id).where(Customer.status != CustomerStatus.ERASED,
                                         *among(Customer.id))
    bought = Interaction.kind == "purchase"
    in_base = Interaction.currency == base
    # Spend net of the refunds of the window (in the base currency), never below 0;
    # recency and frequency count purchases only. Amounts are stored as integer units.
    net = (func.coalesce(func.sum(case((bought & in_base, Interaction.amount))), 0)
           - func.coalesce(func.sum(case(((Interaction.kind == "refund") & in_base,
                                           Interaction.amount))), 0))
    purchases = select(
        Interaction.customer_id.label("customer_id"),
        func.max(case((bought, Interaction.occurred_at))).label("last_at"),
        func.count(case((bought, Interaction.id))).label("frequency"),
        case((net > 0, net), else_=0).label("monetary"),
    ).where(*in_window, *among(Interaction.customer_id),
            Interaction.customer_id.in_(eligible)).group_by(
        Interaction.customer_id).having(func.count(case((bought, Interaction.id))) > 0
                                        ).subquery()
    p = purchases.c
    ranked = select(
        p.customer_id, p.last_at, p.frequency, p.monetary,
        func.ntile(5).over(order_by=(p.last_at, p.customer_id)).label("r"),
        func.ntile(5).over(order_by=(p.frequency, p.customer_id)).label("f"),
        func.ntile(5).over(order_by=(p.monetary, p.customer_id)).label("m"),
    ).subquery("ranked")
    q = ranked.c
    # Equal measures share the lowest score of their group: NTILE alone would spread
    # customers with the same purchases over several scores (and tiers) by their ids.
    scored = select(
        q.customer_id, q.last_at, q.frequency, q.monetary,
        func.min(q.r).over(partition_by=q.last_at).label("r"),
        func.min(q.f).over(partition_by=q.frequency).label("f"),
        func.min(q.m).over(partition_by=q.monetary).label("m"),
    ).cte("scored")
    s = scored.c
    total = s.r + s.f + s.m
    tier = case(*((total >= low, name.value) for low, name in TIER_RULE),
                else_=Tier.LOW.value)
    run_columns = (literal(window_days, Integer()), literal(day, Date()),
                   literal(now, UTCDateTime()))
    # Buyers, then everyone else: a UNION with NOT IN (a hashed look-up on both databases),
    # not a LEFT JOIN (SQLite scans the materialised ranking once per customer) nor NOT
    # EXISTS (PostgreSQL, before statistics exist, picks a nested-loop anti-join).
    buyers = select(s.customer_id, tier, _days_between(literal(end, UTCDateTime()), s.last_at),
                    s.frequency, s.monetary, s.r, s.f, s.m, *run_columns)
    others = select(Customer.id, literal(Tier.NONE.value), null(), literal(0), literal(0),
                    null(), null(), null(), *run_columns).where(
        Customer.status != CustomerStatus.ERASED, *among(Customer.id),
        Customer.id.not_in(select(s.customer_id)))
    rows = union_all(buyers, others)
    table = ValueTier.__table__
    columns = ["customer_id", "tier", "recency_days", "frequency", "monetary", "r_score",
               "f_score", "m_score", "window_days", "as_of", "computed_at"]

    with transaction():
        dialect = db.session.get_bind().dialect.name
        statement = _insert(dialect).from_select(columns, rows)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.customer_id],
            set_={"previous_tier": table.c.tier,
                  **{name: statement.excluded[name] for name in columns[1:]}})
        db.session.execute(statement)
        # Rows of customers erased since the last run (merged ones went with the customer).
        db.session.execute(table.delete().where(table.c.customer_id.in_(
            select(Customer.id).where(Customer.status == CustomerStatus.ERASED))))
        report(0.8, "summing up")
        counts = {t.value: 0 for t in Tier}
        counts.update({name: count for name, count in db.session.execute(
            select(table.c.tier, func.count()).where(*among(table.c.customer_id))
            .group_by(table.c.tier))})
        changed_rows = [table.c.tier.is_distinct_from(table.c.previous_tier),
                        *among(table.c.customer_id)]
        changed = db.session.scalar(select(func.count()).select_from(table).where(
            *changed_rows)) or 0
        changed_ids = list(db.session.scalars(select(table.c.customer_id).where(
            *changed_rows).order_by(table.c.customer_id).limit(CHANGED_LIMIT)))
        run = TierRun(day, window_days, sum(counts.values()), counts, changed, changed_ids)
        summary = run.to_json()
        record("segments.tiers", summary["changedCustomerIds"],
               events=[Event(EVENT_TYPE, AGGREGATE, summary)])
    report(1.0, f"{run.customers} customers scored, {run.changed} changed tier")
    return run


def tiers_job(parameters: dict[str, Any], progress: Progress) -> dict[str, Any]:
    return compute_tiers(parameters.get("as_of"), parameters["window_days"],
                         on_progress=progress).to_json()


JOB_KINDS = [
    JobKind("segments.tiers", TiersParameters, "segments", tiers_job,
            "Score every customer's recency, frequency and spend (RFM) over a window and "
            "store their value tier."),
]


# --- A customer's own data: export and erasure ----------------------------------------------


def export_section(customer_id: int) -> dict[str, Any] | None:
    """The customer's value tier for their data export (None before the first run)."""
    row = db.session.get(ValueTier, customer_id)
    if row is None:
        return None
    return {"valueTier": {
        "tier": row.tier, "recencyDays": row.recency_days, "frequency": row.frequency,
        "monetary": str(quantize(row.monetary, rapport().settings.base_currency)),
        "currency": rapport().settings.base_currency, "rScore": row.r_score,
        "fScore": row.f_score, "mScore": row.m_score, "asOf": row.as_of.isoformat(),
        "windowDays": row.window_days, "computedAt": row.computed_at.isoformat()}}


def erase(customer_id: int) -> dict[str, Any] | None:
    """Remove the erased customer's value tier (a profile of them, not an accounting fact:
    the purchases it came from stay with core)."""
    result = cast(CursorResult[Any], db.session.execute(ValueTier.__table__.delete().where(
        ValueTier.customer_id == customer_id)))
    removed = result.rowcount
    return {"valueTierRemoved": True} if removed else None
