"""marshmallow schemas: every webhooks input is validated here, once.

URLs are checked for safe targets and event-type patterns against the catalogue and the
caller's scopes in the service (they need the app's settings); the shapes are checked here.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from core.db import MAX_ID

_ID = validate.Range(1, MAX_ID, error="No such id.")
_PATTERN = validate.Regexp(r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$",
                           error="Use an event type (complaint.filed), a prefix with a "
                                 "wildcard (customer.*) or *.")
#: Overlap of a rotated secret: at most a week.
MAX_OVERLAP_SECONDS = 7 * 24 * 3600


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _patterns(required: bool) -> fields.List:
    return fields.List(fields.String(validate=_PATTERN), required=required,
                       validate=validate.Length(1, 100, error="Name 1 to 100 event types."))


class CreateWebhookSchema(_Strict):
    url = fields.String(required=True, validate=validate.Length(1, 2000))
    event_types = _patterns(required=True)
    active = fields.Boolean(load_default=True)
    description = fields.String(allow_none=True, validate=validate.Length(0, 500))


class UpdateWebhookSchema(_Strict):
    id = fields.Integer(required=True, strict=True, validate=_ID)
    url = fields.String(validate=validate.Length(1, 2000))
    event_types = _patterns(required=False)
    active = fields.Boolean()
    description = fields.String(allow_none=True, validate=validate.Length(0, 500))


class RotateSecretSchema(_Strict):
    id = fields.Integer(required=True, strict=True, validate=_ID)
    overlap_seconds = fields.Integer(strict=True, allow_none=True,
                                     validate=validate.Range(0, MAX_OVERLAP_SECONDS))


class IdSchema(_Strict):
    id = fields.Integer(required=True, strict=True, validate=_ID)
