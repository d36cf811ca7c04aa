"""Core tables: customers, their external ids and tags, interactions, staff, alerts, API keys."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, Enum, ForeignKey, Index, String, UniqueConstraint, text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.crypto import EncryptedString
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
    # Encrypted at rest (core/crypto.py). Their blind indexes (HMAC of the normalised
    # value) serve exact look-up and duplicate detection through indexes, without the values.
    email: Mapped[str | None] = mapped_column(EncryptedString())
    phone: Mapped[str | None] = mapped_column(EncryptedString())
    email_blind_index: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_blind_index: Mapped[str | None] = mapped_column(String(64), index=True)
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
    # The customer's own start (a contract's first day), when it predates the record:
    # tenure and time-aware churn features count from it (00:00 in RAPPORT_TIMEZONE).
    customer_since: Mapped[dt.date | None]
    # Contractual history for the sBG model: renewal periods completed, and their length.
    tenure_periods: Mapped[int | None]
    period: Mapped[str | None] = mapped_column(String(10))
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
        # An owner's customers in id order: the hand-over's batches (core_0009).
        Index("ix_customers_owner_id_id", "owner_id", "id"),
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


class AgentRole(enum.StrEnum):
    """What a staff member may do; ``core.roles`` maps each role to scopes."""

    ADMIN = "admin"
    TEAM_LEADER = "team_leader"
    ACCOUNT_MANAGER = "account_manager"
    SERVICE_REPRESENTATIVE = "service_representative"
    TECHNICAL_SUPPORT = "technical_support"


class Agent(db.Model):
    """A staff member: actor, assignee, customer owner."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    team: Mapped[str | None] = mapped_column(String(120))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    role: Mapped[AgentRole] = mapped_column(
        Enum(AgentRole, native_enum=False, length=40,
             values_callable=lambda e: [m.value for m in e]),
        default=AgentRole.SERVICE_REPRESENTATIVE, server_default="service_representative")
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
    """An API client's key: it belongs to an agent or to a named service, never both.

    Only a SHA-256 digest of the secret is stored.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(120))
    agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    service: Mapped[str | None] = mapped_column(String(120))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSONDocument)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Requests allowed, e.g. "1000/minute"; "unlimited" exempts the key (benchmarks);
    #: NULL: RAPPORT_RATE_LIMIT.
    rate_limit: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        CheckConstraint("(agent_id IS NULL) <> (service IS NULL)", name="agent_or_service"),
    )

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class AuditEntry(db.Model):
    """One change: who (the actor), what (operation, objects, changes), when, in which
    request. Append-only: nothing updates a row except erasure's redaction."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    # Copies of the actor's agent (own or on behalf of) and service, for the filters.
    actor_agent_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_service: Mapped[str | None] = mapped_column(String(120))
    operation: Mapped[str] = mapped_column(String(120))
    object_ids: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    request_id: Mapped[str] = mapped_column(String(128))

    __table_args__ = (
        Index("ix_audit_entries_occurred_at_id", "occurred_at", "id"),
        Index("ix_audit_entries_operation_id", "operation", "id"),
        Index("ix_audit_entries_actor_agent_id_id", "actor_agent_id", "id"),
        Index("ix_audit_entries_actor_service_id", "actor_service", "id"),
    )


class AuditObject(db.Model):
    """An object an audit entry names: the index of the ``objectId`` filter (JSON arrays
    are not indexable alike on both databases)."""

    __tablename__ = "audit_objects"

    entry_id: Mapped[int] = mapped_column(
        ForeignKey("audit_entries.id", ondelete="CASCADE"), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(200), primary_key=True)

    __table_args__ = (Index("ix_audit_objects_object_id_entry_id", "object_id", "entry_id"),)


class OutboxEvent(db.Model):
    """An event written in the transaction of its change; a relay delivers it later."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(120))
    aggregate_id: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    actor: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # The relay reads undelivered events in order; delivered ones leave the index.
        Index("ix_outbox_events_undelivered", "id",
              postgresql_where=text("delivered_at IS NULL"),
              sqlite_where=text("delivered_at IS NULL")),
        Index("ix_outbox_events_aggregate_id_id", "aggregate_id", "id"),
    )


__all__ = [
    "Agent", "AgentRole", "Alert", "AlertStatus", "ApiKey", "AttributeType", "AuditEntry",
    "AuditObject", "Customer",
    "CustomerAttributeDefinition", "CustomerExternalId", "CustomerStatus", "CustomerTag",
    "Interaction", "LifecycleStage", "OutboxEvent",
]


# The job system's tables (jobs, schedules, files) are declared beside these models.
from core.job_tables import Job, JobStatus, Schedule, StoredFile  # noqa: E402,F401
