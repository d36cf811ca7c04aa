"""Surveys tables: surveys, their questions and scales, and the responses.

Anonymity is a property of the schema, not a convention of the code: every response row
repeats its survey's ``anonymous`` flag, held equal to the survey's by the composite
foreign key ``(survey_id, anonymous) -> surveys_survey (id, anonymous)``, and a CHECK
forbids a customer on an anonymous response. The foreign key has no ON UPDATE action,
so flipping a survey's flag while it has responses is refused by the database itself.

A response stores its answers as three JSON documents keyed by question key: numbers
(NPS and RATING), choices (an option key, or a list of keys) and texts. The analysis
reads one row per response instead of one row per answer (see docs/surveys.md for the
measurements that chose this layout).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    Boolean, CheckConstraint, Enum, ForeignKey, ForeignKeyConstraint, Index, Integer, String,
    Text, UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import BigIntPK, JSONDocument, UTCDateTime, db, plugin_table, utcnow

PLUGIN = "surveys"


def _table_args(*items: Any) -> tuple[Any, ...]:
    return (*items, plugin_table(PLUGIN))


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class SurveyState(enum.StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    CLOSED = "closed"


class QuestionType(enum.StrEnum):
    NPS = "nps"                      # 0..10
    RATING = "rating"                # scale_min..scale_max, integer steps
    SINGLE_CHOICE = "single_choice"  # one option key
    MULTI_CHOICE = "multi_choice"    # a set of option keys
    TEXT = "text"


NUMERIC_TYPES = (QuestionType.NPS, QuestionType.RATING)
CHOICE_TYPES = (QuestionType.SINGLE_CHOICE, QuestionType.MULTI_CHOICE)


class Survey(db.Model):
    __tablename__ = "surveys_survey"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    state: Mapped[SurveyState] = mapped_column(_enum(SurveyState), default=SurveyState.DRAFT)
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The secret an anonymous submission must present (anonymous surveys only).
    collection_token: Mapped[str | None] = mapped_column(String(64))
    #: Key of the overall-satisfaction question (an NPS or RATING question), if any.
    overall_question_key: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    opened_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = _table_args(
        # The target of the responses' composite foreign key.
        UniqueConstraint("id", "anonymous", name="uq_surveys_survey_id_anonymous"),
        Index("ix_surveys_survey_created", "created_at", "id"),
        CheckConstraint("(anonymous AND collection_token IS NOT NULL) OR "
                        "(NOT anonymous AND collection_token IS NULL)",
                        name="token_iff_anonymous"),
    )


class Question(db.Model):
    __tablename__ = "surveys_question"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys_survey.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(40))
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    type: Mapped[QuestionType] = mapped_column(_enum(QuestionType))
    required: Mapped[bool] = mapped_column(Boolean, default=False)
    scale_min: Mapped[int | None] = mapped_column(Integer)
    scale_max: Mapped[int | None] = mapped_column(Integer)
    #: RATING: labels of scale points, e.g. {"1": "Very poor", "5": "Excellent"}.
    labels: Mapped[dict[str, str]] = mapped_column(JSONDocument, default=dict)
    #: Choice questions: [{"key": "price", "label": "Price"}, ...] in display order.
    options: Mapped[list[dict[str, str]]] = mapped_column(JSONDocument, default=list)

    __table_args__ = _table_args(
        UniqueConstraint("survey_id", "key", name="uq_surveys_question_survey_key"),
        CheckConstraint("scale_min IS NULL OR scale_max > scale_min", name="scale_ordered"),
    )


class Scale(db.Model):
    """A named group of RATING / NPS items scored together (Cronbach's alpha)."""

    __tablename__ = "surveys_scale"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys_survey.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    #: [{"key": "q3", "reverse": false}, ...]
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)

    __table_args__ = _table_args(
        UniqueConstraint("survey_id", "name", name="uq_surveys_scale_survey_name"))


class Response(db.Model):
    __tablename__ = "surveys_response"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    survey_id: Mapped[int] = mapped_column(BigIntPK)
    #: Always equal to the survey's flag (composite foreign key).
    anonymous: Mapped[bool] = mapped_column(Boolean)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    submitted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(200))
    #: NPS and RATING answers: {question key: number}.
    numbers: Mapped[dict[str, float]] = mapped_column(JSONDocument, default=dict)
    #: Choice answers: {question key: option key (single) | [option keys] (multi)}.
    choices: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    #: TEXT answers: {question key: text}; cleared when the customer is erased.
    texts: Mapped[dict[str, str]] = mapped_column(JSONDocument, default=dict)

    __table_args__ = _table_args(
        ForeignKeyConstraint(["survey_id", "anonymous"],
                             ["surveys_survey.id", "surveys_survey.anonymous"],
                             name="fk_surveys_response_survey_anonymous"),
        CheckConstraint("NOT anonymous OR customer_id IS NULL", name="anonymous_no_customer"),
        CheckConstraint("(source IS NULL) = (external_id IS NULL)", name="external_key_pair"),
        UniqueConstraint("survey_id", "source", "external_id",
                         name="uq_surveys_response_external"),
        Index("ix_surveys_response_survey", "survey_id", "submitted_at", "id"),
        Index("ix_surveys_response_customer", "customer_id", "submitted_at", "id"),
    )
