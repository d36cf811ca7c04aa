"""Customer tags set-based: tag (or untag) a whole group of customers in one statement.

For plugins that label many customers at once (survey clusters, model segments). Tags are
normalised as ``CustomerSchema`` does (trimmed, lowercase, 1-64 characters); erased
customers are never tagged; a customer already holding 50 tags (the profile limit) or the
tag itself is left alone. ``rapport_customer_updated`` is not fired per customer: these
are bulk labels, and firing per row would defeat the single statement.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import BigInteger, Select, delete, func, insert, literal, select
from sqlalchemy.dialects import postgresql

from core.db import db
from core.errors import ErrorCode, UserError
from core.models import Customer, CustomerStatus, CustomerTag

MAX_TAG_LENGTH = 64
MAX_TAGS_PER_CUSTOMER = 50


def normalise_tag(tag: str, field: str = "tag") -> str:
    """The stored form of ``tag``; a ``UserError`` on ``field`` when it cannot be one."""
    clean = tag.strip().lower() if isinstance(tag, str) else ""
    if not 1 <= len(clean) <= MAX_TAG_LENGTH or "\x00" in clean:
        raise UserError.single(f"A tag is 1 to {MAX_TAG_LENGTH} characters.",
                               ErrorCode.INVALID, field)
    return clean


def _ids_condition(customer_ids: Collection[int] | Select[Any]) -> Any:
    if isinstance(customer_ids, Select):
        return Customer.id.in_(customer_ids)
    ids = sorted({int(i) for i in customer_ids})
    if db.session.get_bind().dialect.name == "postgresql":
        # One array parameter however many ids (an IN list is one parameter per id).
        return Customer.id == func.any(literal(ids, postgresql.ARRAY(BigInteger)))
    return Customer.id.in_(ids)


def add_tag(customer_ids: Collection[int] | Select[Any], tag: str) -> int:
    """Give ``tag`` to the customers ``customer_ids`` names (ids, or a SELECT of one id
    column) in one INSERT ... SELECT, in the caller's transaction; returns how many
    customers got it."""
    tag = normalise_tag(tag)
    if not isinstance(customer_ids, Select) and not customer_ids:
        return 0
    held = select(func.count()).where(CustomerTag.customer_id == Customer.id).scalar_subquery()
    already = select(CustomerTag.customer_id).where(CustomerTag.customer_id == Customer.id,
                                                    CustomerTag.tag == tag).exists()
    rows = select(Customer.id, literal(tag)).where(
        _ids_condition(customer_ids), Customer.status != CustomerStatus.ERASED, ~already,
        held < MAX_TAGS_PER_CUSTOMER)
    inserted = db.session.execute(insert(CustomerTag).from_select(
        [CustomerTag.customer_id, CustomerTag.tag], rows).returning(CustomerTag.customer_id))
    return len(inserted.all())


def remove_tags(tags: Sequence[str]) -> int:
    """Take ``tags`` away from every customer holding one (one DELETE); returns the rows
    removed."""
    clean = sorted({normalise_tag(t) for t in tags})
    if not clean:
        return 0
    result = db.session.execute(delete(CustomerTag).where(CustomerTag.tag.in_(clean)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


__all__ = ["add_tag", "normalise_tag", "remove_tags"]
