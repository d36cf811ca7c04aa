"""Webhook tables: endpoints (subscriptions), deliveries (one per event and endpoint) and
their attempts.

A delivery names its event by the outbox row, not by a copy of the envelope: each attempt
builds the body from that row, so what erasure redacts in the outbox is never sent later.
Only a ping, which has no outbox row, keeps its (personal-data-free) envelope.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    Boolean, Enum, ForeignKey, Index, Integer, String, Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.crypto import EncryptedString
from core.db import BigIntPK, JSONDocument, UTCDateTime, db, plugin_table, utcnow

PLUGIN = "webhooks"


def _table_args(*items: Any) -> tuple[Any, ...]:
    return (*items, plugin_table(PLUGIN))


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"        # waiting for its first or next attempt
    DELIVERING = "delivering"  # an attempt is in flight (leased until ``leased_until``)
    SUCCEEDED = "succeeded"    # a 2xx answer
    DEAD = "dead"              # out of attempts, or the endpoint answered 410 Gone
    SKIPPED = "skipped"        # the endpoint was disabled or may no longer read the type


FINAL_STATUSES = (DeliveryStatus.SUCCEEDED, DeliveryStatus.DEAD, DeliveryStatus.SKIPPED)


class AttemptOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Endpoint(db.Model):
    """A subscription: where to POST which event types, signed with which secret."""

    __tablename__ = "webhooks_endpoints"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(String(500))
    #: Patterns: exact types (``complaint.filed``), ``customer.*`` or ``*``.
    event_types: Mapped[list[str]] = mapped_column(JSONDocument)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Signing secrets are encrypted at rest like personal data (``rapport keys rotate``
    #: re-encrypts them): a copy of the database does not let anyone forge deliveries.
    secret: Mapped[str] = mapped_column(EncryptedString())
    #: The secret before the last rotation, still signing until ``previous_secret_until``.
    previous_secret: Mapped[str | None] = mapped_column(EncryptedString())
    previous_secret_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: The creating key's scopes: every delivery checks the event's domain against them.
    scopes: Mapped[list[str]] = mapped_column(JSONDocument)
    created_by: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = _table_args()


class Delivery(db.Model):
    """One event for one endpoint, tried until it succeeds or runs out of attempts."""

    __tablename__ = "webhooks_deliveries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhooks_endpoints.id", ondelete="CASCADE"))
    #: ``webhook-id``: the event id, the same on every attempt.
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(120))
    #: The envelope of a ping (it has no outbox row); other bodies are built from the
    #: outbox row of ``event_id`` at each attempt.
    body: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    status: Mapped[DeliveryStatus] = mapped_column(_enum(DeliveryStatus),
                                                   default=DeliveryStatus.PENDING)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    leased_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_response_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = _table_args(
        # The sender's claim: due deliveries of an endpoint, oldest first.
        Index("ix_webhooks_deliveries_endpoint_id_status_next_attempt_at",
              "endpoint_id", "status", "next_attempt_at"),
        # webhookDeliveries(webhookId, status): newest first.
        Index("ix_webhooks_deliveries_endpoint_id_id", "endpoint_id", "id"),
    )


class Attempt(db.Model):
    """One HTTP request of a delivery and what came of it."""

    __tablename__ = "webhooks_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhooks_deliveries.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    outcome: Mapped[AttemptOutcome] = mapped_column(_enum(AttemptOutcome))
    response_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = _table_args()
