"""marshmallow schemas: every complaints input (API, CLI, services) is validated here, once.

Types and channels are checked against the registries in the service (they carry their
own error codes, UNKNOWN_TYPE / UNKNOWN_CHANNEL); everything else is checked here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from core.db import MAX_ID
from core.schemas import FUTURE_TOLERANCE, Day, Tags, UTCDateTimeField

from plugins.complaints.config import CAUSES
from plugins.complaints.models import ComplaintStatus, Severity
from plugins.complaints.workflow import Transition

_ID = validate.Range(1, MAX_ID, error="No such id.")
_CODE = validate.Regexp(r"^[a-z][a-z0-9_]{0,39}$",
                        error="Use a lowercase code such as product_quality.")
_TEXT = validate.Length(1, 10_000)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class FileComplaintSchema(_Strict):
    customer_id = fields.Integer(required=True, strict=True, validate=_ID)
    type = fields.String(required=True, validate=_CODE)
    channel = fields.String(required=True, validate=_CODE)
    severity = fields.Enum(Severity, by_value=True, load_default=Severity.MEDIUM)
    subject = fields.String(required=True, validate=validate.Length(1, 200))
    description = fields.String(allow_none=True, validate=_TEXT)
    reference = fields.String(allow_none=True, validate=validate.Length(1, 200))
    assignee_id = fields.Integer(allow_none=True, strict=True, validate=_ID)
    tags = Tags(load_default=list)
    filed_at = UTCDateTimeField(allow_none=True)
    record_interaction = fields.Boolean(load_default=True)

    def __init__(self, *, now: dt.datetime, **kwargs: Any):
        super().__init__(**kwargs)
        self.now = now

    @validates_schema
    def _not_future(self, data: dict[str, Any], **kwargs: Any) -> None:
        filed = data.get("filed_at")
        if filed is not None and filed > self.now + FUTURE_TOLERANCE:
            raise ValidationError("A complaint cannot be filed in the future.", "filed_at")


class TransitionSchema(_Strict):
    id = fields.Integer(required=True, strict=True, validate=_ID)
    to = fields.Enum(Transition, by_value=True, required=True)
    note = fields.String(allow_none=True, validate=_TEXT)
    type = fields.String(allow_none=True, validate=_CODE)
    cause = fields.String(allow_none=True, validate=validate.OneOf(
        CAUSES, error=f"Use one of: {', '.join(CAUSES)}."))
    root_cause = fields.String(allow_none=True, validate=_TEXT)
    solution = fields.String(allow_none=True, validate=_TEXT)
    satisfaction = fields.Integer(allow_none=True, strict=True, validate=validate.Range(
        1, 5, error="Satisfaction is a score from 1 to 5."))
    customer_resolved = fields.Boolean(allow_none=True)
    reason = fields.String(allow_none=True, validate=_TEXT)


class AssignSchema(_Strict):
    id = fields.Integer(required=True, strict=True, validate=_ID)
    assignee_id = fields.Integer(required=True, allow_none=True, strict=True, validate=_ID)
    note = fields.String(allow_none=True, validate=_TEXT)


class NoteSchema(_Strict):
    id = fields.Integer(required=True, strict=True, validate=_ID)
    note = fields.String(required=True, validate=_TEXT)


class ComplaintFilterSchema(_Strict):
    status = fields.List(fields.Enum(ComplaintStatus, by_value=True), allow_none=True)
    type = fields.List(fields.String(validate=_CODE), allow_none=True)
    severity = fields.List(fields.Enum(Severity, by_value=True), allow_none=True)
    overdue = fields.Boolean(allow_none=True)
    customer_id = fields.Integer(allow_none=True, strict=True, validate=_ID)
    assignee_id = fields.Integer(allow_none=True, strict=True, validate=_ID)
    filed_from = UTCDateTimeField(allow_none=True)
    filed_to = UTCDateTimeField(allow_none=True)

    @validates_schema
    def _range(self, data: dict[str, Any], **kwargs: Any) -> None:
        start, end = data.get("filed_from"), data.get("filed_to")
        if start is not None and end is not None and end < start:
            raise ValidationError("The range ends before it starts.", "filed_to")


class StatsSchema(_Strict):
    period_from = Day(required=True, data_key="from")
    period_to = Day(required=True, data_key="to")
    group_by = fields.String(load_default="type", validate=validate.OneOf(
        ("type", "channel", "severity", "assignee", "month")))

    @validates_schema
    def _range(self, data: dict[str, Any], **kwargs: Any) -> None:
        start, end = data.get("period_from"), data.get("period_to")
        if start is not None and end is not None:
            if end < start:
                raise ValidationError("The period ends before it starts.", "to")
            if (end - start).days > 3660:
                raise ValidationError("At most ten years per report.", "to")


class SlaPolicySchema(_Strict):
    severity = fields.Enum(Severity, by_value=True, required=True)
    first_response_hours = fields.Integer(required=True, strict=True,
                                          validate=validate.Range(1, 24 * 365))
    resolution_hours = fields.Integer(required=True, strict=True,
                                      validate=validate.Range(1, 24 * 365))
    business_hours = fields.Boolean(load_default=True)

    @validates_schema
    def _ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        first, resolution = data.get("first_response_hours"), data.get("resolution_hours")
        if first is not None and resolution is not None and resolution < first:
            raise ValidationError("The resolution target cannot come before the first "
                                  "response target.", "resolution_hours")
