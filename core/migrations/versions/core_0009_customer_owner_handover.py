"""Customers' hand-over to a new owner: the dedicated scope and an index by owner.

Giving a customer a new owner (``reassignCustomers``, ``updateCustomer``'s ``ownerId``) also
moves their open tasks and follow-ups, a change in another domain: it now needs the
dedicated scope ``customers:reassign``. Existing keys holding ``customers:write`` receive it
here, so service keys that set owners keep working. Agent keys are capped by their role:
account managers and service representatives do not hold it, so their keys can no longer
set ``ownerId`` (403 FORBIDDEN; docs/changes.md). ``ix_customers_owner_id_id`` serves "this owner's
customers in id order" (the hand-over's batches, per-owner reports).

Revision ID: core_0009
Revises: core_0008
Create Date: 2026-12-07 05:20:00.000000
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "core_0009"
down_revision = "core_0008"
branch_labels = None
depends_on = None

_SCOPE = "customers:reassign"
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_index("ix_customers_owner_id_id", "customers", ["owner_id", "id"], unique=False)
    keys = sa.table("api_keys", sa.column("id", _ID), sa.column("scopes", _JSON))
    connection = op.get_bind()
    for key_id, scopes in connection.execute(sa.select(keys.c.id, keys.c.scopes)).all():
        granted = list(scopes if isinstance(scopes, list) else json.loads(scopes))
        if "customers:write" in granted and _SCOPE not in granted:
            connection.execute(sa.update(keys).where(keys.c.id == key_id)
                               .values(scopes=sorted({*granted, _SCOPE})))


def downgrade() -> None:
    keys = sa.table("api_keys", sa.column("id", _ID), sa.column("scopes", _JSON))
    connection = op.get_bind()
    for key_id, scopes in connection.execute(sa.select(keys.c.id, keys.c.scopes)).all():
        granted = list(scopes if isinstance(scopes, list) else json.loads(scopes))
        if _SCOPE in granted:
            connection.execute(sa.update(keys).where(keys.c.id == key_id)
                               .values(scopes=[s for s in granted if s != _SCOPE]))
    op.drop_index("ix_customers_owner_id_id", table_name="customers")
