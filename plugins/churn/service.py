"""Churn operations: mark customers churned (one or a batch), reactivate them, win-back
campaigns and attempts; merge, erase, export. Plain functions, one transaction each (or
the caller's, for the ``*_in_transaction`` helpers the hooks use): the GraphQL mutations,
the CSV importer and the CLI call them.

The customer's lifecycle status is core's: it is changed only through
``core.services.customers.change_customer_statuses``, in the same transaction as the
churn record, so the record and the status never disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import (
    ARRAY, BigInteger, ColumnElement, and_, any_, case, delete, func, insert, literal, not_, or_,
    select, update,
)
from sqlalchemy.exc import IntegrityError

from core import changes as audit
from core.app import rapport
from core.db import db, utcnow
from core.errors import ErrorCode, FieldError, UserError, errors_from_marshmallow
from core.ids import global_id, shown_id
from core.models import Agent, Customer, CustomerStatus, Interaction
from core.schemas import FUTURE_TOLERANCE
from core.services import load, not_found, transaction
from core.services.customers import change_customer_statuses
from core.services.interactions import BatchRejected, BatchResult

from plugins.churn import report
from plugins.churn.errors import ChurnErrorCode
from plugins.churn.models import (
    ChurnReason, ChurnRecord, ChurnScore, ChurnType, WinbackAttempt, WinbackCampaign,
    WinbackOutcome, WinbackStrategy,
)
from plugins.churn.schemas import (
    AttemptSchema, CampaignSchema, MarkChurnedSchema, PeriodSchema, ReactivateSchema,
    ResolveAttemptSchema,
)

MAX_BATCH = 1000
PURCHASE = "purchase"
REASON_PURCHASE = "purchase"
REASON_MANUAL = "reactivated by hand"
WON_BACK_REASON = "won back by campaign {}"

_TYPES = {t.value for t in ChurnType}
_REASONS = {r.value for r in ChurnReason}


# --- Facts about customers, read once per batch -------------------------------------------


@dataclass(frozen=True)
class CustomerFacts:
    status: CustomerStatus
    #: The earlier of its creation and its first interaction: an imported customer existed
    #: from its first recorded purchase, even if the row was created later.
    existed_since: dt.datetime
    open_record: ChurnRecord | None
    #: The latest reactivation of its closed records: a new departure is not dated before
    #: it (the new record would overlap an episode already recorded, or cover it whole).
    back_since: dt.datetime | None = None


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def customer_facts(customer_ids: Collection[int], *, lock: bool = False
                   ) -> dict[int, CustomerFacts]:
    """Status, existence date, open churn record and latest reactivation of each customer,
    in four queries."""
    if not customer_ids:
        return {}
    ids = set(customer_ids)
    stmt = select(Customer.id, Customer.status, Customer.created_at,
                  Customer.customer_since).where(Customer.id.in_(ids))
    if lock:  # in id order: two batches sharing customers cannot deadlock
        stmt = stmt.order_by(Customer.id).with_for_update()
    customers = db.session.execute(stmt).all()
    first = dict(db.session.execute(
        select(Interaction.customer_id, func.min(Interaction.occurred_at))
        .where(Interaction.customer_id.in_(ids)).group_by(Interaction.customer_id)).all())
    open_records = {r.customer_id: r for r in db.session.scalars(select(ChurnRecord).where(
        ChurnRecord.customer_id.in_(ids), ChurnRecord.reactivated_at.is_(None)))}
    departed = dict(db.session.execute(
        select(ChurnRecord.customer_id, func.max(ChurnRecord.reactivated_at))
        .where(ChurnRecord.customer_id.in_(ids), ChurnRecord.reactivated_at.is_not(None))
        .group_by(ChurnRecord.customer_id)).all())
    facts: dict[int, CustomerFacts] = {}
    tz = rapport().settings.tz
    for customer_id, status, created_at, customer_since in customers:
        since = created_at
        earliest = _aware(first.get(customer_id))
        if earliest is not None:
            since = min(since, earliest)
        if customer_since is not None:
            # Its own start date: 00:00 of that day in the business time zone.
            since = min(since, dt.datetime.combine(customer_since, dt.time(), tz))
        facts[customer_id] = CustomerFacts(status, since, open_records.get(customer_id),
                                           _aware(departed.get(customer_id)))
    return facts


def check_customer_since(customer_id: int, since: dt.date | None) -> None:
    """Refuse a start date (``customerSince``: 00:00 of that day in RAPPORT_TIMEZONE) after
    the customer's first churn date: it cannot leave before it started. Raised as a typed
    error on ``customerSince`` by the ``rapport_customer_updated`` hook, inside the update's
    transaction (so nothing is written)."""
    if since is None:
        return
    first = _aware(db.session.scalar(select(func.min(ChurnRecord.churned_at)).where(
        ChurnRecord.customer_id == customer_id)))
    start = dt.datetime.combine(since, dt.time(), rapport().settings.tz)
    if first is not None and start > first:
        day = first.astimezone(rapport().settings.tz).date()
        raise UserError.single(
            f"The customer's start date {since.isoformat()} is after its churn date "
            f"{day.isoformat()}: a customer cannot leave before it started. Give "
            f"{day.isoformat()} or earlier, or correct the churn record first.",
            ErrorCode.INVALID, "customerSince")


# --- Marking churned -----------------------------------------------------------------------


def _vocabulary_errors(data: Mapping[str, Any]) -> list[FieldError]:
    errors = []
    if data["type"] not in _TYPES:
        errors.append(FieldError(
            f"Unknown churn type {data['type']!r}; use one of "
            f"{', '.join(sorted(t.upper() for t in _TYPES))}.",
            ChurnErrorCode.UNKNOWN_TYPE, "type"))
    if data["reason"] not in _REASONS:
        errors.append(FieldError(
            f"Unknown churn reason {data['reason']!r}; use one of "
            f"{', '.join(sorted(r.upper() for r in _REASONS))}.",
            ChurnErrorCode.UNKNOWN_REASON, "reason"))
    return errors


def _mark_errors(data: Mapping[str, Any], facts: CustomerFacts | None, now: dt.datetime
                 ) -> list[FieldError]:
    if facts is None:
        return [FieldError(f"No customer with id {shown_id('Customer', data['customer_id'])}.",
                           ErrorCode.NOT_FOUND,
                           "customerId")]
    if facts.status == CustomerStatus.ERASED:
        return [FieldError("The customer is erased; it cannot be marked churned.",
                           ChurnErrorCode.CUSTOMER_ERASED, "customerId")]
    if facts.open_record is not None or facts.status == CustomerStatus.CHURNED:
        since = (f" since {facts.open_record.churned_at:%Y-%m-%d}"
                 if facts.open_record is not None else "")
        return [FieldError(f"The customer is already churned{since}; reactivate it first.",
                           ChurnErrorCode.ALREADY_CHURNED, "customerId")]
    churned_at = data["churned_at"]
    if churned_at > now + FUTURE_TOLERANCE:
        return [FieldError("The churn date is in the future.", ChurnErrorCode.IN_THE_FUTURE,
                           "churnedAt")]
    if churned_at < facts.existed_since:
        return [FieldError(
            f"The churn date is before the customer existed "
            f"({facts.existed_since.isoformat()}).",
            ChurnErrorCode.BEFORE_CUSTOMER_EXISTED, "churnedAt")]
    if facts.back_since is not None and churned_at < facts.back_since:
        return [FieldError(
            f"The customer's last churn record runs until {facts.back_since.isoformat()} "
            f"(its reactivation); a new departure is dated from then on.",
            ErrorCode.INVALID, "churnedAt")]
    return []


def mark_churned(raw: Mapping[str, Any], *, actor_id: int | None = None,
                 now: dt.datetime | None = None) -> ChurnRecord:
    """Record that a customer left (type, reason, date, note) and set its status."""
    try:
        result = mark_customers_churned([raw], actor_id=actor_id, now=now)
    except BatchRejected as exc:  # one item: its errors without the "0." index prefix
        raise UserError([FieldError(e.message, e.code, (e.field or "").partition(".")[2] or None)
                         for e in exc.errors]) from None
    if result.existing_ids:
        return db.session.get(ChurnRecord, result.existing_ids[0])  # type: ignore[return-value]
    return db.session.get(ChurnRecord, result.recorded_ids[0])  # type: ignore[return-value]


def mark_customers_churned(raws: Sequence[Mapping[str, Any]], *, partial: bool = False,
                           actor_id: int | None = None, now: dt.datetime | None = None,
                           rejected: Mapping[int, list[FieldError]] | None = None,
                           check_jumps: bool = True, imported: bool = False) -> BatchResult:
    """Mark a batch churned in one transaction, with set-based checks.

    An item naming a customer that already has a record with the same ``churned_at`` is
    skipped (``existing_ids``: a re-run of an import). With ``partial=False`` any invalid
    item rejects the whole batch (``BatchRejected``, nothing written); with
    ``partial=True`` the valid items are recorded and the others reported by index.
    After the marks the monthly churn rate of their months is checked for a jump
    (``report``); an importer passes ``check_jumps=False`` and checks once at the end,
    and ``imported=True``: one summarising event for the batch instead of one per mark.
    """
    if len(raws) > MAX_BATCH:
        raise UserError.single(f"At most {MAX_BATCH} items per call; split the batch.",
                               ErrorCode.TOO_MANY)
    now = now or utcnow()
    schema = MarkChurnedSchema()
    result = BatchResult(rejected=dict(rejected or {}))
    valid: list[tuple[int, dict[str, Any]]] = []
    for index, raw in enumerate(raws):
        if index in result.rejected:
            continue
        try:
            data = dict(schema.load(raw))
        except ValidationError as exc:
            result.rejected[index] = errors_from_marshmallow(exc)
            continue
        problems = _vocabulary_errors(data)
        if problems:
            result.rejected[index] = problems
            continue
        data["churned_at"] = data.get("churned_at") or now
        valid.append((index, data))

    with transaction():
        if actor_id is not None and db.session.get(Agent, actor_id) is None:
            actor_id = None
        facts = customer_facts({d["customer_id"] for _, d in valid}, lock=True)
        known = {(r.customer_id, r.churned_at): r.id for r in db.session.scalars(
            select(ChurnRecord).where(ChurnRecord.customer_id.in_(
                {d["customer_id"] for _, d in valid})))} if valid else {}
        fresh: list[tuple[int, dict[str, Any]]] = []
        seen: dict[int, int] = {}
        #: A repeated item (the same customer, date, type, reason and note as an earlier
        #: fresh one of the batch: a row twice in a file) gets that item's record, as a
        #: re-run would; another mark of the same customer is ALREADY_CHURNED.
        twins: dict[int, int] = {}
        items = dict(valid)
        for index, data in valid:
            key = (data["customer_id"], data["churned_at"])
            if key in known:
                result.existing_ids[index] = known[key]
                continue
            first = seen.get(data["customer_id"])
            if first is not None and items[first] == data:
                twins[index] = first
                continue
            if data["customer_id"] in seen:
                result.rejected[index] = [FieldError(
                    f"Item {seen[data['customer_id']]} of this batch already marks this "
                    f"customer churned.", ChurnErrorCode.ALREADY_CHURNED, "customerId")]
                continue
            problems = _mark_errors(data, facts.get(data["customer_id"]), now)
            if problems:
                result.rejected[index] = problems
                continue
            seen[data["customer_id"]] = index
            fresh.append((index, data))
        result.errors = [e.prefixed(str(index)) for index in sorted(result.rejected)
                         for e in result.rejected[index]]
        if result.rejected and not partial:
            raise BatchRejected(result)
        if fresh:
            # One INSERT for the batch (an ORM flush wrote one statement per row on
            # SQLite), then the new records read back: each customer of ``fresh`` had no
            # open record (checked above, its row locked), so its open record is the new one.
            db.session.execute(insert(ChurnRecord), [
                {"customer_id": d["customer_id"], "type": ChurnType(d["type"]),
                 "reason": ChurnReason(d["reason"]), "churned_at": d["churned_at"],
                 "note": d.get("note"), "recorded_by_id": actor_id, "recorded_at": now}
                for _, d in fresh])
            opened = {r.customer_id: r for r in db.session.scalars(select(ChurnRecord).where(
                ChurnRecord.customer_id.in_([d["customer_id"] for _, d in fresh]),
                ChurnRecord.reactivated_at.is_(None)))}
            records = [opened[d["customer_id"]] for _, d in fresh]
            result.recorded_ids = {index: r.id for (index, _), r in zip(fresh, records)}
            result.existing_ids.update({index: result.recorded_ids[first]
                                        for index, first in twins.items()})
            change_customer_statuses([d["customer_id"] for _, d in fresh],
                                     CustomerStatus.CHURNED)
            _record_marks(records, imported)
            # A back-dated mark: a purchase already recorded after the churn date closes
            # the record at once, as that purchase would have if recorded after the mark.
            _reactivate_records_after_purchases([r.id for r in records])
            if check_jumps:
                report.check_churn_jumps({d["churned_at"] for _, d in fresh}, now=now)
    return result


def _record_marks(records: Sequence[ChurnRecord], imported: bool) -> None:
    """One audit entry for the batch; one event per customer marked, or one for an
    imported batch (counts and the first and last new records)."""
    events = []
    for record in records:
        customer, gid = global_id("Customer", record.customer_id), global_id(
            "ChurnRecord", record.id)
        events.append(audit.Event("churn.customer.marked", customer, {
            "customerId": customer, "churnRecordId": gid, "type": record.type.value,
            "reason": record.reason.value, "churnedAt": record.churned_at}))
    if imported:
        first, last = (global_id("ChurnRecord", r.id) for r in (records[0], records[-1]))
        events = [audit.Event("churn.customers.imported", first, {
            "recorded": len(records), "firstId": first, "lastId": last})]
    audit.record(None, [] if imported else [e.aggregate_id for e in events],
                 {"status": [CustomerStatus.ACTIVE, CustomerStatus.CHURNED],
                  "marked": [None, len(records)]}, events)


# --- Reactivation --------------------------------------------------------------------------


def reactivate_customer(raw: Mapping[str, Any], *, now: dt.datetime | None = None
                        ) -> ChurnRecord:
    """Close the customer's open churn record and make it active again; its pending
    win-back attempts count as won back."""
    data = load(ReactivateSchema(), raw)
    now = now or utcnow()
    with transaction():
        record = _open_record(data["customer_id"],
                              "The customer is not churned; there is nothing to reactivate.")
        when = data.get("reactivated_at") or now
        if when > now + FUTURE_TOLERANCE:
            raise UserError.single("The reactivation date is in the future.",
                                   ChurnErrorCode.IN_THE_FUTURE, "reactivatedAt")
        if when < record.churned_at:
            raise UserError.single(
                f"The reactivation date is before the churn date "
                f"({record.churned_at.isoformat()}).", ErrorCode.INVALID, "reactivatedAt")
        reactivate_in_transaction({record.customer_id: when}, data.get("reason") or REASON_MANUAL)
    db.session.refresh(record)
    return record


def _open_record(customer_id: int, not_churned: str) -> ChurnRecord:
    """The customer's open churn record (row locked), or the error a person can act on."""
    facts = customer_facts([customer_id], lock=True).get(customer_id)
    if facts is None:
        raise not_found("customer", customer_id, "customerId", type_name="Customer")
    if facts.status == CustomerStatus.ERASED:
        raise UserError.single("The customer is erased.", ChurnErrorCode.CUSTOMER_ERASED,
                               "customerId")
    if facts.open_record is None:
        raise UserError.single(not_churned, ChurnErrorCode.NOT_CHURNED, "customerId")
    return facts.open_record


def reactivate_in_transaction(when_by_customer: Mapping[int, dt.datetime], reason: str
                              ) -> list[int]:
    """Close the open records of these customers (each at its time), resolve their pending
    attempts as WON_BACK and set them active, in the caller's transaction.

    Set-based: one read of the open records and pending attempts, two bulk UPDATEs by
    primary key, one status change for the batch. Returns the reactivated customer ids.
    """
    if not when_by_customer:
        return []
    records = db.session.execute(select(ChurnRecord.id, ChurnRecord.customer_id,
                                        ChurnRecord.churned_at).where(
        ChurnRecord.customer_id.in_(set(when_by_customer)),
        ChurnRecord.reactivated_at.is_(None))).all()
    if not records:
        return []
    db.session.execute(update(ChurnRecord), [
        {"id": rid, "reactivated_at": max(when_by_customer[cid], churned_at),
         "reactivation_reason": reason[:200]} for rid, cid, churned_at in records])
    customers = [cid for _, cid, _ in records]
    pending = db.session.execute(select(WinbackAttempt.id, WinbackAttempt.customer_id,
                                        WinbackAttempt.attempted_at).where(
        WinbackAttempt.customer_id.in_(customers),
        WinbackAttempt.outcome == WinbackOutcome.PENDING)).all()
    if pending:
        db.session.execute(update(WinbackAttempt), [
            {"id": aid, "outcome": WinbackOutcome.WON_BACK,
             "resolved_at": max(when_by_customer[cid], attempted_at)}
            for aid, cid, attempted_at in pending])
    change_customer_statuses(customers, CustomerStatus.ACTIVE)
    gids = [global_id("Customer", c) for c in customers]
    audit.record(None, gids, {"status": [CustomerStatus.CHURNED, CustomerStatus.ACTIVE],
                              "reactivated": [None, len(customers)]},
                 [audit.Event("customer.updated", gid, {
                     "customerId": gid, "changedFields": ["status"], "status": "active",
                     "reason": reason[:200]}) for gid in gids])
    return customers


def reactivate_on_purchases(interaction_ids: Collection[int]) -> list[int]:
    """Customers with an open churn record who purchased after their churn date come back
    (the earliest such purchase of the batch dates it). One grouped query for the batch."""
    if not interaction_ids:
        return []
    ids = sorted(set(interaction_ids))
    if db.session.get_bind().dialect.name == "postgresql":
        # One array parameter: an import batch's thousands of ids as separate parameters
        # cost more to build and send than the query costs to run.
        return _reactivate_after_purchases(
            Interaction.id == any_(literal(ids, ARRAY(BigInteger))))
    return _reactivate_after_purchases(Interaction.id.in_(ids))


def _reactivate_records_after_purchases(record_ids: Collection[int]) -> list[int]:
    """Close these open records that have a purchase after their churn date, at the first
    such purchase: one statement for the batch.

    The first purchase is a correlated subquery per record, read from the (customer_id,
    occurred_at) index of interactions whatever the table's statistics: a join of the
    records with interactions planned right after a bulk load of interactions, before
    anything analysed them, scanned the whole table (8 s per batch of 500 marks with
    228,000 interactions; issue 14)."""
    if not record_ids:
        return []
    first = (select(func.min(Interaction.occurred_at))
             .where(Interaction.customer_id == ChurnRecord.customer_id,
                    Interaction.kind == PURCHASE,
                    Interaction.occurred_at > ChurnRecord.churned_at)
             .correlate(ChurnRecord).scalar_subquery())
    rows = db.session.execute(
        select(ChurnRecord.customer_id, first.label("back"))
        .where(ChurnRecord.id.in_(list(record_ids)), ChurnRecord.reactivated_at.is_(None))
    ).all()
    return reactivate_in_transaction({cid: when for cid, when in rows if when is not None},
                                     REASON_PURCHASE)


def _reactivate_after_purchases(condition: ColumnElement[bool]) -> list[int]:
    """Close the open records with a purchase (among ``condition``'s interactions or
    records) after their churn date, at the earliest such purchase."""
    rows = db.session.execute(
        select(Interaction.customer_id, func.min(Interaction.occurred_at))
        .join(ChurnRecord, and_(ChurnRecord.customer_id == Interaction.customer_id,
                                ChurnRecord.reactivated_at.is_(None),
                                Interaction.occurred_at > ChurnRecord.churned_at))
        .where(condition, Interaction.kind == PURCHASE)
        .group_by(Interaction.customer_id)).all()
    return reactivate_in_transaction({cid: when for cid, when in rows}, REASON_PURCHASE)


# --- Win-back ------------------------------------------------------------------------------


def create_campaign(raw: Mapping[str, Any], *, now: dt.datetime | None = None
                    ) -> WinbackCampaign:
    data = load(CampaignSchema(), raw)
    with transaction():
        if db.session.scalar(select(WinbackCampaign.id).where(
                WinbackCampaign.name == data["name"])) is not None:
            raise UserError.single(f"A win-back campaign named {data['name']!r} exists.",
                                   ErrorCode.UNIQUE, "name")
        campaign = WinbackCampaign(
            name=data["name"], strategy=data["strategy"], description=data.get("description"),
            started_at=data.get("started_at") or now or utcnow(), ended_at=data.get("ended_at"))
        if campaign.ended_at is not None and campaign.ended_at < campaign.started_at:
            raise UserError.single("A campaign cannot end before it starts.", ErrorCode.INVALID,
                                   "endedAt")
        db.session.add(campaign)
        try:
            db.session.flush()
        except IntegrityError:  # a concurrent request took the name since the check
            raise UserError.single(f"A win-back campaign named {data['name']!r} exists.",
                                   ErrorCode.UNIQUE, "name") from None
    return campaign


def record_attempt(raw: Mapping[str, Any], *, actor_id: int | None = None,
                   now: dt.datetime | None = None) -> WinbackAttempt:
    """An attempt to win a churned customer back within a campaign (PENDING by default;
    an outcome known at once may be given). WON_BACK reactivates the customer."""
    data = load(AttemptSchema(), raw)
    now = now or utcnow()
    with transaction():
        campaign = db.session.get(WinbackCampaign, data["campaign_id"])
        if campaign is None:
            raise not_found("win-back campaign", data["campaign_id"], "campaignId",
                            type_name="WinbackCampaign")
        _open_record(data["customer_id"],
                     "Only a churned customer can be won back; mark it churned first.")
        attempted_at = data.get("attempted_at") or now
        _check_attempt_time(campaign, attempted_at, now)
        outcome = data["outcome"]
        resolved_at = None
        if outcome != WinbackOutcome.PENDING:
            resolved_at = data.get("resolved_at") or attempted_at
            _check_resolution_time(resolved_at, attempted_at, now)
        attempt = WinbackAttempt(campaign_id=campaign.id, customer_id=data["customer_id"],
                                 agent_id=_known_agent(actor_id), outcome=WinbackOutcome.PENDING,
                                 note=data.get("note"), attempted_at=attempted_at)
        db.session.add(attempt)
        db.session.flush()
        if outcome != WinbackOutcome.PENDING:
            _resolve(attempt, outcome, resolved_at, campaign)  # type: ignore[arg-type]
    return attempt


def resolve_attempt(raw: Mapping[str, Any], *, now: dt.datetime | None = None
                    ) -> WinbackAttempt:
    """Set a pending attempt's outcome: WON_BACK (reactivates the customer) or LOST."""
    data = load(ResolveAttemptSchema(), raw)
    now = now or utcnow()
    with transaction():
        attempt = db.session.scalar(select(WinbackAttempt).where(
            WinbackAttempt.id == data["id"]).with_for_update())
        if attempt is None:
            raise not_found("win-back attempt", data["id"], type_name="WinbackAttempt")
        if attempt.outcome != WinbackOutcome.PENDING:
            raise UserError.single(
                f"The attempt is already resolved ({attempt.outcome.value.upper()}).",
                ChurnErrorCode.ALREADY_RESOLVED, "id")
        if data["outcome"] == WinbackOutcome.PENDING:
            raise UserError.single("Resolve an attempt as WON_BACK or LOST.", ErrorCode.INVALID,
                                   "outcome")
        resolved_at = data.get("resolved_at") or now
        _check_resolution_time(resolved_at, attempt.attempted_at, now)
        if data.get("note"):
            attempt.note = data["note"]
        _resolve(attempt, data["outcome"], resolved_at,
                 db.session.get(WinbackCampaign, attempt.campaign_id))
    return attempt


def _known_agent(agent_id: int | None) -> int | None:
    if agent_id is None or db.session.get(Agent, agent_id) is None:
        return None
    return agent_id


def _check_attempt_time(campaign: WinbackCampaign, attempted_at: dt.datetime,
                        now: dt.datetime) -> None:
    if attempted_at > now + FUTURE_TOLERANCE:
        raise UserError.single("The attempt date is in the future.",
                               ChurnErrorCode.IN_THE_FUTURE, "attemptedAt")
    if attempted_at < campaign.started_at:
        raise UserError.single(f"The campaign started on {campaign.started_at:%Y-%m-%d}, "
                               f"after this attempt.", ErrorCode.INVALID, "attemptedAt")
    if campaign.ended_at is not None and attempted_at > campaign.ended_at:
        raise UserError.single(f"The campaign ended on {campaign.ended_at:%Y-%m-%d}.",
                               ChurnErrorCode.CAMPAIGN_ENDED, "attemptedAt")


def _check_resolution_time(resolved_at: dt.datetime, attempted_at: dt.datetime,
                           now: dt.datetime) -> None:
    if resolved_at > now + FUTURE_TOLERANCE:
        raise UserError.single("The resolution date is in the future.",
                               ChurnErrorCode.IN_THE_FUTURE, "resolvedAt")
    if resolved_at < attempted_at:
        raise UserError.single("The resolution date is before the attempt.",
                               ErrorCode.INVALID, "resolvedAt")


def _resolve(attempt: WinbackAttempt, outcome: WinbackOutcome, resolved_at: dt.datetime,
             campaign: WinbackCampaign | None) -> None:
    attempt.outcome = outcome
    attempt.resolved_at = resolved_at
    db.session.flush()
    if outcome == WinbackOutcome.WON_BACK:
        name = campaign.name if campaign is not None else attempt.campaign_id
        reactivate_in_transaction({attempt.customer_id: resolved_at},
                                  WON_BACK_REASON.format(name))


@dataclass
class StrategyStats:
    strategy: str
    attempts: int = 0
    won_back: int = 0
    lost: int = 0
    pending: int = 0

    @property
    def resolved(self) -> int:
        return self.won_back + self.lost

    @property
    def win_rate(self) -> float | None:
        """Won back / resolved attempts: pending ones are not yet a success or a failure."""
        return self.won_back / self.resolved if self.resolved else None

    @property
    def win_rate_of_all(self) -> float | None:
        """Won back / every attempt of the period (pending counted as not won)."""
        return self.won_back / self.attempts if self.attempts else None


@dataclass
class WinbackStatistics:
    period_from: dt.date
    period_to: dt.date
    strategies: list[StrategyStats] = field(default_factory=list)
    total: StrategyStats = field(default_factory=lambda: StrategyStats("total"))


def winback_stats(raw: Mapping[str, Any]) -> WinbackStatistics:
    """Attempts made from..to (whole days, RAPPORT_TIMEZONE) by strategy and outcome, in
    one GROUP BY; every strategy is listed, with zeros when it was not tried."""
    data = load(PeriodSchema(), raw)
    start, end = report.day_bounds(data["period_from"], data["period_to"])
    rows = db.session.execute(
        select(WinbackCampaign.strategy, WinbackAttempt.outcome, func.count())
        .join(WinbackCampaign, WinbackCampaign.id == WinbackAttempt.campaign_id)
        .where(WinbackAttempt.attempted_at >= start, WinbackAttempt.attempted_at < end)
        .group_by(WinbackCampaign.strategy, WinbackAttempt.outcome)).all()
    by_strategy = {s: StrategyStats(s.value) for s in WinbackStrategy}
    stats = WinbackStatistics(data["period_from"], data["period_to"],
                              list(by_strategy.values()))
    for strategy, outcome, count in rows:
        for target in (by_strategy[strategy], stats.total):
            target.attempts += count
            if outcome == WinbackOutcome.WON_BACK:
                target.won_back += count
            elif outcome == WinbackOutcome.LOST:
                target.lost += count
            else:
                target.pending += count
    return stats


# --- Customer lifecycle hooks ------------------------------------------------------------

MERGE_REASON = "merged into customer {}"


def merge_churn_data(survivor_id: int, merged_ids: Sequence[int]) -> None:
    """Re-key records, attempts and scores of the merged customers to the survivor.

    The survivor keeps its own status (core's rule), so open records of the merged
    customers are closed at the merge ("merged into customer N") before they
    move: one open record per customer stays true; a merged customer's purchase after the
    survivor's churn date reactivates the survivor. A merged customer's score is dropped
    where the survivor has one for the same model version (the next scoring run
    recomputes it on the merged history), and re-keyed otherwise.
    """
    now = utcnow()
    db.session.execute(update(ChurnRecord).where(
        ChurnRecord.customer_id.in_(merged_ids), ChurnRecord.reactivated_at.is_(None))
        .values(reactivated_at=case((ChurnRecord.churned_at > now, ChurnRecord.churned_at),
                                    else_=now),
                reactivation_reason=MERGE_REASON.format(
                    global_id("Customer", survivor_id))))
    db.session.execute(update(ChurnRecord).where(ChurnRecord.customer_id.in_(merged_ids))
                       .values(customer_id=survivor_id))
    # Core has moved the merged customers' interactions already: a purchase of theirs
    # after the survivor's churn date brings the survivor back, as if recorded on it.
    _reactivate_after_purchases(Interaction.customer_id == survivor_id)
    db.session.execute(update(WinbackAttempt).where(WinbackAttempt.customer_id.in_(merged_ids))
                       .values(customer_id=survivor_id))
    survivor_versions = select(ChurnScore.model_version_id).where(
        ChurnScore.customer_id == survivor_id).scalar_subquery()
    db.session.execute(delete(ChurnScore).where(
        ChurnScore.customer_id.in_(merged_ids),
        ChurnScore.model_version_id.in_(survivor_versions)))
    # Two merged customers may still share a version: keep the newest score of each.
    kept = (select(func.max(ChurnScore.id)).where(ChurnScore.customer_id.in_(merged_ids))
            .group_by(ChurnScore.model_version_id).scalar_subquery())
    db.session.execute(delete(ChurnScore).where(ChurnScore.customer_id.in_(merged_ids),
                                                ChurnScore.id.not_in(kept)))
    db.session.execute(update(ChurnScore).where(ChurnScore.customer_id.in_(merged_ids))
                       .values(customer_id=survivor_id))


def erase_personal_data(customer_id: int) -> dict[str, Any] | None:
    """Churn records and attempts stay on the anonymous customer (the monthly report and
    win-back rates do not change) without their free-text notes; scores are removed.

    A reactivation reason given by a person (``reactivateCustomer``'s free text) is
    replaced by the generic one; the reasons Rapport writes itself stay."""
    db.session.execute(update(ChurnRecord).where(
        ChurnRecord.customer_id == customer_id, ChurnRecord.reactivation_reason.is_not(None),
        not_(or_(ChurnRecord.reactivation_reason == REASON_PURCHASE,
                 ChurnRecord.reactivation_reason.startswith(WON_BACK_REASON.format(""),
                                                            autoescape=True),
                 ChurnRecord.reactivation_reason.startswith(MERGE_REASON.format(""),
                                                            autoescape=True))))
        .values(reactivation_reason=REASON_MANUAL))
    records = db.session.execute(update(ChurnRecord).where(
        ChurnRecord.customer_id == customer_id).values(note=None))
    attempts = db.session.execute(update(WinbackAttempt).where(
        WinbackAttempt.customer_id == customer_id).values(note=None))
    scores = db.session.execute(delete(ChurnScore).where(ChurnScore.customer_id == customer_id))
    counts = {"churn_records_kept": records.rowcount,  # type: ignore[attr-defined]
              "winback_attempts_kept": attempts.rowcount,  # type: ignore[attr-defined]
              "scores_removed": scores.rowcount}  # type: ignore[attr-defined]
    return counts if any(counts.values()) else None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_section(customer_id: int) -> dict[str, Any] | None:
    records = db.session.scalars(select(ChurnRecord).where(
        ChurnRecord.customer_id == customer_id).order_by(ChurnRecord.churned_at,
                                                        ChurnRecord.id)).all()
    attempts = db.session.execute(select(WinbackAttempt, WinbackCampaign.name).join(
        WinbackCampaign, WinbackCampaign.id == WinbackAttempt.campaign_id).where(
        WinbackAttempt.customer_id == customer_id).order_by(WinbackAttempt.attempted_at,
                                                           WinbackAttempt.id)).all()
    score = db.session.scalar(select(ChurnScore).where(ChurnScore.customer_id == customer_id)
                              .order_by(ChurnScore.scored_at.desc(), ChurnScore.id.desc())
                              .limit(1))
    if not records and not attempts and score is None:
        return None
    return {
        "churnRecords": [{
            "id": global_id("ChurnRecord", r.id), "type": r.type.value,
            "reason": r.reason.value, "churnedAt": _iso(r.churned_at), "note": r.note,
            "recordedAt": _iso(r.recorded_at), "reactivatedAt": _iso(r.reactivated_at),
            "reactivationReason": r.reactivation_reason} for r in records],
        "winbackAttempts": [{
            "id": global_id("WinbackAttempt", a.id), "campaign": name,
            "outcome": a.outcome.value, "note": a.note,
            "attemptedAt": _iso(a.attempted_at), "resolvedAt": _iso(a.resolved_at)}
            for a, name in attempts],
        "latestScore": None if score is None else {
            "modelVersionId": global_id("ChurnModel", score.model_version_id),
            "scoredAt": _iso(score.scored_at), "risk": score.risk, "pAlive": score.p_alive,
            "clv": score.clv, "topFactors": score.top_factors},
    }


# --- Reads ---------------------------------------------------------------------------------


def records_of(customer_ids: Collection[int]) -> dict[int, list[ChurnRecord]]:
    """Each customer's churn history, newest first (one query)."""
    found: dict[int, list[ChurnRecord]] = {cid: [] for cid in customer_ids}
    for record in db.session.scalars(select(ChurnRecord).where(
            ChurnRecord.customer_id.in_(set(customer_ids)))
            .order_by(ChurnRecord.customer_id, ChurnRecord.churned_at.desc(),
                      ChurnRecord.id.desc())):
        found[record.customer_id].append(record)
    return found
