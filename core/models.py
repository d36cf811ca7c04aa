"""Core tables: customers, their external ids and tags, interactions, staff, alerts, API keys."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean, CheckConstraint, Enum, ForeignKey, Index, String, UniqueConstraint, text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import BigIntPK, JSONDocument, Money, UTCDateTime, db, utcnow


class CustomerStatus(enum.StrEnum):
    ACTIVE = "active"
    CHURNED = "churned"
    ERASED = "erased"


class LifecycleStage(enum.StrEnum):
    """Where the relationship stands (DOMAIN.md: trial customers churn most easily)."""

    PROSPECT = "prospect"
    TRIAL = "trial"
    CUSTOMER = "customer"
    LOYAL = "loyal"
    AT_RISK = "at_risk"
    LAPSED = "lapsed"


class Customer(db.Model):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(40))
    # Normalised copies feed duplicate detection through indexes instead of scans.
    email_normalized: Mapped[str | None] = mapped_column(String(320), index=True)
    phone_normalized: Mapped[str | None] = mapped_column(String(40), index=True)
    name_normalized: Mapped[str | None] = mapped_column(String(200))
    birth_date: Mapped[dt.date | None]
    gender: Mapped[str | None] = mapped_column(String(40))
    education: Mapped[str | None] = mapped_column(String(80))
    occupation: Mapped[str | None] = mapped_column(String(120))
    income_band: Mapped[str | None] = mapped_column(String(40))
    country: Mapped[str | None] = mapped_column(String(2), index=True)
    region: Mapped[str | None] = mapped_column(String(120))
    city: Mapped[str | None] = mapped_column(String(120))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    lifecycle_stage: Mapped[LifecycleStage] = mapped_column(
        Enum(LifecycleStage, native_enum=False, length=20,
             values_callable=lambda e: [m.value for m in e]),
        default=LifecycleStage.CUSTOMER)
    status: Mapped[CustomerStatus] = mapped_column(
        Enum(CustomerStatus, native_enum=False, length=20,
             values_callable=lambda e: [m.value for m in e]),
        default=CustomerStatus.ACTIVE, index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    external_ids: Mapped[list[CustomerExternalId]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", lazy="raise_on_sql")
    tag_rows: Mapped[list[CustomerTag]] = relationship(
        cascade="all, delete-orphan", lazy="raise_on_sql")

    __table_args__ = (
        Index("ix_customers_city_name", "city", "name_normalized"),
        # Keyset pages of customers(orderBy: CREATED_AT | NAME): (sort value, id), with the
        # expression exactly as api/queries.py sorts by it (core_0002). The expression index
        # is PostgreSQL's only: SQLite cannot reflect it, which breaks schema comparison.
        Index("ix_customers_created_at_id", "created_at", "id"),
        Index("ix_customers_name_sort", text("coalesce(name_normalized, '')"), "id"
              ).ddl_if(dialect="postgresql"),
    )

    def __repr__(self) -> str:
        return f"<Customer {self.id} {self.name!r}>"


class CustomerExternalId(db.Model):
    """The id a source application uses for the customer (unique per source)."""

    __tablename__ = "customer_external_ids"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(200))

    customer: Mapped[Customer] = relationship(back_populates="external_ids")

    __table_args__ = (UniqueConstraint("source", "external_id"),)


class CustomerTag(db.Model):
    __tablename__ = "customer_tags"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class AttributeType(enum.StrEnum):
    NUMBER = "number"
    TEXT = "text"
    BOOLEAN = "boolean"
    DATE = "date"
    CATEGORY = "category"


class CustomerAttributeDefinition(db.Model):
    """A declared custom attribute: typed, labelled, usable as a segment or model feature."""

    __tablename__ = "customer_attribute_definitions"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[AttributeType] = mapped_column(
        Enum(AttributeType, native_enum=False, length=20,
             values_callable=lambda e: [m.value for m in e]))
    label: Mapped[str] = mapped_column(String(200))
    categories: Mapped[list[str] | None] = mapped_column(JSONDocument)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Interaction(db.Model):
    """One event of the customer's history; the stream every plugin learns from."""

    __tablename__ = "interactions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str | None] = mapped_column(String(40))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    amount: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str | None] = mapped_column(String(3))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    source: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(200))
    refers_to_id: Mapped[int | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        # The timeline and RFM read a customer's events newest first.
        Index("ix_interactions_customer_time", "customer_id", "occurred_at", "id"),
        Index("ix_interactions_kind_time", "kind", "occurred_at"),
        # Refunds look up their purchase, and deleting a purchase clears its refunds'
        # reference (ON DELETE SET NULL): without an index each delete scans the table.
        Index("ix_interactions_refers_to_id", "refers_to_id"),
        UniqueConstraint("source", "external_id"),
        CheckConstraint("(amount IS NULL) = (currency IS NULL)", name="amount_has_currency"),
    )


class Agent(db.Model):
    """A staff member: actor, assignee, customer owner."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    team: Mapped[str | None] = mapped_column(String(120))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(db.Model):
    """A stored notice raised by any plugin through core (spikes, escalations, churn jumps)."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    severity: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"))
    status: Mapped[AlertStatus] = mapped_column(
        Enum(AlertStatus, native_enum=False, length=20,
             values_callable=lambda e: [m.value for m in e]),
        default=AlertStatus.OPEN, index=True)
    raised_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"))


class ApiKey(db.Model):
    """An API client's key. Only a SHA-256 digest of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(120))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSONDocument)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


__all__ = [
    "Agent", "Alert", "AlertStatus", "ApiKey", "AttributeType", "Customer",
    "CustomerAttributeDefinition", "CustomerExternalId", "CustomerStatus", "CustomerTag",
    "Interaction", "LifecycleStage",
]
