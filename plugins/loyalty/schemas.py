"""marshmallow schemas: every loyalty input (API, CLI, services) is validated here, once."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from core.money import currency_decimals
from core.schemas import Currency, Day, UTCDateTimeField

from plugins.loyalty.models import CapPeriod, Rounding

MAX_POINTS = 1_000_000_000
#: The largest database id (BIGINT): a larger one is no row, not an overflow in the driver.
MAX_ID = 2 ** 63 - 1
_KEY_RULES = validate.Length(1, 200)
_ID_RULES = validate.Range(1, MAX_ID, error="No such id.")


def _places(value: Decimal | None) -> int:
    if value is None:
        return 0
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _window_errors(data: dict[str, Any]) -> dict[str, list[str]]:
    start, end = data.get("valid_from"), data.get("valid_until")
    if start is not None and end is not None and end <= start:
        return {"valid_until": ["The window ends before it starts: validUntil must be after "
                                "validFrom."]}
    return {}


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class EarnRuleSchema(_Strict):
    """An earn rule. ``kinds`` are the registered interaction kinds, ``monetary_kinds``
    those that carry an amount (a rate per unit only makes sense for them)."""

    name = fields.String(required=True, validate=validate.Length(1, 200))
    description = fields.String(allow_none=True, validate=validate.Length(max=2000))
    kind = fields.String(load_default="purchase")
    currency = Currency(allow_none=True)
    points_per_unit = fields.Decimal(allow_none=True, allow_nan=False, validate=validate.Range(
        min=0, min_inclusive=False, max=100_000))
    rounding = fields.Enum(Rounding, by_value=True, load_default=Rounding.DOWN)
    minimum_amount = fields.Decimal(allow_none=True, allow_nan=False,
                                    validate=validate.Range(min=0, max=Decimal("1e12")))
    bonus_points = fields.Integer(allow_none=True, validate=validate.Range(1, 1_000_000))
    cap_points = fields.Integer(allow_none=True, validate=validate.Range(1, MAX_POINTS))
    cap_period = fields.Enum(CapPeriod, by_value=True, allow_none=True)
    expiry_months = fields.Integer(allow_none=True, validate=validate.Range(1, 600))
    valid_from = UTCDateTimeField(required=True)
    valid_until = UTCDateTimeField(allow_none=True)

    def __init__(self, *, kinds: set[str], monetary_kinds: frozenset[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.kinds = kinds
        self.monetary_kinds = monetary_kinds

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _rules(self, data: dict[str, Any], original: Any, **kwargs: Any) -> None:
        errors = _window_errors(data)
        sent = original if isinstance(original, dict) else {}
        kind = data.get("kind")
        if kind == "refund":
            errors.setdefault("kind", []).append(
                "Refunds never earn: they take back what their purchase earned.")
        elif kind is not None and kind not in self.kinds:
            errors.setdefault("kind", []).append(
                f"Unknown interaction kind {kind!r}; known kinds: {', '.join(sorted(self.kinds))}.")
        currency = data.get("currency")
        rate, minimum = data.get("points_per_unit"), data.get("minimum_amount")
        if rate is not None and kind is not None and kind not in self.monetary_kinds:
            errors.setdefault("points_per_unit", []).append(
                f"A {kind} carries no amount: give bonusPoints instead of a rate.")
        if _places(rate) > 4:
            errors.setdefault("points_per_unit", []).append("At most 4 decimal places.")
        if sent.get("currency") is None and (rate is not None or minimum is not None):
            errors.setdefault("currency", []).append(
                "Amounts are in a currency: a rate per unit or a minimum amount needs it.")
        if currency is not None and _places(minimum) > currency_decimals(currency):
            errors.setdefault("minimum_amount", []).append(
                f"{currency} amounts have at most {currency_decimals(currency)} decimal places.")
        if sent.get("points_per_unit") is None and sent.get("bonus_points") is None:
            errors.setdefault("points_per_unit", []).append(
                "Give pointsPerUnit (points per unit of currency) or bonusPoints (points per "
                "interaction), or both.")
        if (data.get("cap_points") is None) != (data.get("cap_period") is None):
            errors.setdefault("cap_period", []).append(
                "capPoints and capPeriod go together (at most N points per period).")
        if errors:
            raise ValidationError(errors)


class TierSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(1, 100))
    threshold_points = fields.Integer(required=True, validate=validate.Range(0, MAX_POINTS))
    window_months = fields.Integer(load_default=12, validate=validate.Range(1, 120))
    discount_percent = fields.Decimal(load_default=Decimal(0), allow_nan=False,
                                      validate=validate.Range(0, 100))
    earn_multiplier = fields.Decimal(load_default=Decimal(1), allow_nan=False,
                                     validate=validate.Range(min=0, min_inclusive=False, max=100))
    benefits = fields.String(allow_none=True, validate=validate.Length(max=2000))

    @validates_schema(skip_on_field_errors=True)
    def _places(self, data: dict[str, Any], **kwargs: Any) -> None:
        if _places(data.get("discount_percent")) > 2:
            raise ValidationError("At most 2 decimal places.", "discount_percent")
        if _places(data.get("earn_multiplier")) > 4:
            raise ValidationError("At most 4 decimal places.", "earn_multiplier")


class RewardSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(1, 200))
    description = fields.String(allow_none=True, validate=validate.Length(max=2000))
    point_cost = fields.Integer(required=True, validate=validate.Range(1, MAX_POINTS))
    stock = fields.Integer(allow_none=True, validate=validate.Range(0, MAX_POINTS))
    valid_from = UTCDateTimeField(allow_none=True)
    valid_until = UTCDateTimeField(allow_none=True)

    @validates_schema(skip_on_field_errors=False)
    def _window(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors = _window_errors(data)
        if errors:
            raise ValidationError(errors)


class _ValueMove(_Strict):
    customer_id = fields.Integer(required=True, validate=_ID_RULES)
    idempotency_key = fields.String(required=True, validate=_KEY_RULES)


class RedeemPointsSchema(_ValueMove):
    points = fields.Integer(required=True, validate=validate.Range(
        1, MAX_POINTS, error="Redeem a positive number of points (at most {max})."))
    reason = fields.String(allow_none=True, validate=validate.Length(1, 500))


class RedeemRewardSchema(_ValueMove):
    reward_id = fields.Integer(required=True, validate=_ID_RULES)
    quantity = fields.Integer(load_default=1, validate=validate.Range(1, 100))
    reason = fields.String(allow_none=True, validate=validate.Length(1, 500))


class AdjustPointsSchema(_ValueMove):
    points = fields.Integer(required=True, validate=validate.Range(-MAX_POINTS, MAX_POINTS))
    reason = fields.String(required=True, validate=validate.Length(1, 500))
    expires_at = UTCDateTimeField(allow_none=True)

    def __init__(self, *, now: dt.datetime, **kwargs: Any):
        super().__init__(**kwargs)
        self.now = now

    @validates_schema(skip_on_field_errors=True)
    def _sign(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["points"] == 0:
            raise ValidationError("An adjustment moves points: give a positive or negative "
                                  "number, not zero.", "points")
        expires = data.get("expires_at")
        if expires is not None:
            if data["points"] < 0:
                raise ValidationError("Only points added can expire.", "expires_at")
            if expires <= self.now:
                raise ValidationError("expiresAt is in the past.", "expires_at")


class ReportPeriodSchema(_Strict):
    """Calendar days in the business time zone, both included."""

    from_ = Day(required=True, data_key="from")
    to = Day(required=True)

    @validates_schema(skip_on_field_errors=True)
    def _range(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["to"] < data["from_"]:
            raise ValidationError("to is before from: the period is empty.", "to")
        if (data["to"] - data["from_"]).days > 3660:
            raise ValidationError("Report at most ten years at once.", "to")
