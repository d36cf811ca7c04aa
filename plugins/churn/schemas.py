"""marshmallow schemas: every churn input (API, CLI, services) is validated here, once.

Churn types and reasons arrive as text from the CSV importer and as enum values from
GraphQL; they are checked by the service against the enums so that an unknown value gets
its own code (UNKNOWN_TYPE / UNKNOWN_REASON) rather than a generic INVALID.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from marshmallow import RAISE, ValidationError, fields, pre_load, validate, validates_schema

from core.db import MAX_ID
from core.schemas import InputSchema, UTCDateTimeField

from plugins.churn.models import WinbackOutcome, WinbackStrategy

_ID = validate.Range(1, MAX_ID, error="No such id.")
_TEXT = validate.Length(1, 10_000)


class _Strict(InputSchema):
    class Meta:
        unknown = RAISE


class _Lowercase(fields.String):
    """Vocabulary codes: GraphQL sends NATURAL, a CSV may say natural or Natural."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return str(super()._deserialize(value, attr, data, **kwargs)).strip().lower()


class MarkChurnedSchema(_Strict):
    customer_id = fields.Integer(required=True, strict=True, validate=_ID)
    type = _Lowercase(required=True, validate=validate.Length(1, 40))
    reason = _Lowercase(required=True, validate=validate.Length(1, 40))
    churned_at = UTCDateTimeField(allow_none=True)
    note = fields.String(allow_none=True, validate=_TEXT)


class ReactivateSchema(_Strict):
    customer_id = fields.Integer(required=True, strict=True, validate=_ID)
    reactivated_at = UTCDateTimeField(allow_none=True)
    reason = fields.String(allow_none=True, validate=validate.Length(1, 200))


class CampaignSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(1, 200))
    strategy = fields.Enum(WinbackStrategy, by_value=True, required=True)
    description = fields.String(allow_none=True, validate=_TEXT)
    started_at = UTCDateTimeField(allow_none=True)
    ended_at = UTCDateTimeField(allow_none=True)

    @pre_load
    def _strip_name(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            data = {**data, "name": data["name"].strip()}
        return data

    @validates_schema
    def _ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        start, end = data.get("started_at"), data.get("ended_at")
        if start is not None and end is not None and end < start:
            raise ValidationError("A campaign cannot end before it starts.", "ended_at")


class AttemptSchema(_Strict):
    campaign_id = fields.Integer(required=True, strict=True, validate=_ID)
    customer_id = fields.Integer(required=True, strict=True, validate=_ID)
    attempted_at = UTCDateTimeField(allow_none=True)
    note = fields.String(allow_none=True, validate=_TEXT)
    outcome = fields.Enum(WinbackOutcome, by_value=True, load_default=WinbackOutcome.PENDING)
    resolved_at = UTCDateTimeField(allow_none=True)


class ResolveAttemptSchema(_Strict):
    id = fields.Integer(required=True, strict=True, validate=_ID)
    outcome = fields.Enum(WinbackOutcome, by_value=True, required=True)
    resolved_at = UTCDateTimeField(allow_none=True)
    note = fields.String(allow_none=True, validate=_TEXT)


#: Report periods stay well inside Python's calendar: a month's end in RAPPORT_TIMEZONE is
#: computed for ``to`` (9999-12-31 has no next month) and 0001-01-01 in a zone east of UTC
#: is before year 1 in UTC.
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(9998, 12, 31)
_DAY = validate.Range(FIRST_DAY, LAST_DAY,
                      error=f"Use a date from {FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()}.")


class PeriodSchema(_Strict):
    """``from`` .. ``to``: whole days in RAPPORT_TIMEZONE, ``to`` included."""

    period_from = fields.Date(required=True, data_key="from", validate=_DAY)
    period_to = fields.Date(required=True, data_key="to", validate=_DAY)

    @validates_schema
    def _ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "period_from" not in data or "period_to" not in data:
            return  # a field error is reported already
        if data["period_to"] < data["period_from"]:
            raise ValidationError("to is before from.", "to")
        if (data["period_to"] - data["period_from"]).days > 366 * 10:
            raise ValidationError("A period of at most ten years.", "to")
