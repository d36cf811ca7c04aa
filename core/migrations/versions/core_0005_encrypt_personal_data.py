"""Customers' e-mail and phone encrypted at rest; blind indexes replace the normalised copies.

Existing rows are encrypted in batches with the app's keys (RAPPORT_ENCRYPTION_KEYS and
RAPPORT_BLIND_INDEX_KEY, or the instance folder's outside production), inside the upgrade's
transaction: a failure leaves the table as it was. ``rapport db upgrade`` shows a progress
bar. The plaintext columns ``email_normalized`` and ``phone_normalized`` are dropped.

No table rebuild on SQLite (dropping ``customers`` there would cascade to its children):
only columns and indexes are added and dropped, which SQLite does in place; the value
columns keep their declared VARCHAR length there, which SQLite does not enforce.

Revision ID: core_0005
Revises: core_0004
Create Date: 2026-12-06 20:30:00.000000
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from core.crypto import DEFAULT_BATCH_SIZE, Keyring, keyring, no_progress
from core.db import BigIntPK

revision = "core_0005"
down_revision = "core_0004"
branch_labels = None
depends_on = None

_customers = sa.table(
    "customers", sa.column("id", BigIntPK), sa.column("email", sa.String),
    sa.column("phone", sa.String), sa.column("email_normalized", sa.String),
    sa.column("phone_normalized", sa.String), sa.column("email_blind_index", sa.String),
    sa.column("phone_blind_index", sa.String))


def _postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"


def _rewrite_in_batches(label: str, convert: Callable[[Any], dict[str, Any]],
                        columns: tuple[str, ...]) -> None:
    """Rewrite ``columns`` of every customer with an e-mail or a phone, ``convert(row)``
    giving the new values, batch by batch in id order."""
    connection = op.get_bind()
    c = _customers.c
    holds_contact = sa.or_(c.email.is_not(None), c.phone.is_not(None))
    total = connection.scalar(sa.select(sa.func.count()).where(holds_contact)) or 0
    statement = (sa.update(_customers).where(c.id == sa.bindparam("_id"))
                 .values({name: sa.bindparam(name) for name in columns}))
    progress = context.config.attributes.get("progress") or no_progress
    last = 0
    with progress(label, total) as bar:
        while True:
            rows = connection.execute(
                sa.select(c.id, c.email, c.phone).where(holds_contact, c.id > last)
                .order_by(c.id).limit(DEFAULT_BATCH_SIZE)).all()
            if not rows:
                break
            connection.execute(statement, [{"_id": row.id, **convert(row)} for row in rows])
            last = rows[-1].id
            bar.update(len(rows))


def upgrade() -> None:
    from core.services.customers import email_blind_index, phone_blind_index

    ring: Keyring = keyring()
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_blind_index", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("phone_blind_index", sa.String(length=64), nullable=True))
    if _postgresql():  # a token is longer than the value; widening VARCHAR rewrites nothing
        op.alter_column("customers", "email", type_=sa.String(),
                        existing_type=sa.String(length=320))
        op.alter_column("customers", "phone", type_=sa.String(),
                        existing_type=sa.String(length=40))

    def encrypted(row: Any) -> dict[str, Any]:
        return {"email": ring.encrypt(row.email), "phone": ring.encrypt(row.phone),
                "email_blind_index": email_blind_index(row.email),
                "phone_blind_index": phone_blind_index(row.phone)}

    _rewrite_in_batches("Encrypting customers' e-mails and phones", encrypted,
                        ("email", "phone", "email_blind_index", "phone_blind_index"))

    op.drop_index("ix_customers_email_normalized", table_name="customers")
    op.drop_index("ix_customers_phone_normalized", table_name="customers")
    op.drop_column("customers", "email_normalized")
    op.drop_column("customers", "phone_normalized")
    op.create_index("ix_customers_email_blind_index", "customers", ["email_blind_index"])
    op.create_index("ix_customers_phone_blind_index", "customers", ["phone_blind_index"])


def downgrade() -> None:
    from core.services.customers import normalise_email, normalise_phone

    ring: Keyring = keyring()
    op.add_column("customers", sa.Column("email_normalized", sa.String(length=320),
                                         nullable=True))
    op.add_column("customers", sa.Column("phone_normalized", sa.String(length=40),
                                         nullable=True))

    def decrypted(row: Any) -> dict[str, Any]:
        email, phone = ring.decrypt(row.email), ring.decrypt(row.phone)
        return {"email": email, "phone": phone, "email_normalized": normalise_email(email),
                "phone_normalized": normalise_phone(phone)}

    _rewrite_in_batches("Decrypting customers' e-mails and phones", decrypted,
                        ("email", "phone", "email_normalized", "phone_normalized"))

    op.drop_index("ix_customers_phone_blind_index", table_name="customers")
    op.drop_index("ix_customers_email_blind_index", table_name="customers")
    op.drop_column("customers", "phone_blind_index")
    op.drop_column("customers", "email_blind_index")
    if _postgresql():
        op.alter_column("customers", "phone", type_=sa.String(length=40),
                        existing_type=sa.String())
        op.alter_column("customers", "email", type_=sa.String(length=320),
                        existing_type=sa.String())
    op.create_index("ix_customers_email_normalized", "customers", ["email_normalized"])
    op.create_index("ix_customers_phone_normalized", "customers", ["phone_normalized"])
