"""Customers: create, update, find, de-duplicate, merge, erase, export."""

from __future__ import annotations

import datetime as dt
import difflib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import delete, func, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core import changes as audit
from core.app import rapport
from core.attributes import declared_attributes, typed_attributes
from core.crypto import blind_index
from core.db import db, utcnow
from core.errors import ErrorCode, FieldError, UserError, camel, errors_from_marshmallow
from core.ids import global_id, shown_id
from core.models import (
    Agent, Customer, CustomerExternalId, CustomerStatus, CustomerTag, Interaction,
    LifecycleStage,
)
from core.money import quantize
from core.plugins import call_each
from core.schemas import CustomerSchema
from core.services import load, not_found, transaction
from core.services.interactions import BatchResult, external_key_condition, record_batch

_PROFILE_FIELDS = (
    "name", "email", "phone", "birth_date", "gender", "education", "occupation", "income_band",
    "country", "region", "city", "lifecycle_stage", "owner_id",
    "customer_since", "tenure_periods", "period",
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


def email_blind_index(email: str | None) -> str | None:
    """What ``Customer.email_blind_index`` holds for ``email``: equal for equal addresses
    whatever their case or surrounding blanks."""
    return blind_index("email", normalise_email(email))


def phone_blind_index(phone: str | None) -> str | None:
    """What ``Customer.phone_blind_index`` holds for ``phone`` (its last ten digits)."""
    return blind_index("phone", normalise_phone(phone))


def derived_columns(email: str | None, phone: str | None, name: str | None
                    ) -> dict[str, str | None]:
    """The look-up columns kept next to a customer's profile, for bulk inserts."""
    return {"email_blind_index": email_blind_index(email),
            "phone_blind_index": phone_blind_index(phone),
            "name_normalized": normalise_name(name)}


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
    for key, value in derived_columns(customer.email, customer.phone, customer.name).items():
        setattr(customer, key, value)
    return changes


#: Why a deactivated agent cannot become an owner (create, update, import, reassign).
INACTIVE_OWNER = "The agent is deactivated; choose an active owner."


def _check_owner(owner_id: int | None) -> None:
    """A new owner must be a known, active agent. Its row is share-locked (update_agent
    locks it FOR UPDATE), so a concurrent deactivation is either seen or waits."""
    if owner_id is None:
        return
    agent = db.session.get(Agent, owner_id, with_for_update={"read": True},
                           populate_existing=True)
    if agent is None:
        raise UserError.single(f"No agent with id {shown_id('Agent', owner_id)}.",
                               ErrorCode.NOT_FOUND, "ownerId")
    if not agent.active:
        raise UserError.single(INACTIVE_OWNER, ErrorCode.NOT_ALLOWED, "ownerId")


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
            f"{shown_id('Customer', owner)}.", ErrorCode.UNIQUE, "externalId")


def tags_of(customer_ids: Sequence[int]) -> dict[int, list[str]]:
    rows = db.session.execute(select(CustomerTag.customer_id, CustomerTag.tag).where(
        CustomerTag.customer_id.in_(customer_ids)).order_by(CustomerTag.tag))
    result: dict[int, list[str]] = defaultdict(list)
    for customer_id, tag in rows:
        result[customer_id].append(tag)
    return result


def _with_typed_attributes(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its declared attributes typed; a UserError naming each bad value."""
    if data.get("attributes"):
        data["attributes"], errors = typed_attributes(data["attributes"])
        if errors:
            raise UserError(errors)
    return data


def create_customer(raw: Mapping[str, Any]) -> Customer:
    data = load(CustomerSchema(), raw)
    with transaction():
        _with_typed_attributes(data)
        _check_owner(data.get("owner_id"))
        customer = Customer(attributes={})
        profile = _apply_profile(customer, data)
        db.session.add(customer)
        db.session.flush()
        if data.get("external_id"):
            _add_external_id(customer, data.get("source") or "default", data["external_id"])
            profile["external_id"] = (None, data["external_id"])
        if data.get("tags"):
            _set_tags(customer, data["tags"])
            profile["tags"] = (None, data["tags"])
        db.session.flush()
        rapport().hook.rapport_customer_created(customer=customer)
        gid = global_id("Customer", customer.id)
        audit.record(None, [gid], _audited(profile), [audit.Event(
            "customer.created", gid, {"customerId": gid, "status": customer.status.value,
                                      "source": data.get("source") if data.get("external_id")
                                      else None})])
    return customer


def _audited(changed: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    return audit.camel_changes(changed, {"owner_id": "Agent"})


def get_customer(customer_id: int, field: str = "id") -> Customer:
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise not_found("customer", customer_id, field, type_name="Customer")
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
        _with_typed_attributes(data)
        # Locked, and read afresh: a concurrent hand-over (reassign_customers locks the
        # rows it moves) finishes first, and this change sees, audits and hands over
        # from the owner it left (read-modify-write of attributes and tags alike).
        customer = db.session.get(Customer, customer_id, with_for_update=True,
                                  populate_existing=True)
        if customer is None:
            raise not_found("customer", customer_id, "id", type_name="Customer")
        if customer.status == CustomerStatus.ERASED:
            raise UserError.single("An erased customer cannot be changed.",
                                   ErrorCode.NOT_ALLOWED, "id")
        if data.get("owner_id") != customer.owner_id:
            _check_owner(data.get("owner_id"))  # an unchanged owner may have left since
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
        if changes.get("owner_id", (None, None))[1] is not None:
            # Plugins move owner-bound work in one hook, for one customer or a batch.
            rapport().hook.rapport_customers_reassigned(
                assignments={customer.id: changes["owner_id"][1]},
                previous={customer.id: changes["owner_id"][0]})
        gid = global_id("Customer", customer.id)
        audit.record(None, [gid], _audited(changes), [audit.Event(
            "customer.updated", gid, {"customerId": gid, "changedFields": sorted(
                _audited(changes))})] if changes else [])
    return customer


def set_customer_status(customer_id: int, status: CustomerStatus) -> Customer:
    """The one way to move a customer between active and churned (erasure has its own)."""
    with transaction():
        before = get_customer(customer_id).status
        if change_customer_statuses([customer_id], status):
            gid = global_id("Customer", customer_id)
            audit.record(None, [gid], {"status": [before, status]}, [audit.Event(
                "customer.updated", gid, {"customerId": gid, "changedFields": ["status"],
                                          "status": status.value})])
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
        record_batch("customers.imported", "Customer", result)
    result.errors = [e.prefixed(str(index)) for index in sorted(result.rejected)
                     for e in result.rejected[index]]
    return result


def _validated_for_import(raws: Sequence[Mapping[str, Any]], result: BatchResult
                          ) -> list[tuple[int, dict[str, Any]]]:
    schema = CustomerSchema()
    definitions = declared_attributes()
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
        if data.get("attributes"):
            data["attributes"], errors = typed_attributes(data["attributes"], definitions)
            if errors:
                result.rejected[index] = errors
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
    known = dict(db.session.execute(select(Agent.id, Agent.active).where(
        Agent.id.in_(owner_ids)).order_by(Agent.id).with_for_update(read=True)).tuples().all()
    ) if owner_ids else {}
    kept: list[tuple[int, dict[str, Any]]] = []
    for index, data in valid:
        owner = data.get("owner_id")
        if owner is not None and owner not in known:
            result.rejected[index] = [FieldError(f"No agent with id {shown_id('Agent', owner)}.",
                                                 ErrorCode.NOT_FOUND, "ownerId")]
        elif owner is not None and not known[owner]:
            result.rejected[index] = [FieldError(INACTIVE_OWNER, ErrorCode.NOT_ALLOWED,
                                                 "ownerId")]
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
        **derived_columns(data.get("email"), data.get("phone"), data.get("name")),
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

    Same normalised e-mail or phone are found by SQL GROUP BY on their indexed blind
    indexes (the values themselves are encrypted); similar names are compared only within
    one city and the same first letter (a blocking key), so the cost stays proportional to
    the block sizes, not to n squared.
    """
    groups: list[DuplicateGroup] = []
    live = Customer.status != CustomerStatus.ERASED
    for column, reason in ((Customer.email_blind_index, "email"),
                           (Customer.phone_blind_index, "phone")):
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
    # The likeliest first; equal scores in a stable order (the lowest customer id first).
    groups.sort(key=lambda g: (-g.score, min(g.customer_ids)))
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
            raise not_found("customer", ", ".join(shown_id("Customer", c)
                                                  for c in sorted(missing)), "mergedIds")
        for customer in [survivor, *merged]:
            if customer.status == CustomerStatus.ERASED:
                raise UserError.single(
                    f"Customer {shown_id('Customer', customer.id)} is erased and cannot be "
                    f"merged.", ErrorCode.NOT_ALLOWED, "mergedIds")
        # The survivor keeps its own values; gaps are filled from the merged records.
        filled: dict[str, tuple[Any, Any]] = {}
        for customer in merged:
            gaps = {k: getattr(customer, k) for k in _PROFILE_FIELDS
                    if getattr(survivor, k) is None and getattr(customer, k) is not None}
            filled.update(_apply_profile(survivor, gaps))
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
        gid = global_id("Customer", survivor_id)
        merged_gids = [global_id("Customer", c) for c in others]
        audit.record(None, [gid, *merged_gids], _audited(filled) or None, [audit.Event(
            "customer.merged", gid, {"customerId": gid, "mergedIds": merged_gids})])
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
        gid = global_id("Customer", customer.id)
        reports["core"]["audit_entries_redacted"] = audit.redact(gid)
        # The erasure's own entry names the fields cleared, never their values.
        audit.record(None, [gid], {camel(k): [audit.REDACTED, None] for k in sorted(cleared)},
                     [audit.Event("customer.erased", gid, {"customerId": gid})])
    return ErasureResult(customer, reports)


def _plugin_domains() -> dict[str, set[str]]:
    """Each plugin's domains: those of the read scopes it registers."""
    return {plugin: {scope.partition(":")[0] for scope, _ in scopes if scope.endswith(":read")}
            for plugin, scopes in call_each(rapport().hook.rapport_register_scopes)}


def export_customer(customer_id: int, may_read: Callable[[str], bool] | None = None
                    ) -> dict[str, Any]:
    """What Rapport holds about a customer, as one JSON-serialisable document.

    ``may_read(domain)`` tells which sections the caller may read (None: all of them):
    ``customer`` (domain customers), ``interactions`` (interactions) and each plugin's
    section under ``plugins`` (the domains of the read scopes the plugin registers; all
    of them are needed). ``omitted`` lists the sections left out.
    """
    readable = may_read or (lambda domain: True)
    customer = get_customer(customer_id)

    def iso(value: Any) -> Any:
        return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value

    document: dict[str, Any] = {}
    omitted: list[str] = []
    if not readable("customers"):
        omitted.append("customer")
    else:
        external = db.session.execute(select(
            CustomerExternalId.source, CustomerExternalId.external_id).where(
            CustomerExternalId.customer_id == customer.id)).all()
        # camelCase keys and global ids, as GraphQL shows them; attributes pass unchanged.
        document["customer"] = {
            "id": global_id("Customer", customer.id),
            **{camel(k): iso(getattr(customer, k)) for k in _PROFILE_FIELDS
               if k not in ("lifecycle_stage", "owner_id")},
            "ownerId": shown_id("Agent", customer.owner_id) if customer.owner_id else None,
            "lifecycleStage": customer.lifecycle_stage.value,
            "status": customer.status.value,
            "attributes": customer.attributes,
            "tags": tags_of([customer.id]).get(customer.id, []),
            "externalIds": [{"source": s, "externalId": e} for s, e in external],
            "createdAt": iso(customer.created_at),
            "updatedAt": iso(customer.updated_at),
        }
    if not readable("interactions"):
        omitted.append("interactions")
    else:
        interactions = db.session.scalars(select(Interaction).where(
            Interaction.customer_id == customer.id).order_by(Interaction.occurred_at,
                                                             Interaction.id)).all()
        document["interactions"] = [{
            "id": global_id("Interaction", i.id), "kind": i.kind, "channel": i.channel,
            "occurredAt": iso(i.occurred_at),
            "amount": None if i.amount is None else str(quantize(i.amount, i.currency or "")),
            "currency": i.currency, "payload": i.payload, "source": i.source,
            "externalId": i.external_id,
            "refersToId": None if i.refers_to_id is None
            else global_id("Interaction", i.refers_to_id),
        } for i in interactions]
    document["exportedAt"] = utcnow().isoformat()
    domains = _plugin_domains() if may_read is not None else {}
    for plugin, section in call_each(rapport().hook.rapport_customer_export, customer=customer):
        if may_read is not None and not (domains.get(plugin) and all(
                may_read(d) for d in domains[plugin])):
            omitted.append(f"plugins.{plugin}")
            continue
        document.setdefault("plugins", {})[plugin] = section
    if omitted:
        document["omitted"] = omitted
    return document


__all__ = [
    "DuplicateGroup", "ErasureResult", "create_customer", "customer_ids_by_external_id",
    "erase_customer", "export_customer", "find_by_external_id", "find_duplicates",
    "change_customer_statuses", "derived_columns", "email_blind_index", "get_customer",
    "import_customers", "merge_customers", "phone_blind_index",
    "set_customer_status",
    "update_customer",
]
