"""Marshmallow schemas of the survey definitions and responses (API, CLI, services).

The structure of a survey (keys, types, scales, options) is checked here; what depends on
the stored survey (its state, the answers against its questions) is checked in
``service`` and ``answers``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, ValidationError, fields, validate, validates_schema

from core.db import MAX_ID
from core.schemas import InputSchema, UTCDateTimeField

from plugins.surveys.models import QuestionType

_ID = validate.Range(1, MAX_ID, error="No such id.")
KEY = validate.Regexp(r"^[a-z][a-z0-9_]{0,39}$",
                      error="Use a lowercase key such as q1 or delivery_speed.")
_TEXT = validate.Length(1, 10_000)
MAX_QUESTIONS = 200
MAX_OPTIONS = 100
MAX_SCALES = 50
NPS_MIN, NPS_MAX = 0, 10


class _Strict(InputSchema):
    class Meta:
        unknown = RAISE


class OptionSchema(_Strict):
    key = fields.String(required=True, validate=KEY)
    label = fields.String(required=True, validate=validate.Length(1, 200))


class LabelSchema(_Strict):
    value = fields.Integer(required=True, strict=True)
    label = fields.String(required=True, validate=validate.Length(1, 200))


def _check_labels(labels: list[dict[str, Any]], low: int, high: int) -> None:
    """Each label names a point of the scale, once (a second label for a point would
    silently replace the first)."""
    seen: set[int] = set()
    for index, label in enumerate(labels):
        if not low <= label["value"] <= high:
            raise ValidationError({"labels": {index: {"value": [
                f"Not a point of the scale {low}..{high}."]}}})
        if label["value"] in seen:
            raise ValidationError({"labels": {index: {"value": [
                f"The point {label['value']} is labelled twice."]}}})
        seen.add(label["value"])


class QuestionSchema(_Strict):
    key = fields.String(required=True, validate=KEY)
    text = fields.String(required=True, validate=_TEXT)
    type = fields.Enum(QuestionType, by_value=True, required=True)
    required = fields.Boolean(load_default=False)
    scale_min = fields.Integer(allow_none=True, strict=True, validate=validate.Range(-100, 100))
    scale_max = fields.Integer(allow_none=True, strict=True, validate=validate.Range(-100, 100))
    labels = fields.List(fields.Nested(LabelSchema), load_default=list,
                         validate=validate.Length(max=101))
    options = fields.List(fields.Nested(OptionSchema), load_default=list,
                          validate=validate.Length(max=MAX_OPTIONS))

    @validates_schema
    def _by_type(self, data: dict[str, Any], **kwargs: Any) -> None:
        kind = data.get("type")
        low, high = data.get("scale_min"), data.get("scale_max")
        if kind is QuestionType.RATING:
            if low is None or high is None:
                raise ValidationError("A RATING question needs scaleMin and scaleMax.",
                                      "scale_max" if low is not None else "scale_min")
            if high <= low:
                raise ValidationError("scaleMax must be above scaleMin.", "scale_max")
            if high - low > 100:
                raise ValidationError("At most 101 scale points.", "scale_max")
            _check_labels(data.get("labels") or [], low, high)
        elif low is not None or high is not None or data.get("labels"):
            if kind is not QuestionType.NPS or (low, high) not in ((None, None),
                                                                   (NPS_MIN, NPS_MAX)):
                raise ValidationError("Only RATING questions take a scale; NPS is always 0-10.",
                                      "scale_min")
            _check_labels(data.get("labels") or [], NPS_MIN, NPS_MAX)
        if kind in (QuestionType.SINGLE_CHOICE, QuestionType.MULTI_CHOICE):
            options = data.get("options") or []
            if len(options) < 2:
                raise ValidationError("A choice question needs at least two options.",
                                      "options")
            keys = [o["key"] for o in options]
            if len(set(keys)) != len(keys):
                raise ValidationError("Option keys must be unique within the question.",
                                      "options")
        elif data.get("options"):
            raise ValidationError("Only choice questions take options.", "options")


class ScaleItemSchema(_Strict):
    key = fields.String(required=True, validate=KEY)
    reverse = fields.Boolean(load_default=False)


class ScaleSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(1, 100))
    items = fields.List(fields.Nested(ScaleItemSchema), required=True,
                        validate=validate.Length(2, MAX_QUESTIONS,
                                                 error="A scale groups at least two items."))


class SurveyDefinitionSchema(_Strict):
    """createSurvey and updateSurvey (partial); questions and scales replace the old ones."""

    title = fields.String(required=True, validate=validate.Length(1, 200))
    description = fields.String(allow_none=True, validate=_TEXT)
    anonymous = fields.Boolean(load_default=False)
    overall_question_key = fields.String(allow_none=True, validate=KEY)
    questions = fields.List(fields.Nested(QuestionSchema),
                            validate=validate.Length(max=MAX_QUESTIONS))
    scales = fields.List(fields.Nested(ScaleSchema), validate=validate.Length(max=MAX_SCALES))

    @validates_schema
    def _consistent(self, data: dict[str, Any], partial: Any = None, **kwargs: Any) -> None:
        if "questions" not in data and "scales" not in data:
            return  # an update of the title or description only
        questions = data.get("questions") or []
        types: dict[str, QuestionType] = {}
        for index, question in enumerate(questions):
            if question["key"] in types:
                raise ValidationError({"questions": {index: {"key": [
                    f"The key {question['key']!r} is used twice."]}}})
            types[question["key"]] = question["type"]
        numeric = (QuestionType.NPS, QuestionType.RATING)
        overall = data.get("overall_question_key")
        if overall is not None and types.get(overall) not in numeric:
            raise ValidationError("Name an NPS or RATING question of this survey.",
                                  "overall_question_key")
        names: set[str] = set()
        for s_index, scale in enumerate(data.get("scales") or []):
            if scale["name"] in names:
                raise ValidationError({"scales": {s_index: {"name": ["Used twice."]}}})
            names.add(scale["name"])
            seen: set[str] = set()
            for i_index, item in enumerate(scale["items"]):
                if types.get(item["key"]) is not QuestionType.RATING:
                    raise ValidationError({"scales": {s_index: {"items": {i_index: {"key": [
                        "Name a RATING question of this survey."]}}}}})
                if item["key"] in seen:
                    raise ValidationError({"scales": {s_index: {"items": {i_index: {"key": [
                        "The item is in the scale twice."]}}}}})
                seen.add(item["key"])


class AnswerSchema(_Strict):
    key = fields.String(required=True, validate=validate.Length(1, 40))
    value = fields.Raw(required=True, allow_none=True)


class ResponseSchema(_Strict):
    survey_id = fields.Integer(required=True, strict=True, validate=_ID)
    customer_id = fields.Integer(allow_none=True, strict=True, validate=_ID)
    token = fields.String(allow_none=True, validate=validate.Length(1, 200))
    submitted_at = UTCDateTimeField(allow_none=True)
    source = fields.String(allow_none=True, validate=validate.Length(1, 64))
    external_id = fields.String(allow_none=True, validate=validate.Length(1, 200))
    answers = fields.List(fields.Nested(AnswerSchema), required=True,
                          validate=validate.Length(max=MAX_QUESTIONS))

    @validates_schema
    def _pair(self, data: dict[str, Any], **kwargs: Any) -> None:
        if (data.get("source") is None) != (data.get("external_id") is None):
            raise ValidationError("Give source and externalId together.", "external_id")
