"""The loyalty plugin's rule action ``loyalty.adjust_points`` (``rapport_rule_actions``):
a rule gives (or takes) points to the customer of the event it reacts to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates

from core.errors import ErrorCode, UserError
from core.ids import global_id, parse_id
from core.rules import RuleAction, RuleContext

from plugins.loyalty import service
from plugins.loyalty.schemas import MAX_POINTS


class AdjustPointsParameters(Schema):
    points = fields.Integer(required=True, strict=True,
                            validate=validate.Range(-MAX_POINTS, MAX_POINTS))
    reason = fields.String(load_default="rule", validate=validate.Length(1, 500))

    @validates("points")
    def _moves(self, value: int, **kwargs: Any) -> None:
        if value == 0:
            raise ValidationError("Give a positive or negative number of points.")


def adjust_points(event: Mapping[str, Any], parameters: dict[str, Any], context: RuleContext
                  ) -> dict[str, Any]:
    """Adjust the event's customer's points once per (rule, event): the idempotency key is
    made of both, so a run resumed after a crash never moves the points twice."""
    try:
        customer_id = parse_id(str((event.get("data") or {}).get("customerId")), "Customer")
    except ValueError:
        raise UserError.single("The event names no customer.", ErrorCode.INVALID,
                               "customerId") from None
    entry = service.adjust_points({
        "customer_id": customer_id, "points": parameters["points"],
        "reason": parameters["reason"],
        "idempotency_key": f"rule:{context.rule_id}:{event['id']}"})
    return {"entryId": global_id("LoyaltyLedgerEntry", entry.id)}


RULE_ACTIONS = [RuleAction(
    name="loyalty.adjust_points", domain="loyalty", parameters=AdjustPointsParameters,
    function=adjust_points,
    description="Give (positive points) or take (negative) points from the event's "
                "customer, with a reason (default \"rule\").")]
