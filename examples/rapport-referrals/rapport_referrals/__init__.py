"""Referrals: an example of a partner's Rapport plugin, installed as its own package."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from sqlalchemy import delete, func, select, update

from core import hookimpl
from core.db import db
from core.ids import global_id
from core.models import Customer
from rapport_referrals.models import Referral
from rapport_referrals.schema import RecordReferral, customer_fields, query_fields

__version__ = "0.1.0"


@hookimpl
def rapport_register_scopes() -> list[tuple[str, str]]:
    return [("referrals:read", "Read referrals"), ("referrals:write", "Record referrals")]


@hookimpl
def rapport_migration_dirs() -> list[str]:
    return [os.path.join(os.path.dirname(__file__), "migrations")]


@hookimpl
def rapport_graphql_customer_fields() -> dict[str, Any]:
    return customer_fields()


@hookimpl
def rapport_graphql_query_fields() -> dict[str, Any]:
    return query_fields()


@hookimpl
def rapport_graphql_mutations() -> dict[str, Any]:
    return {"recordReferral": RecordReferral}


@hookimpl
def rapport_customers_merged(survivor: Customer, merged_ids: list[int]) -> None:
    db.session.execute(update(Referral).where(Referral.referrer_id.in_(merged_ids))
                       .values(referrer_id=survivor.id))
    # A merged customer's own "referred by" row moves over unless the survivor has one.
    has_own = db.session.scalar(select(Referral.id).where(Referral.referred_id == survivor.id))
    if has_own is not None:
        db.session.execute(delete(Referral).where(Referral.referred_id.in_(merged_ids)))
    else:
        first = db.session.scalar(select(Referral.id).where(
            Referral.referred_id.in_(merged_ids)).order_by(Referral.referred_at).limit(1))
        if first is not None:
            db.session.execute(delete(Referral).where(Referral.referred_id.in_(merged_ids),
                                                      Referral.id != first))
            db.session.execute(update(Referral).where(Referral.id == first)
                               .values(referred_id=survivor.id))
    # Self-referrals created by the merge mean nothing.
    db.session.execute(delete(Referral).where(Referral.referrer_id == Referral.referred_id))


@hookimpl
def rapport_customer_erased(customer: Customer) -> dict[str, Any]:
    result = db.session.execute(update(Referral).where(
        (Referral.referrer_id == customer.id) | (Referral.referred_id == customer.id),
        Referral.note.is_not(None)).values(note=None))
    return {"notes_cleared": result.rowcount}  # type: ignore[attr-defined]


@hookimpl
def rapport_customer_export(customer: Customer) -> dict[str, Any]:
    rows = db.session.scalars(select(Referral).where(
        (Referral.referrer_id == customer.id) | (Referral.referred_id == customer.id))
        .order_by(Referral.referred_at, Referral.id)).all()
    return {"referrals": [{"referrerId": global_id("Customer", r.referrer_id),
                           "referredId": global_id("Customer", r.referred_id),
                           "referredAt": r.referred_at.isoformat(), "note": r.note}
                          for r in rows]}


@hookimpl(optionalhook=True)
def rapport_churn_features(customers: Any, as_of: dt.datetime) -> Any:
    """Referral count as of ``as_of`` (declared by the churn plugin when installed)."""
    ids = customers.c.customer_id
    count = (select(func.count(Referral.id)).where(
        Referral.referrer_id == ids, Referral.referred_at <= as_of).scalar_subquery())
    return select(ids.label("customer_id"), count.label("referrals_count"))
