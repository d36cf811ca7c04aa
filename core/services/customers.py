"""Customers: create, update, find, de-duplicate, merge, erase, export."""

from __future__ import annotations

import datetime as dt
import difflib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import delete, func, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core.app import rapport
from core.db import db, utcnow
from core.errors import ErrorCode, FieldError, UserError, errors_from_marshmallow
from core.models import (
    Agent, Customer, CustomerExternalId, CustomerStatus, CustomerTag, Interaction,
    LifecycleStage,
)
from core.money import quantize
from core.plugins import call_each
from core.schemas import CustomerSchema
from core.services import load, not_found, transaction
from core.services.interactions import BatchResult, external_key_condition

_PROFILE_FIELDS = (
    "name", "email", "phone", "birth_date", "gender", "education", "occupation", "income_band",
    "country", "region", "city", "lifecycle_stage", "owner_id",
)


def normalise_email(email: str | None) -> str | None:
    return email.strip().lower() if email else None


def normalise_phone(phone: str | None) -> str | None:
    if not phone:
        return None
    digits = re.sub(r"\D", "", phone)
    return digits[-10:] if len(digits) >= 6 else None  # ignore country prefixes


def normalise_name(name: str | None) -> str | None:
    if not name:
        return None
    ascii_name = unicodedata.normalize("NFKD", name)
    ascii_name = "".join(c for c in ascii_name if not unicodedata.combining(c))
    return " ".join(ascii_name.lower().split())


def _apply_profile(customer: Customer, data: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    changes: dict[str, tuple[Any, Any]] = {}
    for key in _PROFILE_FIELDS:
        if key in data and getattr(customer, key) != data[key]:
            changes[key] = (getattr(customer, key), data[key])
            setattr(customer, key, data[key])
    if "attributes" in data:
        merged = {**(customer.attributes or {}), **data["attributes"]}
        merged = {k: v for k, v in merged.items() if v is not None}  # null removes a key
        if merged != (customer.attributes or {}):
            changes["attributes"] = (customer.attributes, merged)
            customer.attributes = merged
    customer.email_normalized = normalise_email(customer.email)
    customer.phone_normalized = normalise_phone(customer.phone)
    customer.name_normalized = normalise_name(customer.name)
    return changes


def _check_owner(owner_id: int | None) -> None:
    if owner_id is not None and db.session.get(Agent, owner_id) is None:
        raise UserError.single(f"No agent with id {owner_id}.", ErrorCode.NOT_FOUND, "ownerId")


def _set_tags(customer: Customer, tags: Sequence[str]) -> None:
    db.session.execute(delete(CustomerTag).where(CustomerTag.customer_id == customer.id))
    db.session.add_all(CustomerTag(customer_id=customer.id, tag=t) for t in tags)


def _add_external_id(customer: Customer, source: str, external_id: str) -> None:
    """Attach ``source`` + ``external_id`` to ``customer``, or say who holds it already.

    INSERT ... ON CONFLICT DO NOTHING instead of check-then-insert: when two requests claim
    the same id at once, PostgreSQL makes the second wait for the first and then skip, so
    it gets this UserError rather than a unique-violation crash.
    """
    dialect_insert = pg_insert if db.session.get_bind().dialect.name == "postgresql" \
        else sqlite_insert
    claimed = db.session.scalar(
        dialect_insert(CustomerExternalId)
        .values(customer_id=customer.id, source=source, external_id=external_id)
        .on_conflict_do_nothing(index_elements=["source", "external_id"])
        .returning(CustomerExternalId.customer_id))
    if claimed is not None:
        return
    owner = db.session.scalar(select(CustomerExternalId.customer_id).where(
        CustomerExternalId.source == source, CustomerExternalId.external_id == external_id))
    if owner != customer.id:
        raise UserError.single(
            f"External id {external_id!r} of source {source!r} already belongs to customer "
            f"{owner}.", ErrorCode.UNIQUE, "externalId")


def tags_of(customer_ids: Sequence[int]) -> dict[int, list[str]]:
    rows = db.session.execute(select(CustomerTag.customer_id, CustomerTag.tag).where(
        CustomerTag.customer_id.in_(customer_ids)).order_by(CustomerTag.tag))
    result: dict[int, list[str]] = defaultdict(list)
    for customer_id, tag in rows:
        result[customer_id].append(tag)
    return result


def create_customer(raw: Mapping[str, Any]) -> Customer:
    data = load(CustomerSchema(), raw)
    with transaction():
        _check_owner(data.get("owner_id"))
        customer = Customer(attributes={})
        _apply_profile(customer, data)
        db.session.add(customer)
        db.session.flush()
        if data.get("external_id"):
            _add_external_id(customer, data.get("source") or "default", data["external_id"])
        if data.get("tags"):
            _set_tags(customer, data["tags"])
        db.session.flush()
        rapport().hook.rapport_customer_created(customer=customer)
    return customer


def get_customer(customer_id: int, field: str = "id") -> Customer:
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise not_found("customer", customer_id, field)
    return customer


def customer_ids_by_external_id(keys: Collection[tuple[str, str]]
                                ) -> dict[tuple[str, str], int]:
    """The customer id of each known ``(source, external_id)``, in one query."""
    if not keys:
        return {}
    rows = db.session.execute(select(
        CustomerExternalId.source, CustomerExternalId.external_id,
        CustomerExternalId.customer_id).where(external_key_condition(
            CustomerExternalId.source, CustomerExternalId.external_id, keys)))
    return {(source, external_id): customer_id for source, external_id, customer_id in rows}


def find_by_external_id(source: str, external_id: str) -> Customer | None:
    return db.session.scalar(select(Customer).join(CustomerExternalId).where(
        CustomerExternalId.source == source, CustomerExternalId.external_id == external_id))


def update_customer(customer_id: int, raw: Mapping[str, Any]) -> Customer:
    data = load(CustomerSchema(), raw, partial=True)
    with transaction():
        customer = get_customer(customer_id)
        if customer.status == CustomerStatus.ERASED:
            raise UserError.single("An erased customer cannot be changed.",
                                   ErrorCode.NOT_ALLOWED, "id")
        _check_owner(data.get("owner_id"))
        changes = _apply_profile(customer, data)
        if data.get("external_id"):
            _add_external_id(customer, data.get("source") or "default", data["external_id"])
        if "tags" in data:
            before = tags_of([customer.id]).get(customer.id, [])
            if sorted(before) != sorted(data["tags"]):
                changes["tags"] = (before, data["tags"])
                _set_tags(customer, data["tags"])
        if changes:
            customer.updated_at = utcnow()
        db.session.flush()
        if changes:
            rapport().hook.rapport_customer_updated(customer=customer, changes=changes)
    return customer


def set_customer_status(customer_id: int, status: CustomerStatus) -> Customer:
    """The one way to move a customer between active and churned (erasure has its own)."""
    with transaction():
        get_customer(customer_id)
        change_customer_statuses([customer_id], status)
    return get_customer(customer_id)


def change_customer_statuses(customer_ids: Collection[int], status: CustomerStatus
                             ) -> list[Customer]:
    """``set_customer_status`` for many customers, in the caller's transaction.

    For services that change statuses as part of a larger write (a batch of churn marks,
    a purchase reactivating a churned customer inside ``recordInteractions``), so the whole
    operation commits or rolls back together. Unknown ids are ignored; an erased customer
    is a ``UserError``. Fires ``rapport_customer_updated`` for each customer whose status
    changed, and returns those customers.
    """
    if status == CustomerStatus.ERASED:
        raise ValueError("use erase_customer to erase")
    if not customer_ids:
        return []
    found = db.session.scalars(select(Customer).where(Customer.id.in_(set(customer_ids)))
                               .order_by(Customer.id)).all()
    if any(c.status == CustomerStatus.ERASED for c in found):
        raise UserError.single("An erased customer cannot change status.",
                               ErrorCode.NOT_ALLOWED, "id")
    changed = [c for c in found if c.status != status]
    now = utcnow()
    old = {c.id: c.status for c in changed}
    for customer in changed:
        customer.status = status
        customer.updated_at = now
    db.session.flush()
    for customer in changed:
        rapport().hook.rapport_customer_updated(
            customer=customer, changes={"status": (old[customer.id], status)})
    return changed


# --- bulk import -------------------------------------------------------------------------


def import_customers(raws: Sequence[Mapping[str, Any]]) -> BatchResult:
    """Create a batch of customers in one transaction with set-based SQL (the importer).

    Each item is validated with ``CustomerSchema``, the API's rules, and must carry an
    ``external_id`` (``source`` defaults to ``default``): it is how a re-run recognises
    the customers it already created. Known source + external id pairs are skipped and
    reported in ``existing_ids``; invalid items are reported in ``rejected`` and do not
    stop the valid ones. Fires ``rapport_customers_imported`` once with the new ids.
    """
    result = BatchResult()
    valid = _validated_for_import(raws, result)
    with transaction():
        valid = _without_known_customers(valid, result)
        valid = _with_existing_owners(valid, result)
        if valid:
            ids = _insert_customers([data for _, data in valid])
            result.recorded_ids = {index: new_id for (index, _), new_id in zip(valid, ids)}
            rapport().hook.rapport_customers_imported(customer_ids=ids)
    result.errors = [e.prefixed(str(index)) for index in sorted(result.rejected)
                     for e in result.rejected[index]]
    return result


def _validated_for_import(raws: Sequence[Mapping[str, Any]], result: BatchResult
                          ) -> list[tuple[int, dict[str, Any]]]:
    schema = CustomerSchema()
    valid: list[tuple[int, dict[str, Any]]] = []
    for index, raw in enumerate(raws):
        try:
            data = dict(schema.load(raw))
        except ValidationError as exc:
            result.rejected[index] = errors_from_marshmallow(exc)
            continue
        if not data.get("external_id"):
            result.rejected[index] = [FieldError(
                "An imported customer needs an external id: a re-run recognises it by it.",
                ErrorCode.REQUIRED, "externalId")]
            continue
        data["source"] = data.get("source") or "default"
        valid.append((index, data))
    return valid


def _without_known_customers(valid: list[tuple[int, dict[str, Any]]], result: BatchResult
                             ) -> list[tuple[int, dict[str, Any]]]:
    """Drop items whose source + external id is stored (skipped) or repeated in the batch."""
    stored = customer_ids_by_external_id({(data["source"], data["external_id"])
                                          for _, data in valid})
    first_seen: dict[tuple[str, str], int] = {}
    fresh: list[tuple[int, dict[str, Any]]] = []
    for index, data in valid:
        key = (data["source"], data["external_id"])
        if key in stored:
            result.existing_ids[index] = stored[key]
        elif key in first_seen:
            result.rejected[index] = [FieldError(
                f"Same source and external id as item {first_seen[key]} of this batch.",
                ErrorCode.UNIQUE, "externalId")]
        else:
            first_seen[key] = index
            fresh.append((index, data))
    return fresh


def _with_existing_owners(valid: list[tuple[int, dict[str, Any]]], result: BatchResult
                          ) -> list[tuple[int, dict[str, Any]]]:
    owner_ids = {data["owner_id"] for _, data in valid if data.get("owner_id") is not None}
    known = set(db.session.scalars(select(Agent.id).where(Agent.id.in_(owner_ids)))
                ) if owner_ids else set()
    kept: list[tuple[int, dict[str, Any]]] = []
    for index, data in valid:
        owner = data.get("owner_id")
        if owner is not None and owner not in known:
            result.rejected[index] = [FieldError(f"No agent with id {owner}.",
                                                 ErrorCode.NOT_FOUND, "ownerId")]
        else:
            kept.append((index, data))
    return kept


def _insert_customers(items: Sequence[Mapping[str, Any]]) -> list[int]:
    """Multi-row INSERTs of customers, their external ids and tags; returns the new ids."""
    now = utcnow()
    # A multi-row INSERT needs the same keys in every row: absent fields become NULL.
    rows = [{key: data.get(key) for key in _PROFILE_FIELDS} | {
        "lifecycle_stage": data.get("lifecycle_stage") or LifecycleStage.CUSTOMER,
        "status": CustomerStatus.ACTIVE,
        "attributes": data.get("attributes") or {},
        "email_normalized": normalise_email(data.get("email")),
        "phone_normalized": normalise_phone(data.get("phone")),
        "name_normalized": normalise_name(data.get("name")),
        "created_at": now, "updated_at": now,
    } for data in items]
    # render_nulls: without it the ORM starts another INSERT whenever the next row's set
    # of non-None columns differs (a customer without a phone after one with a phone).
    ids = list(db.session.scalars(
        insert(Customer).returning(Customer.id, sort_by_parameter_order=True), rows,
        execution_options={"render_nulls": True}))
    db.session.execute(insert(CustomerExternalId), [
        {"customer_id": cid, "source": data["source"], "external_id": data["external_id"]}
        for cid, data in zip(ids, items)])
    tags = [{"customer_id": cid, "tag": tag}
            for cid, data in zip(ids, items) for tag in data.get("tags") or ()]
    if tags:
        db.session.execute(insert(CustomerTag), tags)
    return ids


# --- duplicates and merge ----------------------------------------------------------------


@dataclass
class DuplicateGroup:
    customer_ids: list[int]
    reason: str  # "email", "phone" or "name_city"
    score: float


def find_duplicates(limit: int = 50, name_similarity: float = 0.88) -> list[DuplicateGroup]:
    """Suggest groups of customers that are probably the same person.

    Same normalised e-mail or phone are found by SQL GROUP BY on indexed columns; similar
    names are compared only within one city and the same first letter (a blocking key),
    so the cost stays proportional to the block sizes, not to n squared.
    """
    groups: list[DuplicateGroup] = []
    live = Customer.status != CustomerStatus.ERASED
    for column, reason in ((Customer.email_normalized, "email"),
                           (Customer.phone_normalized, "phone")):
        stmt = (select(column).where(column.is_not(None), live).group_by(column)
                .having(func.count() > 1).order_by(column).limit(limit))
        keys = db.session.scalars(stmt).all()
        if keys:
            members: dict[str, list[int]] = defaultdict(list)
            for key, cid in db.session.execute(select(column, Customer.id).where(
                    column.in_(keys), live).order_by(Customer.id)):
                members[key].append(cid)
            groups.extend(DuplicateGroup(ids, reason, 1.0) for ids in members.values())

    already = {frozenset(g.customer_ids) for g in groups}
    # Constants inlined so PostgreSQL sees the same expression in SELECT and GROUP BY.
    first_letter = func.substr(Customer.name_normalized, literal_column("1"), literal_column("1"))
    blocks = (select(Customer.city, first_letter)
              .where(live, Customer.city.is_not(None), Customer.name_normalized.is_not(None))
              .group_by(Customer.city, first_letter)
              .having(func.count() > 1).limit(limit * 4))
    block_keys = db.session.execute(blocks).all()
    for city, initial in block_keys:
        if len(groups) >= limit:
            break
        rows = db.session.execute(select(Customer.id, Customer.name_normalized).where(
            live, Customer.city == city, first_letter == initial).order_by(Customer.id)
            .limit(500)).all()
        for i, (id_a, name_a) in enumerate(rows):
            for id_b, name_b in rows[i + 1:]:
                ratio = difflib.SequenceMatcher(None, name_a, name_b).ratio()
                pair = frozenset((id_a, id_b))
                if ratio >= name_similarity and pair not in already:
                    already.add(pair)
                    groups.append(DuplicateGroup([id_a, id_b], "name_city", round(ratio, 3)))
    return groups[:limit]


def merge_customers(survivor_id: int, merged_ids: Sequence[int]) -> Customer:
    """Merge ``merged_ids`` into ``survivor_id``; every plugin re-keys its rows by hook."""
    others = sorted(set(merged_ids) - {survivor_id})
    if not others:
        raise UserError.single("Name at least one other customer to merge.",
                               ErrorCode.INVALID, "mergedIds")
    with transaction():
        survivor = get_customer(survivor_id, "survivorId")
        merged = db.session.scalars(select(Customer).where(Customer.id.in_(others))).all()
        missing = set(others) - {c.id for c in merged}
        if missing:
            raise not_found("customer", ", ".join(map(str, sorted(missing))), "mergedIds")
        for customer in [survivor, *merged]:
            if customer.status == CustomerStatus.ERASED:
                raise UserError.single(f"Customer {customer.id} is erased and cannot be merged.",
                                       ErrorCode.NOT_ALLOWED, "mergedIds")
        # The survivor keeps its own values; gaps are filled from the merged records.
        for customer in merged:
            gaps = {k: getattr(customer, k) for k in _PROFILE_FIELDS
                    if getattr(survivor, k) is None and getattr(customer, k) is not None}
            _apply_profile(survivor, gaps)
            survivor.attributes = {**(customer.attributes or {}), **(survivor.attributes or {})}
        tags = set(tags_of([survivor.id, *others]).get(survivor.id, []))
        for values in tags_of(others).values():
            tags.update(values)
        db.session.execute(update(Interaction).where(Interaction.customer_id.in_(others))
                           .values(customer_id=survivor.id))
        db.session.execute(update(CustomerExternalId).where(
            CustomerExternalId.customer_id.in_(others)).values(customer_id=survivor.id))
        db.session.execute(delete(CustomerTag).where(CustomerTag.customer_id.in_(others)))
        _set_tags(survivor, sorted(tags))
        survivor.updated_at = utcnow()
        db.session.flush()
        rapport().hook.rapport_customers_merged(survivor=survivor, merged_ids=others)
        db.session.execute(delete(Customer).where(Customer.id.in_(others)))
        db.session.expire_all()
    return get_customer(survivor_id)


# --- erasure and export ------------------------------------------------------------------


@dataclass
class ErasureResult:
    customer: Customer
    reports: dict[str, Any]


def erase_customer(customer_id: int) -> ErasureResult:
    """Pseudonymise: personal data goes everywhere; accounting facts stay, anonymous."""
    with transaction():
        customer = get_customer(customer_id)
        if customer.status == CustomerStatus.ERASED:
            raise UserError.single("This customer is already erased.", ErrorCode.NOT_ALLOWED,
                                   "id")
        cleared = _apply_profile(customer, {k: None for k in _PROFILE_FIELDS
                                            if k not in ("lifecycle_stage",)})
        customer.attributes = {}
        customer.status = CustomerStatus.ERASED
        customer.updated_at = utcnow()
        ext = db.session.execute(delete(CustomerExternalId).where(
            CustomerExternalId.customer_id == customer.id))
        db.session.execute(delete(CustomerTag).where(CustomerTag.customer_id == customer.id))
        # Interactions keep kind, time and amount (revenue totals); free text goes.
        payloads = db.session.execute(update(Interaction).where(
            Interaction.customer_id == customer.id).values(payload={}, channel=None))
        db.session.flush()
        reports: dict[str, Any] = {"core": {
            "fields_cleared": sorted(cleared),
            "external_ids_removed": ext.rowcount,  # type: ignore[attr-defined]
            "interaction_payloads_cleared": payloads.rowcount,  # type: ignore[attr-defined]
        }}
        for plugin, report in call_each(rapport().hook.rapport_customer_erased,
                                        customer=customer):
            reports[plugin] = report
    return ErasureResult(customer, reports)


def export_customer(customer_id: int) -> dict[str, Any]:
    """Everything Rapport holds about a customer, as one JSON-serialisable document."""
    customer = get_customer(customer_id)
    external = db.session.execute(select(CustomerExternalId.source, CustomerExternalId.external_id)
                                  .where(CustomerExternalId.customer_id == customer.id)).all()
    interactions = db.session.scalars(select(Interaction).where(
        Interaction.customer_id == customer.id).order_by(Interaction.occurred_at,
                                                         Interaction.id)).all()

    def iso(value: Any) -> Any:
        return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value

    document: dict[str, Any] = {
        "customer": {
            "id": customer.id,
            **{k: iso(getattr(customer, k)) for k in _PROFILE_FIELDS if k != "lifecycle_stage"},
            "lifecycle_stage": customer.lifecycle_stage.value,
            "status": customer.status.value,
            "attributes": customer.attributes,
            "tags": tags_of([customer.id]).get(customer.id, []),
            "external_ids": [{"source": s, "external_id": e} for s, e in external],
            "created_at": iso(customer.created_at),
            "updated_at": iso(customer.updated_at),
        },
        "interactions": [{
            "id": i.id, "kind": i.kind, "channel": i.channel, "occurred_at": iso(i.occurred_at),
            "amount": None if i.amount is None else str(quantize(i.amount, i.currency or "")), "currency": i.currency,
            "payload": i.payload, "source": i.source, "external_id": i.external_id,
            "refers_to_id": i.refers_to_id,
        } for i in interactions],
        "exported_at": utcnow().isoformat(),
    }
    for plugin, section in call_each(rapport().hook.rapport_customer_export, customer=customer):
        document.setdefault("plugins", {})[plugin] = section
    return document


__all__ = [
    "DuplicateGroup", "ErasureResult", "create_customer", "customer_ids_by_external_id",
    "erase_customer", "export_customer", "find_by_external_id", "find_duplicates",
    "change_customer_statuses", "get_customer", "import_customers", "merge_customers",
    "set_customer_status",
    "update_customer",
]
