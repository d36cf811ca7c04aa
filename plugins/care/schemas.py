"""marshmallow schemas: every care input is validated here, once.

Ids are database ids (the GraphQL layer decodes global ids first); dates are calendar
days. Rule conditions and actions are checked for shape here and against the event
catalogue and the registered actions in ``rules`` (they need the app).
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate

from core.db import MAX_ID
from core.ids import parse_id
from core.schemas import Day, InputSchema

from plugins.care.models import TaskKind, TaskStatus

_ID = validate.Range(1, MAX_ID, error="No such id.")
_TITLE = validate.Length(1, 200)
_NOTE = validate.Length(0, 5000)
_KINDS = [k.value for k in TaskKind]
MAX_CONDITIONS = 20
MAX_ACTIONS = 10
#: Condition operators: equality, membership, order (numbers and Decimal strings compare
#: as numbers, other values as text) and presence.
OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists")


class CreateTaskSchema(InputSchema):
    customer_id = fields.Integer(strict=True, allow_none=True, validate=_ID)
    assignee_id = fields.Integer(strict=True, allow_none=True, validate=_ID)
    kind = fields.String(required=True, validate=validate.OneOf(_KINDS))
    title = fields.String(required=True, validate=_TITLE)
    due_on = Day(required=True)


class UpdateTaskSchema(InputSchema):
    id = fields.Integer(required=True, strict=True, validate=_ID)
    assignee_id = fields.Integer(strict=True, validate=_ID)
    kind = fields.String(validate=validate.OneOf(_KINDS))
    title = fields.String(validate=_TITLE)
    due_on = Day()


class CloseTaskSchema(InputSchema):
    id = fields.Integer(required=True, strict=True, validate=_ID)
    outcome = fields.String(allow_none=True, validate=_NOTE)


class TaskFilterSchema(InputSchema):
    assignee_id = fields.Integer(strict=True, validate=_ID)
    customer_id = fields.Integer(strict=True, validate=_ID)
    status = fields.List(fields.String(validate=validate.OneOf([s.value for s in TaskStatus])))
    due_before = Day()


class ConditionSchema(InputSchema):
    field = fields.String(required=True, validate=validate.Regexp(
        r"^[A-Za-z][A-Za-z0-9_]{0,63}$", error="Name a field of the event's data."))
    op = fields.String(required=True, validate=validate.OneOf(OPERATORS))
    value = fields.Raw(allow_none=True)


class ActionSchema(InputSchema):
    action = fields.String(required=True, validate=validate.Regexp(
        r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$", error="Name an action of ruleActions."))
    parameters = fields.Dict(keys=fields.String(), load_default=dict)


class CreateRuleSchema(InputSchema):
    name = fields.String(required=True, validate=_TITLE)
    event_type = fields.String(required=True, validate=validate.Length(1, 120))
    conditions = fields.List(fields.Nested(ConditionSchema), load_default=list,
                             validate=validate.Length(0, MAX_CONDITIONS))
    actions = fields.List(fields.Nested(ActionSchema), required=True,
                          validate=validate.Length(1, MAX_ACTIONS))
    enabled = fields.Boolean(load_default=True)


class UpdateRuleSchema(InputSchema):
    id = fields.Integer(required=True, strict=True, validate=_ID)
    name = fields.String(validate=_TITLE)
    event_type = fields.String(validate=validate.Length(1, 120))
    conditions = fields.List(fields.Nested(ConditionSchema),
                             validate=validate.Length(0, MAX_CONDITIONS))
    actions = fields.List(fields.Nested(ActionSchema), validate=validate.Length(1, MAX_ACTIONS))
    enabled = fields.Boolean()


class IdSchema(InputSchema):
    id = fields.Integer(required=True, strict=True, validate=_ID)


class AgentRef(fields.Field):
    """An agent's global id (or database id) in a rule's stored JSON parameters."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ValidationError("Give an Agent id.")
        try:
            return parse_id(value, "Agent")
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class CreateTaskActionSchema(InputSchema):
    """Parameters of ``care.create_task``: the task for the event's customer."""

    kind = fields.String(load_default="follow_up", validate=validate.OneOf(_KINDS))
    title = fields.String(required=True, validate=_TITLE)
    due_in_days = fields.Integer(data_key="dueInDays", strict=True, load_default=3,
                                 validate=validate.Range(0, 365))
    assignee_id = AgentRef(data_key="assigneeId", allow_none=True)


SEVERITIES = ("info", "low", "medium", "high", "critical")


class OpenIncidentSchema(InputSchema):
    """Open an incident by hand, or from an alert (its kind and severity are the
    defaults)."""

    alert_id = fields.Integer(strict=True, allow_none=True, validate=_ID)
    title = fields.String(validate=_TITLE)
    kind = fields.String(validate=validate.Regexp(
        r"^[a-z][a-z0-9_]{0,63}$", error="A lower-case code (product_recall, outage...)."))
    severity = fields.String(validate=validate.OneOf(SEVERITIES))
    owner_id = fields.Integer(strict=True, allow_none=True, validate=_ID)
    note = fields.String(allow_none=True, validate=_NOTE)


class AdvanceIncidentSchema(InputSchema):
    id = fields.Integer(required=True, strict=True, validate=_ID)
    note = fields.String(allow_none=True, validate=_NOTE)
    review = fields.String(allow_none=True, validate=validate.Length(1, 20_000))


class OpenIncidentActionSchema(InputSchema):
    """Parameters of ``care.open_incident`` (a rule on ``alert.raised``)."""

    owner_id = AgentRef(data_key="ownerId", allow_none=True)
