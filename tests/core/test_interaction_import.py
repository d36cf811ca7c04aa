"""The PostgreSQL bulk path of ``rapport import interactions`` against the schema's rules.

``FastCheck`` may only accept what ``InteractionSchema`` accepts, with the same values; the
rows it does not take are loaded by the schema itself. A table of edge cases goes through
both; then a file of awkward rows goes through the SQLite path's importer and the COPY
path on the same PostgreSQL database: same rejects, same stored rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from marshmallow import ValidationError
from sqlalchemy import delete, select, text, update

from core.db import db
from core.importers import InteractionImporter, _pending, open_import
from core.interaction_import import FastCheck, PostgresInteractionImporter, converted_from_schema
from core.models import AuditEntry, Customer, CustomerStatus, Interaction
from core.schemas import InteractionSchema
from core.services import customers
from tests.conftest import AppFactory

KINDS = {"purchase", "refund", "call", "email", "note", "Bad-Kind"}
MONETARY = frozenset({"purchase", "refund"})
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
BASE = {"customer_external_id": "C-1", "external_id": "E-1"}

#: (values as the reader gives them, whether the fast check must take the row itself)
CASES: list[tuple[dict[str, Any], bool]] = [
    ({"kind": "call", "occurred_at": "2025-03-01T10:00:00"}, True),
    ({"kind": "call", "occurred_at": "2025-03-01T10:00:00Z"}, True),
    ({"kind": "call", "occurred_at": "2025-03-01T10:00:00+02:00"}, True),
    ({"kind": "call", "occurred_at": "2025-03-01T10:00:00.123456-05:30"}, True),
    ({"kind": "call", "occurred_at": "2025-03-01"}, True),
    ({"kind": "call", "occurred_at": "20250301T100000"}, True),
    ({"kind": "call", "occurred_at": "2025-13-01T10:00:00"}, False),
    ({"kind": "call", "occurred_at": "next tuesday"}, False),
    ({"kind": "call", "occurred_at": "2026-01-01T00:04:00"}, True),    # within tolerance
    ({"kind": "call", "occurred_at": "2026-01-01T00:06:00"}, False),   # in the future
    ({"kind": "call", "occurred_at": "0001-01-01T00:00:00+05:00"}, False),  # overflows
    ({"kind": "call", "occurred_at": "9999-12-31T23:00:00-05:00"}, False),  # overflows
    ({"kind": "call", "occurred_at": 20250301}, False),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "19.99", "currency": "USD"},
     True),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "10", "currency": "EUR"},
     True),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "0010.50", "currency": "EUR"},
     True),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "1500", "currency": "JPY"},
     True),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "1500.5", "currency": "JPY"},
     False),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "1.999", "currency": "USD"},
     False),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "1.995", "currency": "BHD"},
     True),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "1.2000", "currency": "USD"},
     True),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "99999999999999.99",
      "currency": "USD"}, True),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "100000000000000",
      "currency": "USD"}, False),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "-3", "currency": "USD"},
     False),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "1e3", "currency": "USD"},
     False),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "ten", "currency": "USD"},
     False),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "NaN", "currency": "USD"},
     False),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "5", "currency": "usd"},
     False),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "5", "currency": " USD"},
     False),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "5", "currency": "US"}, False),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": "5"}, False),
    ({"kind": "purchase", "occurred_at": "2025-03-01"}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "currency": "USD"}, False),
    ({"kind": "note", "occurred_at": "2025-03-01", "amount": "2", "currency": "USD"}, True),
    ({"kind": "telepathy", "occurred_at": "2025-03-01"}, False),
    ({"kind": "Bad-Kind", "occurred_at": "2025-03-01"}, False),   # registered, bad shape
    ({"kind": "Purchase", "occurred_at": "2025-03-01"}, False),
    ({"kind": 7, "occurred_at": "2025-03-01"}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "channel": "x" * 40}, True),
    ({"kind": "call", "occurred_at": "2025-03-01", "channel": "x" * 41}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "channel": 5}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "source": "s" * 64}, True),
    ({"kind": "call", "occurred_at": "2025-03-01", "source": "s" * 65}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "external_id": "e" * 200}, True),
    ({"kind": "call", "occurred_at": "2025-03-01", "external_id": "e" * 201}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "external_id": 1001}, True),
    ({"kind": "call", "occurred_at": "2025-03-01", "store": "Paris", "seats": 3,
      "vip": True}, True),
    # JSON Lines: exact decimals, numbers, nesting and floats in the payload.
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": Decimal("0.10"),
      "currency": "EUR"}, True),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": 12, "currency": "EUR"}, True),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": Decimal("1E+2"),
      "currency": "EUR"}, False),
    ({"kind": "purchase", "occurred_at": "2025-03-01", "amount": True, "currency": "EUR"},
     False),
    ({"kind": "call", "occurred_at": "2025-03-01", "score": Decimal("4.5")}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "items": [{"sku": "A"}]}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "payload": {"a": 1}}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "payload": "text"}, False),
    # What the file reader refuses first; the check refuses it by itself too (review).
    ({"kind": "call", "occurred_at": "2025-03-01", "channel": ""}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "channel": "w\x00b"}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "store": "Par\ud800is"}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "st\x00re": "Paris"}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "\udfffkey": "Paris"}, False),
    ({"kind": "call", "occurred_at": "2025-03-01", "store": "Zürich"}, True),
]


def _schema_verdict(values: dict[str, Any]) -> tuple[Any, Any]:
    schema = InteractionSchema(kinds=KINDS, monetary_kinds=MONETARY, now=NOW)
    data = _pending(2, values, 1).data
    try:
        return converted_from_schema(schema.load(data)), None
    except ValidationError as exc:
        return None, exc.messages


@pytest.mark.parametrize(("values", "fast"), CASES)
def test_the_fast_check_takes_only_what_the_schema_accepts_with_its_values(
        values: dict[str, Any], fast: bool) -> None:
    row = BASE | values
    loaded, errors = _schema_verdict(row)
    converted = FastCheck(KINDS, MONETARY, NOW).convert(row)

    if converted is not None:
        assert errors is None, errors
        assert converted == loaded
    assert (converted is not None) == fast, (converted, loaded, errors)


# --- The two importers on the same database -------------------------------------------------

FILE = """\
customer_external_id,customer_source,external_id,source,kind,occurred_at,amount,currency,channel,refers_to,store
C-1,,P-1,,purchase,2025-03-01T10:00:00,19.99,USD,web,,Paris
C-1,,R-1,,refund,2025-03-02T10:00:00+02:00,5.00,usd,web,P-1,
C-1,,R-0,,refund,2025-03-02T11:00:00,1,USD,web,P-9,
C-1,,P-9,,purchase,2025-03-02T12:00:00Z,3,EUR,store,,Lyon
C-2,,R-2,,refund,2025-03-03T10:00:00,1,USD,web,P-1,
C-2,,R-3,,refund,2025-03-03T10:00:00,1,USD,web,NOPE,
C-2,,R-4,,refund,2025-03-03T10:00:00,-1,USD,web,NOPE,
C-2,,P-2,,purchase,2025-03-03T10:00:00,-1,USD,web,P-1,
C-3,,K-1,,call,2025-03-03T10:00:00,,,phone,,
C-9,,K-2,,call,2025-03-03T10:00:00,,,phone,,
C-1,crm,K-3,,call,2025-03-03T10:00:00,,,phone,,
C-1,,K-4,crm,call,2025-03-03T10:00:00,,,phone,,
C-1,,K-5,,call,2026-03-03T10:00:00,3,,phone,,
C-1,,K-6,,telepathy,yesterday,,XX,phone,,
C-1,,K-7,,purchase,2025-03-03,1500.5,JPY,,,
C-1,,K-8,,purchase,2025-03-03,1500,JPY,,,
C-2,,R-5,,refund,2025-03-04,1,USD,,K-8,
C-1,,R-6,,refund,2025-03-04,1,USD,,K-7,
C-1,,,,call,2025-03-04,,,,,
,,K-9,,call,2025-03-04,,,,,
C-1,,K-4,crm,call,2025-03-04,,,,,
C-1,,P-1,,purchase,2025-03-01T10:00:00,19.99,USD,web,,Paris
C-1,,K-10,,note,2025-03-05T08:00:00-08:00,2.5,EUR,,,
"""


def _rejects(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _stored() -> list[tuple[Any, ...]]:
    refers = {i: e for i, e in db.session.execute(select(Interaction.id,
                                                         Interaction.external_id))}
    return sorted((i.source, i.external_id, i.customer_id, i.kind, i.channel, i.occurred_at,
                   i.amount, i.currency, json.dumps(i.payload, sort_keys=True),
                   refers.get(i.refers_to_id) if i.refers_to_id else None)
                  for i in db.session.scalars(select(Interaction)))


@pytest.mark.postgres_only
def test_the_copy_path_rejects_and_stores_what_the_sqlite_path_does(
        make_app: AppFactory, tmp_path: Path, dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("the COPY path is PostgreSQL's")
    app: Flask = make_app(plugins=())
    with app.app_context():
        for name in ("C-1", "C-2", "C-3"):
            customers.create_customer({"name": name, "source": "default", "external_id": name})
        customers.create_customer({"name": "crm", "source": "crm", "external_id": "C-1"})
        erased = customers.find_by_external_id("default", "C-3")
        assert erased is not None
        db.session.execute(update(Customer).where(Customer.id == erased.id)
                           .values(status=CustomerStatus.ERASED))
        db.session.commit()
        path = tmp_path / "events.csv"
        path.write_text(FILE, encoding="utf-8")

        outcomes = []
        for legacy in (True, False):
            for batch_size in (4, 1000):
                rejects_path = tmp_path / f"rejects-{legacy}-{batch_size}.csv"
                with open_import("interactions", path, rejects_path=rejects_path) as job:
                    assert isinstance(job.importer, PostgresInteractionImporter)
                    if legacy:
                        job.importer = InteractionImporter()
                    report = job.run(batch_size=batch_size)
                db.session.expire_all()
                outcomes.append(((report.imported, report.skipped, report.rejected),
                                 _rejects(rejects_path), _stored()))
                db.session.execute(delete(Interaction))
                db.session.execute(delete(AuditEntry))
                db.session.commit()

    (legacy_small, legacy_one, bulk_small, bulk_one) = outcomes
    for legacy, bulk in ((legacy_small, bulk_small), (legacy_one, bulk_one)):
        assert bulk[0] == legacy[0]
        assert bulk[2] == legacy[2]
        # The one message that differs on purpose: a duplicate names its line, not its
        # position in an internal call.
        assert [(r["line"], r["field"], r["code"]) for r in bulk[1]] == [
            (r["line"], r["field"], r["code"]) for r in legacy[1]]
        assert [r["message"] for r in bulk[1] if r["code"] != "UNIQUE"] == [
            r["message"] for r in legacy[1] if r["code"] != "UNIQUE"]
    assert bulk_one[0] == (8, 0, 15), bulk_one[1]
    by_line = {r["line"]: (r["field"], r["code"]) for r in bulk_one[1]}
    assert by_line["6"] == ("refers_to", "INVALID")           # another customer's purchase
    assert by_line["8"] == ("refers_to", "NOT_FOUND")         # before its own bad amount
    assert by_line["10"] == ("customer_external_id", "NOT_ALLOWED")    # erased
    assert by_line["19"] == ("refers_to", "NOT_FOUND")        # its purchase was rejected
    assert {r["message"] for r in bulk_one[1] if r["code"] == "UNIQUE"} == {
        "Same source and external id as line 13 of this batch.",
        "Same source and external id as line 2 of this batch."}
    assert bulk_small[0] == (8, 2, 13)  # in later batches, lines 22 and 23 find theirs stored


@pytest.mark.postgres_only
def test_a_batch_costs_a_fixed_number_of_statements(
        make_app: AppFactory, tmp_path: Path, dialect: str) -> None:
    """A batch costs a fixed number of statements whatever its size (no N+1)."""
    if dialect != "postgresql":
        pytest.skip("the COPY path is PostgreSQL's")
    app: Flask = make_app(plugins=())
    with app.app_context():
        customers.create_customer({"name": "A", "source": "default", "external_id": "A"})
        db.session.commit()
        rows = "".join(f"A,E-{n},call,2025-03-01T10:00:{n % 60:02d},,,phone\n"
                       for n in range(500))
        path = tmp_path / "many.csv"
        path.write_text("customer_external_id,external_id,kind,occurred_at,amount,currency,"
                        "channel\n" + rows, encoding="utf-8")
        statements: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        from sqlalchemy import event
        engine = db.engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            with open_import("interactions", path) as job:
                report = job.run(batch_size=500)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert (report.imported, report.rejected) == (500, 0)
        assert len(statements) <= 12, statements
        stored = db.session.scalar(text("SELECT count(*) FROM interactions"))
        assert stored == 500
