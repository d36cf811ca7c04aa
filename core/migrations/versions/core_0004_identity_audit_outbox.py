"""Identity and audit: agent roles, keys owned by an agent or a service, the audit log
and the outbox of events.

Existing keys become service keys named after the key; keys holding customers:write
receive customers:merge, customers:erase and customers:export (the operations that scope
used to cover), so no client breaks silently.

Revision ID: core_0004
Revises: core_0003
Create Date: 2026-12-06 20:00:00.000000
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core.db import UTCDateTime

revision = "core_0004"
down_revision = "core_0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_ROLES = ("admin", "team_leader", "account_manager", "service_representative",
          "technical_support")
_CUSTOMER_SCOPES = ("customers:merge", "customers:erase", "customers:export")


def upgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            "role", sa.Enum(*_ROLES, name="agentrole", native_enum=False, length=40),
            nullable=False, server_default="service_representative"))

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_id", _ID, nullable=True))
        batch_op.add_column(sa.Column("service", sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column("rate_limit", sa.String(length=64), nullable=True))
    _existing_keys_become_service_keys()
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_foreign_key(batch_op.f("fk_api_keys_agent_id_agents"), "agents",
                                    ["agent_id"], ["id"], ondelete="CASCADE")
        batch_op.create_index(batch_op.f("ix_api_keys_agent_id"), ["agent_id"], unique=False)
        batch_op.create_check_constraint("agent_or_service",
                                         "(agent_id IS NULL) <> (service IS NULL)")

    op.create_table(
        "audit_entries",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("actor", _JSON, nullable=False),
        sa.Column("actor_agent_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_service", sa.String(length=120), nullable=True),
        sa.Column("operation", sa.String(length=120), nullable=False),
        sa.Column("object_ids", _JSON, nullable=False),
        sa.Column("changes", _JSON, nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entries")),
    )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index("ix_audit_entries_occurred_at_id", ["occurred_at", "id"])
        batch_op.create_index("ix_audit_entries_operation_id", ["operation", "id"])
        batch_op.create_index("ix_audit_entries_actor_agent_id_id", ["actor_agent_id", "id"])
        batch_op.create_index("ix_audit_entries_actor_service_id", ["actor_service", "id"])

    op.create_table(
        "audit_objects",
        sa.Column("entry_id", _ID, nullable=False),
        sa.Column("object_id", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["audit_entries.id"],
                                name=op.f("fk_audit_objects_entry_id_audit_entries"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("entry_id", "object_id", name=op.f("pk_audit_objects")),
    )
    with op.batch_alter_table("audit_objects", schema=None) as batch_op:
        batch_op.create_index("ix_audit_objects_object_id_entry_id", ["object_id", "entry_id"])

    op.create_table(
        "outbox_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=120), nullable=False),
        sa.Column("aggregate_id", sa.String(length=200), nullable=False),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("actor", _JSON, nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_events_event_id")),
    )
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_events_undelivered", ["id"],
                              postgresql_where=sa.text("delivered_at IS NULL"),
                              sqlite_where=sa.text("delivered_at IS NULL"))
        batch_op.create_index("ix_outbox_events_aggregate_id_id", ["aggregate_id", "id"])


def _existing_keys_become_service_keys() -> None:
    keys = sa.table("api_keys", sa.column("id", _ID), sa.column("name", sa.String),
                    sa.column("service", sa.String), sa.column("scopes", _JSON))
    connection = op.get_bind()
    connection.execute(sa.update(keys).values(service=keys.c.name))
    for key_id, scopes in connection.execute(sa.select(keys.c.id, keys.c.scopes)).all():
        granted = list(scopes if isinstance(scopes, list) else json.loads(scopes))
        if "customers:write" in granted:
            widened = sorted({*granted, *_CUSTOMER_SCOPES})
            if widened != sorted(granted):
                connection.execute(sa.update(keys).where(keys.c.id == key_id)
                                   .values(scopes=widened))


def downgrade() -> None:
    op.drop_table("outbox_events")
    op.drop_table("audit_objects")
    op.drop_table("audit_entries")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint("agent_or_service", type_="check")
        batch_op.drop_index(batch_op.f("ix_api_keys_agent_id"))
        batch_op.drop_constraint(batch_op.f("fk_api_keys_agent_id_agents"), type_="foreignkey")
        batch_op.drop_column("rate_limit")
        batch_op.drop_column("service")
        batch_op.drop_column("agent_id")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("role")
