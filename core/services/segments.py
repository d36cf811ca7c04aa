"""Segments: turn a validated customer filter into SQL conditions (no Python loops).

The filter is core's fields (``core.schemas.CustomerFilterSchema``) plus the fields the
enabled plugins contribute through ``rapport_customer_filters`` (``CustomerFilterField``):
``validate_filter`` and ``customer_conditions`` take both, so every report that takes the
customer filter takes a plugin's field without importing the plugin.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pluggy
from flask import Flask, current_app
from marshmallow import Schema
from marshmallow import fields as ma_fields
from sqlalchemy import ColumnElement, and_, case, exists, false, func, not_, or_, select
from sqlalchemy.sql import Select

from core.app import rapport
from core.attributes import declared_attributes, typed_attribute
from core.config import ConfigError
from core.db import db
from core.models import Customer, CustomerAttributeDefinition, CustomerTag, Interaction
from core.schemas import CustomerFilterSchema
from core.services.customers import email_blind_index, normalise_name, phone_blind_index
from core.services import load

_LIST_COLUMNS = {
    "country": Customer.country, "region": Customer.region, "city": Customer.city,
    "gender": Customer.gender, "education": Customer.education,
    "occupation": Customer.occupation, "income_band": Customer.income_band,
    "status": Customer.status, "lifecycle_stage": Customer.lifecycle_stage,
}


@dataclass(frozen=True)
class CustomerFilterField:
    """A field a plugin adds to the customer filter (``rapport_customer_filters``).

    ``name`` is snake_case (GraphQL shows it in camelCase); ``field`` a marshmallow field
    that validates the value (``validate_filter`` reports its errors on ``name``);
    ``graphql_type`` the graphene input type of the field (an unmounted instance such as
    ``graphene.ID(description=...)``), used by the API only; ``condition`` turns the
    validated value into one SQL condition on ``core.models.Customer`` (set-based: a
    subquery, never a Python loop over customers); ``scope`` is the scope a GraphQL caller
    needs to filter on the field (the plugin's read scope: the field reveals its data).
    ``nested(value)``, for a field whose value carries filters of its own (a saved
    segment), returns them (validated specs): their plugin fields need their scopes too.
    ``cost`` is what the field adds to the query cost (api/limits.py) of each scan of the
    customers it filters, beyond a plain condition: a number, or a function of the
    validated value (a saved segment costs what its stored filter holds).
    """

    name: str
    field: ma_fields.Field
    graphql_type: Any
    condition: Callable[[Any], ColumnElement[bool]]
    scope: str
    nested: Callable[[Any], Iterable[Mapping[str, Any]]] | None = None
    cost: int | Callable[[Any], int] = 0


#: The query cost (api/limits.py) of a ``search``: a substring match of names that no
#: index serves, so every scan of the customers it filters reads them all.
SEARCH_COST = 2_000
#: Core's filter fields as the cost model sees them: the others are plain conditions
#: (list and range comparisons, indexed look-ups) and cost nothing more.
CORE_FILTER_COSTS: dict[str, int] = {"search": SEARCH_COST}


_FILTERS = "rapport_customer_filters"
_FIELD_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*\Z")


@dataclass(frozen=True)
class _Filters:
    fields: dict[str, CustomerFilterField]
    schema: type[Schema]


def collect_filter_fields(pm: pluggy.PluginManager) -> dict[str, CustomerFilterField]:
    """Every enabled plugin's filter field by name; a bad or clashing name is a
    ``ConfigError``."""
    contributed: dict[str, CustomerFilterField] = {}
    core_names = set(CustomerFilterSchema._declared_fields)
    for declared in pm.hook.rapport_customer_filters():
        for extra in declared or []:
            if not _FIELD_NAME.match(extra.name):
                raise ConfigError(f"customer filter field {extra.name!r}: name it in "
                                  f"snake_case")
            if extra.name in core_names or extra.name in contributed:
                raise ConfigError(f"customer filter field {extra.name!r} is declared twice")
            contributed[extra.name] = extra
    return dict(sorted(contributed.items()))


def _filters(app: Flask | None = None) -> _Filters:
    target = app or current_app
    found = target.extensions.get(_FILTERS)
    if found is None:
        contributed = collect_filter_fields(rapport(target).pm)
        schema = type("CustomerFilterSchema", (CustomerFilterSchema,),
                      {name: extra.field for name, extra in contributed.items()})
        found = target.extensions[_FILTERS] = _Filters(contributed, schema)
    return found


def filter_fields(app: Flask | None = None) -> dict[str, CustomerFilterField]:
    """The enabled plugins' customer filter fields by name (collected once per app)."""
    return _filters(app).fields


def plugin_fields_used(spec: Mapping[str, Any]) -> Iterator[CustomerFilterField]:
    """The plugin fields a validated spec uses, those of the filters it carries included
    (``CustomerFilterField.nested``)."""
    fields = filter_fields()
    pending = [spec]
    while pending:
        current = pending.pop()
        for name, extra in fields.items():
            if current.get(name) is not None:
                yield extra
                if extra.nested is not None:
                    pending.extend(extra.nested(current[name]))


def filter_cost(spec: Mapping[str, Any]) -> int:
    """What a validated filter adds to the query cost of each scan it filters: its core
    fields' ``CORE_FILTER_COSTS`` and its plugin fields' ``cost`` (a saved segment's
    stored filter, the segments it names included)."""
    total = sum(cost for name, cost in CORE_FILTER_COSTS.items() if spec.get(name))
    for name, extra in filter_fields().items():
        value = spec.get(name)
        if value is not None:
            total += extra.cost(value) if callable(extra.cost) else extra.cost
    return total


def validate_filter(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` (snake_case keys) as the spec ``customer_conditions`` takes, or a
    ``UserError``: core's fields and every enabled plugin's."""
    return load(_filters().schema(), raw)


def filter_document(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A validated spec as JSON (snake_case keys, ISO dates, Decimal as text): what a
    stored filter keeps; ``validate_filter`` takes it back."""
    dumped = _filters().schema().dump(spec)
    return {key: str(value) if isinstance(value, Decimal) else value
            for key, value in dumped.items()}


def _literal(text: str) -> str:
    """``text`` for a LIKE pattern, its own % and _ matching only themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _purchases() -> Select[Any]:
    return select(Interaction.customer_id).where(Interaction.kind == "purchase")


#: SQLite's json_type() names per JSON kind (PostgreSQL's jsonb_typeof() uses the kinds).
_SQLITE_KINDS = {"number": ("integer", "real"), "string": ("text",),
                 "boolean": ("true", "false")}


def _is_kind(key: str, kind: str | None) -> ColumnElement[bool]:
    """The customer has attribute ``key`` (of JSON ``kind`` when given): false, never an
    error, when the key is missing or holds another kind."""
    if db.session.get_bind().dialect.name == "postgresql":
        if kind is None:
            return Customer.attributes.op("?")(key)  # JSONB: has the key
        return func.jsonb_typeof(Customer.attributes[key]) == kind
    stored = func.json_type(Customer.attributes, f'$."{key}"')  # keys: letters, digits, _
    return stored.is_not(None) if kind is None else stored.in_(_SQLITE_KINDS[kind])


def _targets(definition: CustomerAttributeDefinition | None, wanted: list[Any]
             ) -> tuple[set[str], set[float], set[bool]]:
    """The values a condition looks for, by JSON kind. A declared attribute's text is read
    as its writes read it ("55.0" for a number, "yes" for a boolean); a value it could not
    hold matches nothing. For an undeclared key, text also matches a number it reads as
    and true/false the boolean: the same answer on both databases."""
    strings: set[str] = set()
    numbers: set[float] = set()
    booleans: set[bool] = set()

    def add(value: Any) -> None:
        if isinstance(value, bool):
            booleans.add(value)
        elif isinstance(value, (int, float)):
            numbers.add(float(value))
        else:
            strings.add(str(value))

    for target in wanted:
        if definition is not None and isinstance(target, str):
            try:
                add(typed_attribute(definition, target))
            except ValueError:
                pass
            continue
        add(target)
        if isinstance(target, str):
            text = target.strip()
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                numbers.add(number)
            if text.lower() in ("true", "false"):
                booleans.add(text.lower() == "true")
    return strings, numbers, booleans


def _attribute_condition(cond: Mapping[str, Any],
                         definitions: Mapping[str, CustomerAttributeDefinition]
                         ) -> ColumnElement[bool]:
    key = cond["key"]
    value = Customer.attributes[key]
    # Casts sit inside CASE so PostgreSQL never casts a value of another kind (its cast of
    # "gold" to a number raises) and SQLite never reads text as 0.
    number = case((_is_kind(key, "number"), value.as_float()))
    clauses: list[ColumnElement[bool]] = []
    lists = ([[cond["equals"]]] if "equals" in cond else []) + (
        [list(cond["in"])] if "in" in cond else [])
    for wanted in lists:  # equals: one value; in: any of them (none: nothing matches)
        strings, numbers, booleans = _targets(definitions.get(key), wanted)
        either: list[ColumnElement[bool]] = []
        if strings:
            either.append(case((_is_kind(key, "string"), value.as_string())).in_(
                sorted(strings)))
        if numbers:
            either.append(number.in_(sorted(numbers)))
        if booleans:
            either.append(case((_is_kind(key, "boolean"), value.as_boolean())).in_(
                sorted(booleans)))
        clauses.append(or_(*either) if either else false())
    if "min" in cond:
        clauses.append(number >= float(cond["min"]))
    if "max" in cond:
        clauses.append(number <= float(cond["max"]))
    return and_(*clauses) if clauses else _is_kind(key, None)


def customer_conditions(spec: Mapping[str, Any]) -> list[ColumnElement[bool]]:
    """SQL conditions on ``Customer`` for a filter already validated by ``validate_filter``."""
    conds: list[ColumnElement[bool]] = []
    for key, column in _LIST_COLUMNS.items():
        if spec.get(key):
            values = [v.upper() if key == "country" else v for v in spec[key]]
            conds.append(column.in_(values))
    if spec.get("search"):
        # Compare like with like: names are stored lowercased without accents. E-mails and
        # phones are encrypted: only the exact filters below reach them.
        name_pattern = f"%{_literal(normalise_name(spec['search']) or '')}%"
        conds.append(Customer.name_normalized.like(name_pattern, escape="\\"))
    for key, column, index_of in (("email", Customer.email_blind_index, email_blind_index),
                                  ("phone", Customer.phone_blind_index, phone_blind_index)):
        if spec.get(key) is not None:
            index = index_of(spec[key])  # None (a blank value) must not match "no e-mail"
            conds.append(column == index if index is not None else false())
    if spec.get("owner_id") is not None:
        conds.append(Customer.owner_id == spec["owner_id"])
    if spec.get("tags_any"):
        conds.append(Customer.id.in_(select(CustomerTag.customer_id).where(
            CustomerTag.tag.in_([t.lower() for t in spec["tags_any"]]))))
    for tag in spec.get("tags_all") or []:
        conds.append(Customer.id.in_(select(CustomerTag.customer_id).where(
            CustomerTag.tag == tag.lower())))
    if spec.get("attributes"):
        definitions = declared_attributes()
        for cond in spec["attributes"]:
            conds.append(_attribute_condition(cond, definitions))
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
    # It is net of refunds (in the base currency too): purchases minus refunds, all time.
    base = rapport().settings.base_currency
    spend = func.sum(case((Interaction.kind == "refund", -Interaction.amount),
                          else_=Interaction.amount))
    in_base = select(Interaction.customer_id).where(
        Interaction.kind.in_(("purchase", "refund")), Interaction.currency == base
    ).group_by(Interaction.customer_id)
    if spec.get("min_spend"):
        conds.append(Customer.id.in_(in_base.having(spend >= spec["min_spend"])))
    if spec.get("max_spend") is not None:
        conds.append(Customer.id.not_in(in_base.having(spend > spec["max_spend"])))
    for name, extra in filter_fields().items():
        if spec.get(name) is not None:
            conds.append(extra.condition(spec[name]))
    return conds


__all__ = ["CORE_FILTER_COSTS", "SEARCH_COST", "CustomerFilterField", "customer_conditions",
           "filter_cost", "filter_document", "filter_fields", "plugin_fields_used",
           "validate_filter"]
