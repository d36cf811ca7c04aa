"""The database handle, the declarative base and the column types every model shares.

Two types make SQLite and PostgreSQL behave alike:

- ``UTCDateTime`` stores UTC and always gives back timezone-aware values (SQLite returns
  naive datetimes otherwise); a naive value is refused, never guessed.
- ``Money`` stores Decimal amounts exactly as integer ten-thousandths on both databases
  (SQLAlchemy's ``Numeric`` is a float on SQLite), so SUM() in SQL stays exact too.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MONEY_SCALE = 4
_MONEY_FACTOR = Decimal(10) ** MONEY_SCALE


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)

#: The largest id a BIGINT primary key holds; larger numbers name nothing.
MAX_ID = 2**63 - 1

#: Primary keys: BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER autoincrements).
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

#: JSON documents: JSONB on PostgreSQL (indexable), JSON text on SQLite.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to a UTCDateTime column; attach a time zone")
        value = value.astimezone(dt.timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class Money(TypeDecorator[Decimal]):
    """An exact Decimal amount stored as integer units of 10^-4."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | int | str | None, dialect: Any) -> int | None:
        if value is None:
            return None
        scaled = Decimal(value) * _MONEY_FACTOR
        if scaled != scaled.to_integral_value():
            raise ValueError(f"amount {value} has more than {MONEY_SCALE} decimal places")
        return int(scaled)

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return Decimal(int(value)) / _MONEY_FACTOR

    @property
    def python_type(self) -> type:
        return Decimal


def plugin_table(plugin: str) -> dict[str, Any]:
    """``__table_args__`` entry marking a table as owned by ``plugin``.

    Tables of disabled plugins are neither created nor migrated.
    """
    return {"info": {"rapport_plugin": plugin}}


def tables_for_plugins(enabled: set[str]) -> list[Any]:
    """Core tables plus the tables of the enabled plugins, in dependency order."""
    return [
        t for t in db.metadata.sorted_tables
        if t.info.get("rapport_plugin") in (None, *enabled)
    ]
