"""Segments: turn a validated customer filter into SQL conditions (no Python loops)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, not_, or_, select
from sqlalchemy.sql import Select

from core.app import rapport
from core.models import Customer, CustomerTag, Interaction
from core.schemas import CustomerFilterSchema
from core.services.customers import normalise_name
from core.services import load

_LIST_COLUMNS = {
    "country": Customer.country, "region": Customer.region, "city": Customer.city,
    "gender": Customer.gender, "education": Customer.education,
    "occupation": Customer.occupation, "income_band": Customer.income_band,
    "status": Customer.status, "lifecycle_stage": Customer.lifecycle_stage,
}


def validate_filter(raw: Mapping[str, Any]) -> dict[str, Any]:
    return load(CustomerFilterSchema(), raw)


def _literal(text: str) -> str:
    """``text`` for a LIKE pattern, its own % and _ matching only themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _purchases() -> Select[Any]:
    return select(Interaction.customer_id).where(Interaction.kind == "purchase")


def _attribute_condition(cond: Mapping[str, Any]) -> ColumnElement[bool]:
    value = Customer.attributes[cond["key"]]
    clauses: list[ColumnElement[bool]] = []
    if "equals" in cond:
        target = cond["equals"]
        if isinstance(target, bool):
            clauses.append(value.as_boolean() == target)
        elif isinstance(target, (int, float)):
            clauses.append(value.as_float() == float(target))
        else:
            clauses.append(value.as_string() == str(target))
    if "in" in cond:
        clauses.append(value.as_string().in_([str(v) for v in cond["in"]]))
    if "min" in cond:
        clauses.append(value.as_float() >= float(cond["min"]))
    if "max" in cond:
        clauses.append(value.as_float() <= float(cond["max"]))
    return and_(*clauses) if clauses else value.is_not(None)


def customer_conditions(spec: Mapping[str, Any]) -> list[ColumnElement[bool]]:
    """SQL conditions on ``Customer`` for a filter already validated by ``validate_filter``."""
    conds: list[ColumnElement[bool]] = []
    for key, column in _LIST_COLUMNS.items():
        if spec.get(key):
            values = [v.upper() if key == "country" else v for v in spec[key]]
            conds.append(column.in_(values))
    if spec.get("search"):
        # Compare like with like: names are stored lowercased without accents.
        name_pattern = f"%{_literal(normalise_name(spec['search']) or '')}%"
        email_pattern = f"%{_literal(spec['search'].strip().lower())}%"
        conds.append(or_(Customer.name_normalized.like(name_pattern, escape="\\"),
                         Customer.email_normalized.like(email_pattern, escape="\\")))
    if spec.get("owner_id") is not None:
        conds.append(Customer.owner_id == spec["owner_id"])
    if spec.get("tags_any"):
        conds.append(Customer.id.in_(select(CustomerTag.customer_id).where(
            CustomerTag.tag.in_([t.lower() for t in spec["tags_any"]]))))
    for tag in spec.get("tags_all") or []:
        conds.append(Customer.id.in_(select(CustomerTag.customer_id).where(
            CustomerTag.tag == tag.lower())))
    for cond in spec.get("attributes") or []:
        conds.append(_attribute_condition(cond))
    for key, op in (("born_after", "__ge__"), ("born_before", "__le__"),
                    ("created_after", "__ge__"), ("created_before", "__le__")):
        if spec.get(key) is not None:
            column = Customer.birth_date if key.startswith("born") else Customer.created_at
            conds.append(getattr(column, op)(spec[key]))

    if spec.get("last_purchase_after") is not None:
        conds.append(Customer.id.in_(_purchases().where(
            Interaction.occurred_at >= spec["last_purchase_after"])))
    if spec.get("last_purchase_before") is not None:
        conds.append(Customer.id.in_(_purchases()))
        conds.append(not_(exists(_purchases().where(
            Interaction.customer_id == Customer.id,
            Interaction.occurred_at >= spec["last_purchase_before"]))))

    count = func.count(Interaction.id)
    if spec.get("min_purchase_count"):
        conds.append(Customer.id.in_(_purchases().group_by(Interaction.customer_id)
                                     .having(count >= spec["min_purchase_count"])))
    if spec.get("max_purchase_count") is not None:
        conds.append(Customer.id.not_in(_purchases().group_by(Interaction.customer_id)
                                        .having(count > spec["max_purchase_count"])))
    # Spend is counted in the base currency only: other currencies are never summed with it.
    base = rapport().settings.base_currency
    spend = func.sum(Interaction.amount)
    in_base = _purchases().where(Interaction.currency == base).group_by(Interaction.customer_id)
    if spec.get("min_spend"):
        conds.append(Customer.id.in_(in_base.having(spend >= spec["min_spend"])))
    if spec.get("max_spend") is not None:
        conds.append(Customer.id.not_in(in_base.having(spend > spec["max_spend"])))
    return conds


__all__ = ["customer_conditions", "validate_filter"]
