"""marshmallow schemas: every input to core is validated here, once.

GraphQL mutations, the CLI importers and the services all load through these schemas, so
a rule lives in one place. Field names are snake_case; the API maps camelCase onto them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal
from typing import Any

from marshmallow import (
    RAISE, Schema, ValidationError, fields, post_load, pre_load, validate,
    validates_schema,
)

from core.db import MAX_ID, MONEY_SCALE
from core.models import AgentRole, LifecycleStage
from core.money import currency_decimals

#: Clock skew tolerated for "now" timestamps sent by other machines.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
_PHONE_CHARS = re.compile(r"^\+?[0-9 ().\-/]{4,30}$")
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_ID = validate.Range(min=1, max=MAX_ID, error="No such id.")

#: The calendar dates are taken from (CONTRACTS "Dates"): a period's end means 00:00 of the
#: next day and reports need the month after, which 9999-12-31 does not have.
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(9998, 12, 31)
DAY_RANGE = validate.Range(
    FIRST_DAY, LAST_DAY,
    error=f"Use a date from {FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()}.")
#: How deep a free-form JSON value (an interaction's payload) may nest. Real payloads are
#: a few levels deep; an unbounded one costs recursion (a Python frame per level) wherever
#: it is copied, validated or serialised again.
MAX_JSON_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_MESSAGE = ("Text may not contain a lone surrogate (\\ud800-\\udfff): it is not "
                     "valid Unicode and cannot be stored.")


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a UTF-16 surrogate code point, which JSON's \\u escapes can
    carry but UTF-8 (and so every database) cannot encode."""
    return not text.isascii() and _SURROGATE.search(text) is not None


class Day(fields.Date):
    """A calendar date from ``FIRST_DAY`` to ``LAST_DAY``."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.validators.insert(0, DAY_RANGE)


class UTCDateTimeField(fields.DateTime):
    """ISO 8601; a naive value means UTC; always returns an aware UTC datetime."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        if isinstance(value, dt.datetime):
            parsed = value
        else:
            parsed = super()._deserialize(value, attr, data, **kwargs)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        try:
            return parsed.astimezone(dt.timezone.utc)
        except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is before year 1 in UTC
            raise ValidationError("Date and time out of range.") from None


class Currency(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        code = str(super()._deserialize(value, attr, data, **kwargs)).strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise ValidationError("Use a three-letter ISO 4217 currency code such as USD.")
        return code


class Phone(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = str(super()._deserialize(value, attr, data, **kwargs)).strip()
        digits = re.sub(r"\D", "", text)
        if not _PHONE_CHARS.match(text) or not 4 <= len(digits) <= 20:
            raise ValidationError("Not a valid phone number (digits, spaces, +, -, parentheses).")
        return text


class Tags(fields.List):
    def __init__(self, **kwargs: Any):
        super().__init__(fields.String(validate=validate.Length(1, 64)), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if isinstance(value, str):  # CSV form: "vip;newsletter"
            value = [v for v in value.split(";")]
        tags = super()._deserialize(value, attr, data, **kwargs)
        seen: dict[str, None] = {}
        for tag in tags:
            clean = tag.strip().lower()
            if clean:
                seen.setdefault(clean, None)
        if len(seen) > 50:
            raise ValidationError("At most 50 tags per customer.")
        return list(seen)


class Attributes(fields.Dict):
    """Free-form attributes: short keys, scalar values."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any
                     ) -> dict[str, Any]:
        result = super()._deserialize(value, attr, data, **kwargs)
        for key, item in result.items():
            if not _KEY.match(str(key)):
                raise ValidationError(
                    f"Attribute key {key!r}: start with a letter; letters, digits, _ only; "
                    f"at most 64 characters.")
            if item is not None and not isinstance(item, (str, int, float, bool)) or (
                    isinstance(item, float) and not math.isfinite(item)):
                raise ValidationError(f"Attribute {key!r}: values must be text, finite "
                                      f"number or boolean.")
            if isinstance(item, str) and len(item) > 1000:
                raise ValidationError(f"Attribute {key!r}: at most 1,000 characters.")
        return result


def _finite_json(value: Any) -> None:
    """No NaN or Infinity anywhere in a JSON document (PostgreSQL's JSONB refuses them), and
    no nesting deeper than ``MAX_JSON_DEPTH``."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValidationError("Numbers must be finite (no NaN or Infinity).")
        if isinstance(item, (dict, list, tuple)) and depth > MAX_JSON_DEPTH:
            raise ValidationError(f"Nested deeper than {MAX_JSON_DEPTH} levels.")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((child, depth + 1) for child in item)


def unstorable_text_fields(data: Any) -> dict[str, list[str]]:
    """Top-level keys of ``data`` whose value holds text no database can store (NUL, a lone
    surrogate), anywhere inside, with the reason: for code that must check a record before
    any of it reaches SQL (an importer looking up references)."""
    return _nul_fields(data)


def _nul_fields(data: Any) -> dict[str, list[str]]:
    """Top-level keys whose value holds text with a NUL character or a lone surrogate,
    anywhere inside."""
    found: dict[str, list[str]] = {}
    if not isinstance(data, dict):
        return found
    for key, value in data.items():
        stack = [key, value]
        while stack:
            item = stack.pop()
            if isinstance(item, str) and "\x00" in item:
                found[str(key)] = ["Text may not contain the NUL character."]
                break
            if isinstance(item, str) and has_surrogate(item):
                found[str(key)] = [SURROGATE_MESSAGE]
                break
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
    return found


class InputSchema(Schema):
    """Base of the input schemas: text with NUL or a lone surrogate (which the databases
    cannot store) is refused as a field error, so an importer rejects the row instead of
    failing the whole run."""

    @pre_load
    def _no_nul(self, data: Any, **kwargs: Any) -> Any:
        errors = _nul_fields(data)
        if errors:
            raise ValidationError(errors)
        return data


def _not_future_date(value: dt.date) -> None:
    if value > dt.date.today():
        raise ValidationError("Birth date cannot be in the future.")
    if value < dt.date(1900, 1, 1):
        raise ValidationError("Birth date before 1900 is not plausible.")


#: Lengths of a contract's renewal period (the sBG model of the churn plugin).
RENEWAL_PERIODS = ("month", "year")


def _plausible_start(value: dt.date) -> None:
    # CONTRACTS "Dates": before 1900 is a typed error; a start after today is a mistake.
    if value < dt.date(1900, 1, 1):
        raise ValidationError("Dates before 1900-01-01 are not accepted.")
    if value > dt.date.today() + dt.timedelta(days=1):
        raise ValidationError("A customer's start date cannot be in the future.")


class CustomerSchema(InputSchema):
    """Input of createCustomer, updateCustomer (partial) and the customer importer."""

    class Meta:
        unknown = RAISE

    name = fields.String(validate=validate.Length(1, 200), allow_none=True)
    email = fields.Email(validate=validate.Length(max=320), allow_none=True)
    phone = Phone(allow_none=True)
    birth_date = fields.Date(validate=_not_future_date, allow_none=True)
    gender = fields.String(validate=validate.Length(1, 40), allow_none=True)
    education = fields.String(validate=validate.Length(1, 80), allow_none=True)
    occupation = fields.String(validate=validate.Length(1, 120), allow_none=True)
    income_band = fields.String(validate=validate.Length(1, 40), allow_none=True)
    country = fields.String(validate=validate.Regexp(
        r"^[A-Za-z]{2}$", error="Use a two-letter ISO 3166 country code such as FR."),
        allow_none=True)
    region = fields.String(validate=validate.Length(1, 120), allow_none=True)
    city = fields.String(validate=validate.Length(1, 120), allow_none=True)
    customer_since = fields.Date(validate=_plausible_start, allow_none=True)
    tenure_periods = fields.Integer(validate=validate.Range(0, 100_000), allow_none=True)
    period = fields.String(validate=validate.OneOf(RENEWAL_PERIODS), allow_none=True)
    tags = Tags()
    attributes = Attributes(keys=fields.String())
    lifecycle_stage = fields.Enum(LifecycleStage, by_value=True)
    owner_id = fields.Integer(allow_none=True, validate=_ID)
    source = fields.String(validate=validate.Length(1, 64))
    external_id = fields.String(validate=validate.Length(1, 200))

    @pre_load
    def _clean_strings(self, data: Any, **kwargs: Any) -> Any:
        """Trim text; an empty cell (CSV) or blank string means "no value"."""
        if not isinstance(data, dict):
            return data
        return {key: (value.strip() or None) if isinstance(value, str) and key != "tags"
                else value for key, value in data.items()}

    @post_load
    def _normalise(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if data.get("country"):
            data["country"] = data["country"].upper()
        return data

    @pre_load
    def _period_case(self, data: Any, **kwargs: Any) -> Any:
        # Exports write "Month", "MONTHLY" or "yearly"; the stored vocabulary is month|year.
        if isinstance(data, dict) and isinstance(data.get("period"), str):
            value = data["period"].strip().lower()
            data = {**data, "period": {"monthly": "month", "yearly": "year",
                                       "annual": "year"}.get(value, value) or None}
        return data

    @validates_schema
    def _identity(self, data: dict[str, Any], partial: Any = None, **kwargs: Any) -> None:
        if ("external_id" in data) != ("source" in data) and "source" in data:
            raise ValidationError("A source needs its external id.", "external_id")
        if partial:
            return
        if not any(data.get(k) for k in ("name", "email", "phone", "external_id")):
            raise ValidationError(
                "Give at least one of name, email, phone or external id.", "name")


class InteractionSchema(InputSchema):
    """One interaction, as recorded by the API, the importer and services.

    ``kinds`` is the registry of interaction kinds (core's plus every plugin's).
    """

    class Meta:
        unknown = RAISE

    customer_id = fields.Integer(required=True, validate=_ID)
    kind = fields.String(required=True)
    channel = fields.String(validate=validate.Length(1, 40), allow_none=True)
    occurred_at = UTCDateTimeField(required=True)
    amount = fields.Decimal(allow_none=True, allow_nan=False)
    currency = Currency(allow_none=True)
    payload = fields.Dict(keys=fields.String(), validate=_finite_json)
    source = fields.String(validate=validate.Length(1, 64), allow_none=True)
    external_id = fields.String(validate=validate.Length(1, 200), allow_none=True)
    refers_to_id = fields.Integer(allow_none=True, validate=_ID)
    agent_id = fields.Integer(allow_none=True, validate=_ID)

    def __init__(self, *, kinds: set[str], monetary_kinds: frozenset[str],
                 now: dt.datetime | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.kinds = kinds
        self.monetary_kinds = monetary_kinds
        self.now = now

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _rules(self, data: dict[str, Any], original: Any, **kwargs: Any) -> None:
        """Cross-field rules; they run even when a field failed, so all problems show at once
        (a field that failed is absent from ``data``: judge presence on ``original``)."""
        errors: dict[str, list[str]] = {}
        sent = original if isinstance(original, dict) else {}
        kind = data.get("kind")
        if kind is not None and (not _KIND.match(kind) or kind not in self.kinds):
            errors.setdefault("kind", []).append(
                f"Unknown interaction kind {kind!r}; known kinds: {', '.join(sorted(self.kinds))}.")
        amount: Decimal | None = data.get("amount")
        currency: str | None = data.get("currency")
        if amount is not None and sent.get("currency") is None:
            errors.setdefault("currency", []).append("An amount needs its currency.")
        if currency is not None and sent.get("amount") is None:
            errors.setdefault("amount", []).append("A currency was given without an amount.")
        if kind in self.monetary_kinds and sent.get("amount") is None:
            errors.setdefault("amount", []).append(f"A {kind} needs an amount.")
        if amount is not None:
            if amount < 0:
                errors.setdefault("amount", []).append(
                    "Amounts are positive; the kind says which way money moved.")
            elif abs(amount) >= Decimal("1e14"):
                errors.setdefault("amount", []).append("Amount is too large.")
            elif currency is not None:
                places = currency_decimals(currency)
                exponent = amount.normalize().as_tuple().exponent
                if isinstance(exponent, int) and -exponent > places:
                    errors.setdefault("amount", []).append(
                        f"{currency} amounts have at most {places} decimal places.")
        if (data.get("external_id") is None) != (data.get("source") is None):
            errors.setdefault("external_id", []).append(
                "source and external id go together (one identifies the other).")
        occurred = data.get("occurred_at")
        now = self.now or dt.datetime.now(dt.timezone.utc)
        if occurred is not None and occurred > now + FUTURE_TOLERANCE:
            errors.setdefault("occurred_at", []).append("occurred_at is in the future.")
        if errors:
            raise ValidationError(errors)


def _not_blank(value: str) -> None:
    if value and not value.strip():  # empty: the length check says so
        raise ValidationError("Cannot be blank.")


class AgentSchema(InputSchema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=[validate.Length(1, 200), _not_blank])
    email = fields.Email(required=True, validate=validate.Length(max=320))
    team = fields.String(validate=[validate.Length(1, 120), _not_blank], allow_none=True)
    role = fields.String(validate=validate.OneOf([r.value for r in AgentRole]),
                         load_default=AgentRole.SERVICE_REPRESENTATIVE.value)


class UpdateAgentSchema(InputSchema):
    """``updateAgent``: only the fields sent change (the e-mail is the agent's identity
    for keys and ``--as``: it does not change here)."""

    class Meta:
        unknown = RAISE

    name = fields.String(validate=[validate.Length(1, 200), _not_blank])
    team = fields.String(validate=[validate.Length(1, 120), _not_blank], allow_none=True)
    role = fields.String(validate=validate.OneOf([r.value for r in AgentRole]))
    active = fields.Boolean()


class ReassignCustomersSchema(InputSchema):
    """``reassignCustomers``: a source (an owner's customers, a list, or both: their
    intersection) and exactly one destination (an agent, or a team's agents); the service
    checks that combination (core.services.staff.reassign_customers)."""

    class Meta:
        unknown = RAISE

    from_owner_id = fields.Integer(allow_none=True, validate=_ID)
    customer_ids = fields.List(fields.Integer(validate=_ID), allow_none=True)
    to_owner_id = fields.Integer(allow_none=True, validate=_ID)
    to_team = fields.String(allow_none=True, validate=validate.Length(1, 120))
    only_active = fields.Boolean(load_default=False)


class AttributeDefinitionSchema(InputSchema):
    class Meta:
        unknown = RAISE

    key = fields.String(required=True, validate=validate.Regexp(
        _KEY, error="Start with a letter; letters, digits and _ only; at most 64 characters."))
    type = fields.String(required=True, validate=validate.OneOf(
        ["number", "text", "boolean", "date", "category"]))
    label = fields.String(required=True, validate=validate.Length(1, 200))
    categories = fields.List(fields.String(validate=validate.Length(1, 100)),
                             validate=validate.Length(1, 200), allow_none=True)

    @validates_schema
    def _categories(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("type") == "category" and not data.get("categories"):
            raise ValidationError("A category attribute lists its categories.", "categories")


def _money_bound(value: Decimal) -> None:
    """A spend bound the Money column can compare with: 0 <= value < 1e14, 4 places."""
    exponent = value.as_tuple().exponent
    if value < 0 or value >= Decimal("1e14"):
        raise ValidationError("Use an amount from 0 to 99,999,999,999,999.")
    if isinstance(exponent, int) and exponent < -MONEY_SCALE and value != value.quantize(
            Decimal(1).scaleb(-MONEY_SCALE)):
        raise ValidationError(f"At most {MONEY_SCALE} decimal places.")


def _attribute_scalar(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, float)):
        try:
            return math.isfinite(float(value))
        except OverflowError:
            return False
    return False


class CustomerFilterSchema(InputSchema):
    """Segment filter: geography, demographics, tags, attributes, dates, behaviour."""

    class Meta:
        unknown = RAISE

    search = fields.String(validate=validate.Length(1, 200))
    # Exact matches through the blind indexes: e-mail and phone are encrypted at rest, so
    # no substring search can reach them.
    email = fields.String(validate=validate.Length(1, 320))
    phone = Phone(validate=validate.Regexp(
        r"^\D*(\d\D*){6,}$", error="Give at least 6 digits: shorter numbers are not indexed."))
    country = fields.List(fields.String(validate=validate.Length(2, 2)))
    region = fields.List(fields.String())
    city = fields.List(fields.String())
    gender = fields.List(fields.String())
    education = fields.List(fields.String())
    occupation = fields.List(fields.String())
    income_band = fields.List(fields.String())
    status = fields.List(fields.String(validate=validate.OneOf(["active", "churned", "erased"])))
    lifecycle_stage = fields.List(fields.Enum(LifecycleStage, by_value=True))
    tags_any = fields.List(fields.String())
    tags_all = fields.List(fields.String())
    attributes = fields.List(fields.Dict(keys=fields.String()))
    born_after = Day()
    born_before = Day()
    created_after = UTCDateTimeField()
    created_before = UTCDateTimeField()
    last_purchase_after = UTCDateTimeField()
    last_purchase_before = UTCDateTimeField()
    min_purchase_count = fields.Integer(validate=validate.Range(min=0))
    max_purchase_count = fields.Integer(validate=validate.Range(min=0))
    min_spend = fields.Decimal(validate=_money_bound, allow_nan=False)
    max_spend = fields.Decimal(validate=_money_bound, allow_nan=False)
    owner_id = fields.Integer()

    @validates_schema
    def _ranges(self, data: dict[str, Any], **kwargs: Any) -> None:
        for low, high in (("min_purchase_count", "max_purchase_count"),
                          ("min_spend", "max_spend"), ("created_after", "created_before"),
                          ("born_after", "born_before"),
                          ("last_purchase_after", "last_purchase_before")):
            if data.get(low) is not None and data.get(high) is not None and data[low] > data[high]:
                raise ValidationError(f"{low} is after {high}: the range is empty.", low)
        for i, item in enumerate(data.get("attributes", [])):
            if set(item) - {"key", "equals", "in", "min", "max"} or "key" not in item:
                raise ValidationError(
                    "An attribute condition has a key and one of equals, in, min, max.",
                    f"attributes.{i}")
            if not isinstance(item["key"], str) or not _KEY.fullmatch(item["key"]):
                raise ValidationError("Not an attribute key.", f"attributes.{i}.key")
            if not _attribute_scalar(item.get("equals")):
                raise ValidationError("Compare with text, a finite number or a boolean.",
                                      f"attributes.{i}.equals")
            for bound in ("min", "max"):
                value = item.get(bound)
                if value is not None and (isinstance(value, bool) or not isinstance(
                        value, (int, float)) or not _attribute_scalar(value)):
                    raise ValidationError("Use a finite number.", f"attributes.{i}.{bound}")


