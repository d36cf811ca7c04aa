"""``rapport import customers|interactions``: CSV and JSON Lines, through the real CLI.

Each test builds an app on SQLite and on PostgreSQL (``make_app``) and invokes the
``rapport`` click group with it, as a shell would.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import func, select, text

from core import create_app, hookimpl
from core.cli import cli as rapport_cli
from core.db import db
from core.importers import open_import
from core.models import Customer, CustomerExternalId, CustomerTag, Interaction
from core.services import customers, staff
from tests.conftest import AppFactory

Run = Callable[..., Result]


class ImportProbe:
    """Records the batch hooks the importers fire."""

    name = "import_probe"

    def __init__(self) -> None:
        self.customer_batches: list[list[int]] = []
        self.interaction_batches: list[list[int]] = []
        self.plan_modes: list[str] = []  # PostgreSQL's plan_cache_mode inside each batch

    @hookimpl
    def rapport_customers_imported(self, customer_ids: list[int]) -> None:
        self.customer_batches.append(list(customer_ids))

    @hookimpl
    def rapport_interactions_recorded(self, interaction_ids: list[int]) -> None:
        self.interaction_batches.append(list(interaction_ids))
        if db.session.get_bind().dialect.name == "postgresql":
            self.plan_modes.append(str(db.session.scalar(text("SHOW plan_cache_mode"))))


@pytest.fixture
def probe() -> ImportProbe:
    return ImportProbe()


@pytest.fixture
def app(make_app: AppFactory, probe: ImportProbe) -> Iterator[Flask]:
    application = make_app(plugins=(probe,))
    with application.app_context():
        yield application


@pytest.fixture
def run(app: Flask) -> Run:
    runner = app.test_cli_runner()

    def invoke(*args: Any) -> Result:
        result = runner.invoke(rapport_cli, args=[str(a) for a in args])
        db.session.expire_all()  # the command committed through its own session
        return result

    return invoke


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(folder: Path, name: str, records: list[Any]) -> Path:
    return write(folder, name, "".join(json.dumps(r) + "\n" for r in records))


def rejects(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def counts(result: Result) -> str:
    return next(line for line in result.stdout.splitlines() if line.startswith("imported:"))


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def count(model: Any) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def customer_by_external_id(external_id: str, source: str = "default") -> Customer:
    customer = customers.find_by_external_id(source, external_id)
    assert customer is not None, external_id
    return customer


def tags(customer: Customer) -> list[str]:
    return sorted(db.session.scalars(select(CustomerTag.tag).where(
        CustomerTag.customer_id == customer.id)))


def interaction(external_id: str, source: str = "default") -> Interaction:
    found = db.session.scalar(select(Interaction).where(
        Interaction.source == source, Interaction.external_id == external_id))
    assert found is not None, external_id
    return found


CUSTOMERS_CSV = """\
external_id,name,email,phone,birth_date,country,city,tags,shoe_size,favourite_colour
C-1,Ada Lovelace,ada@example.com,+44 20 7946 0018,1985-12-10,gb,London,VIP;newsletter,38,green
C-2,Grace Hopper,grace@example.com,,1966-12-09,US,New York,,,
C-3,Alan Turing,alan@example.com,,,GB,Wilmslow,newsletter,44,
"""


def import_customers(run: Run, tmp_path: Path, text: str = CUSTOMERS_CSV) -> Result:
    return ok(run("import", "customers", write(tmp_path, "customers.csv", text)))


# --- Customers ------------------------------------------------------------------------------


def test_customers_csv_are_imported_with_tags_external_ids_and_attributes(
        run: Run, tmp_path: Path, probe: ImportProbe) -> None:
    result = import_customers(run, tmp_path)

    assert counts(result) == "imported: 3, skipped (already there): 0, rejected: 0"
    ada = customer_by_external_id("C-1")
    assert (ada.name, ada.email, ada.phone, ada.birth_date, ada.country, ada.city) == (
        "Ada Lovelace", "ada@example.com", "+44 20 7946 0018", dt.date(1985, 12, 10), "GB",
        "London")
    assert ada.email_blind_index == customers.email_blind_index("ada@example.com")
    assert tags(ada) == ["newsletter", "vip"]
    # Unknown columns are attributes; an empty cell is no value, not an empty string.
    assert ada.attributes == {"shoe_size": "38", "favourite_colour": "green"}
    grace = customer_by_external_id("C-2")
    assert grace.attributes == {} and grace.phone is None and tags(grace) == []
    assert [len(batch) for batch in probe.customer_batches] == [3]
    assert rejects(tmp_path / "customers.csv.rejects.csv") == []


def test_customers_jsonl_with_nested_attributes_lists_and_numbers(
        run: Run, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, "customers.jsonl", [
        {"external_id": 1001, "source": "shop", "name": "Ada", "tags": ["a", "B"],
         "attributes": {"score": 4.5}, "plan": "gold", "seats": 12},
        {"external_id": "1002", "source": "shop", "name": "Bob", "email": None},
    ])

    assert counts(ok(run("import", "customers", path))) == (
        "imported: 2, skipped (already there): 0, rejected: 0")
    ada = customer_by_external_id("1001", "shop")
    assert tags(ada) == ["a", "b"]
    assert ada.attributes == {"score": 4.5, "plan": "gold", "seats": 12}
    assert customer_by_external_id("1002", "shop").email is None


def test_a_rerun_skips_customers_already_imported(run: Run, tmp_path: Path,
                                                  probe: ImportProbe) -> None:
    import_customers(run, tmp_path)
    again = import_customers(run, tmp_path)

    assert counts(again) == "imported: 0, skipped (already there): 3, rejected: 0"
    assert count(Customer) == 3 and count(CustomerExternalId) == 3
    assert len(probe.customer_batches) == 1  # nothing new, no hook


def test_bad_customer_rows_go_to_the_rejects_file_with_their_line(run: Run,
                                                                 tmp_path: Path) -> None:
    text = (
        "external_id,name,email,country,birth_date\n"
        "C-1,Ada,ada@example.com,GB,\n"
        '"C-2","Bob\n'
        'the builder",not-an-email,FR,\n'        # a quoted newline: the record starts on 3
        "C-3,Carl,carl@example.com,France,2999-01-01\n"
        ",Nobody,nobody@example.com,,\n"
        "C-1,Ada again,,,\n"                     # same external id as line 2: skipped
        "C-6,Too,many,values,,here\n"
        "\n"
        "C-7,Eve,eve@example.com,DE,1990-05-01\n"
    )
    result = ok(run("import", "customers", write(tmp_path, "people.csv", text),
                    "--batch-size", "3"))

    assert counts(result) == "imported: 2, skipped (already there): 1, rejected: 4"
    assert "people.csv.rejects.csv" in result.stdout
    assert rejects(tmp_path / "people.csv.rejects.csv") == [
        {"line": "3", "field": "email", "code": "INVALID",
         "message": "Not a valid email address."},
        {"line": "5", "field": "birth_date", "code": "INVALID",
         "message": "Birth date cannot be in the future."},
        {"line": "5", "field": "country", "code": "INVALID",
         "message": "Use a two-letter ISO 3166 country code such as FR."},
        {"line": "6", "field": "external_id", "code": "REQUIRED",
         "message": "An imported customer needs an external id: a re-run recognises it "
                    "by it."},
        {"line": "8", "field": "", "code": "INVALID",
         "message": "6 values for the 5 header columns."},
    ]
    assert sorted(name or "" for name in db.session.scalars(select(Customer.name))) == [
        "Ada", "Eve"]


def test_declared_attributes_are_typed_from_csv_text(run: Run, tmp_path: Path) -> None:
    staff.define_customer_attribute({"key": "seats", "type": "number", "label": "Seats"})
    staff.define_customer_attribute({"key": "opt_in", "type": "boolean", "label": "Opt-in"})
    staff.define_customer_attribute({"key": "plan", "type": "category", "label": "Plan",
                                     "categories": ["free", "pro"]})
    text = ("external_id,seats,opt_in,plan,note\n"
            "C-1,12,yes,pro,hello\n"
            "C-2,1.5,0,free,\n"
            "C-3,twelve,maybe,gold,\n")

    result = ok(run("import", "customers", write(tmp_path, "typed.csv", text)))

    assert counts(result) == "imported: 2, skipped (already there): 0, rejected: 1"
    assert customer_by_external_id("C-1").attributes == {
        "seats": 12, "opt_in": True, "plan": "pro", "note": "hello"}
    assert customer_by_external_id("C-2").attributes == {
        "seats": 1.5, "opt_in": False, "plan": "free"}
    assert [(r["line"], r["field"]) for r in rejects(tmp_path / "typed.csv.rejects.csv")] == [
        ("4", "attributes.seats"), ("4", "attributes.opt_in"), ("4", "attributes.plan")]


def test_a_column_that_cannot_be_an_attribute_key_stops_before_writing(
        run: Run, tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "external_id,shoe size\nC-1,38\n")

    result = run("import", "customers", path)

    assert result.exit_code == 1
    assert "become attributes" in result.output and "'shoe size'" in result.output
    assert count(Customer) == 0 and not (tmp_path / "c.csv.rejects.csv").exists()


# --- Interactions ---------------------------------------------------------------------------


INTERACTIONS_CSV = """\
customer_external_id,external_id,kind,occurred_at,amount,currency,channel,refers_to,store
C-1,P-1,purchase,2025-03-01T10:00:00,19.99,usd,web,,Paris
C-1,R-1,refund,2025-03-03T09:30:00+02:00,5.00,USD,web,P-1,Paris
C-2,K-1,call,2025-03-02T08:00:00Z,,,phone,,
C-3,P-2,purchase,2025-03-04T12:00:00,1500,JPY,store,,Lyon
"""


def test_interactions_csv_are_imported_with_payload_references_and_utc_times(
        run: Run, tmp_path: Path, probe: ImportProbe) -> None:
    import_customers(run, tmp_path)
    path = write(tmp_path, "events.csv", INTERACTIONS_CSV)

    result = ok(run("import", "interactions", path))

    assert counts(result) == "imported: 4, skipped (already there): 0, rejected: 0"
    purchase = interaction("P-1")
    assert purchase.customer_id == customer_by_external_id("C-1").id
    assert (purchase.amount, purchase.currency, purchase.channel) == (
        Decimal("19.99"), "USD", "web")
    # A naive time is UTC; an offset is converted to UTC.
    assert purchase.occurred_at == dt.datetime(2025, 3, 1, 10, tzinfo=dt.timezone.utc)
    refund = interaction("R-1")
    assert refund.occurred_at == dt.datetime(2025, 3, 3, 7, 30, tzinfo=dt.timezone.utc)
    assert refund.refers_to_id == purchase.id  # the purchase two lines up, same batch
    assert purchase.payload == {"store": "Paris"}
    assert interaction("K-1").payload == {} and interaction("K-1").amount is None
    assert interaction("P-2").amount == Decimal("1500")
    assert sum(len(batch) for batch in probe.interaction_batches) == 4


def test_interactions_jsonl_keep_exact_amounts_and_merge_payload(run: Run,
                                                                 tmp_path: Path) -> None:
    import_customers(run, tmp_path)
    path = write(tmp_path, "events.ndjson", (
        '{"customer_external_id": "C-1", "external_id": "P-1", "kind": "purchase", '
        '"occurred_at": "2025-03-01T10:00:00", "amount": 0.10, "currency": "EUR", '
        '"payload": {"items": [{"sku": "A", "price": 0.1}]}, "coupon": "SPRING"}\n'
        "\n"
        '{"customer_external_id": "C-2", "external_id": "N-1", "kind": "note", '
        '"occurred_at": "2025-03-02T10:00:00Z", "amount": null}\n'))

    result = ok(run("import", "interactions", path))

    assert counts(result) == "imported: 2, skipped (already there): 0, rejected: 0"
    purchase = interaction("P-1")
    assert purchase.amount == Decimal("0.10")
    assert purchase.payload == {"items": [{"sku": "A", "price": 0.1}], "coupon": "SPRING"}
    assert interaction("N-1").amount is None


def test_a_rerun_skips_interactions_already_imported(run: Run, tmp_path: Path) -> None:
    import_customers(run, tmp_path)
    path = write(tmp_path, "events.csv", INTERACTIONS_CSV)
    ok(run("import", "interactions", path))

    again = ok(run("import", "interactions", path, "--batch-size", "2"))

    assert counts(again) == "imported: 0, skipped (already there): 4, rejected: 0"
    assert count(Interaction) == 4


def test_bad_amounts_and_currencies_are_rejected_per_row_and_the_batch_goes_on(
        run: Run, tmp_path: Path) -> None:
    import_customers(run, tmp_path)
    text = (
        "customer_external_id,customer_source,external_id,kind,occurred_at,amount,currency\n"
        "C-1,,A-1,purchase,2025-01-01T10:00:00,10.00,USD\n"
        "C-1,,A-2,purchase,2025-01-01T10:00:00,-3,USD\n"
        "C-1,,A-3,purchase,2025-01-01T10:00:00,1.999,USD\n"
        "C-1,,A-4,purchase,2025-01-01T10:00:00,12,US\n"
        "C-1,,A-5,purchase,2025-01-01T10:00:00,12,\n"
        "C-1,,A-6,purchase,2025-01-01T10:00:00,ten,EUR\n"
        "C-1,,A-7,visit,2025-01-01T10:00:00,,EUR\n"
        "C-1,,A-8,telepathy,2025-01-01T10:00:00,,\n"
        "C-1,,A-9,call,next tuesday,,\n"
        "C-9,,A-10,call,2025-01-01T10:00:00,,\n"
        "C-1,crm,A-11,call,2025-01-01T10:00:00,,\n"
        "C-2,default,A-12,call,2025-01-01T10:00:00,,\n"
    )
    result = ok(run("import", "interactions", write(tmp_path, "bad.csv", text)))

    assert counts(result) == "imported: 2, skipped (already there): 0, rejected: 10"
    assert sorted(e or "" for e in db.session.scalars(select(Interaction.external_id))) == [
        "A-1", "A-12"]
    found = {(r["line"], r["field"]): r["message"]
             for r in rejects(tmp_path / "bad.csv.rejects.csv")}
    assert found[("3", "amount")] == (
        "Amounts are positive; the kind says which way money moved.")
    assert found[("4", "amount")] == "USD amounts have at most 2 decimal places."
    assert found[("5", "currency")] == "Use a three-letter ISO 4217 currency code such as USD."
    assert found[("6", "currency")] == "An amount needs its currency."
    assert found[("7", "amount")] == "Not a valid number."
    assert found[("8", "amount")] == "A currency was given without an amount."
    assert found[("9", "kind")].startswith("Unknown interaction kind 'telepathy'")
    assert found[("10", "occurred_at")] == "Not a valid datetime."
    assert found[("11", "customer_external_id")] == (
        "No customer with external id 'C-9' in source 'default'; import the customers first.")
    assert found[("12", "customer_external_id")] == (
        "No customer with external id 'C-1' in source 'crm'; import the customers first.")


def test_references_across_batches_files_and_to_unknown_interactions(
        run: Run, tmp_path: Path) -> None:
    import_customers(run, tmp_path)
    ok(run("import", "interactions", write(tmp_path, "first.csv", INTERACTIONS_CSV)))
    text = ("customer_external_id,external_id,kind,occurred_at,amount,currency,refers_to\n"
            "C-1,R-2,refund,2025-03-05T10:00:00,1.00,USD,P-1\n"     # stored by first.csv
            "C-3,P-3,purchase,2025-03-05T10:00:00,2.00,USD,\n"
            "C-3,R-3,refund,2025-03-06T10:00:00,2.00,USD,P-3\n"     # previous batch
            "C-3,R-4,refund,2025-03-06T10:00:00,2.00,USD,NOPE\n"
            "C-2,R-5,refund,2025-03-06T10:00:00,2.00,USD,P-2\n")    # C-3's purchase
    result = ok(run("import", "interactions", write(tmp_path, "second.csv", text),
                    "--batch-size", "2"))

    assert counts(result) == "imported: 3, skipped (already there): 0, rejected: 2"
    assert interaction("R-2").refers_to_id == interaction("P-1").id
    assert interaction("R-3").refers_to_id == interaction("P-3").id
    found = {r["line"]: (r["field"], r["message"])
             for r in rejects(tmp_path / "second.csv.rejects.csv")}
    assert found["5"][0] == "refers_to" and "'NOPE'" in found["5"][1]
    assert found["6"] == ("refers_to", "The referred interaction belongs to another customer.")


def test_rows_without_identity_are_rejected(run: Run, tmp_path: Path) -> None:
    import_customers(run, tmp_path)
    path = write_jsonl(tmp_path, "e.jsonl", [
        {"customer_external_id": "C-1", "kind": "call", "occurred_at": "2025-01-01"},
        {"external_id": "X", "kind": "call", "occurred_at": "2025-01-01"},
        ["not", "an", "object"],
    ])
    with path.open("a", encoding="utf-8") as fh:
        fh.write("{broken\n")

    result = run("import", "interactions", path)

    # Every row rejected: the command fails (exit 1) after writing the rejects file.
    assert result.exit_code == 1, result.output
    assert "every row was rejected" in result.output
    assert counts(result) == "imported: 0, skipped (already there): 0, rejected: 4"
    found = rejects(tmp_path / "e.jsonl.rejects.csv")
    assert [(r["line"], r["field"], r["code"]) for r in found] == [
        ("1", "external_id", "REQUIRED"), ("2", "customer_external_id", "REQUIRED"),
        ("3", "", "INVALID"), ("4", "", "INVALID")]


def test_the_rejects_path_and_format_options(run: Run, tmp_path: Path) -> None:
    import_customers(run, tmp_path)
    path = write(tmp_path, "export.txt", INTERACTIONS_CSV.replace("19.99", "19.999"))
    elsewhere = tmp_path / "out" / "bad.csv"
    elsewhere.parent.mkdir()

    unknown = run("import", "interactions", path)
    assert unknown.exit_code == 1 and "--format" in unknown.output

    result = ok(run("import", "interactions", path, "--format", "csv",
                    "--rejects", elsewhere))
    assert counts(result) == "imported: 2, skipped (already there): 0, rejected: 2"
    # The purchase on line 2 has three decimals; the refund on line 3 lost its purchase.
    assert [r["line"] for r in rejects(elsewhere)] == ["2", "3"]


@pytest.mark.postgres_only
def test_on_postgresql_every_transaction_plans_for_the_table_as_it_is_now(
        run: Run, tmp_path: Path, probe: ImportProbe, dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("cached generic plans are PostgreSQL's")
    import_customers(run, tmp_path)

    with open_import("interactions", write(tmp_path, "events.csv", INTERACTIONS_CSV)) as job:
        job.run(batch_size=1)

    assert probe.plan_modes == ["force_custom_plan"] * 4
    assert db.session.scalar(text("SHOW plan_cache_mode")) == "auto"  # nothing lingers


# --- Files that cannot be imported: a clear error, nothing written -----------------------


@pytest.mark.parametrize(("name", "content", "message"), [
    ("events.csv", "customer_external_id,external_id,occurred_at\nC-1,E-1,2025-01-01\n",
     "The header has no kind column; required: customer_external_id, external_id, kind, "
     "occurred_at."),
    ("events.csv", "", "events.csv is empty: a header row is expected."),
    ("events.csv", "\n\n", "events.csv is empty: a header row is expected."),
    ("events.jsonl", "\n", "events.jsonl is empty: one JSON object per line is expected."),
    ("events.csv", "customer_external_id,kind,kind\n",
     "The header names kind more than once."),
])
def test_unusable_files_are_cli_errors(run: Run, tmp_path: Path, name: str, content: str,
                                       message: str) -> None:
    import_customers(run, tmp_path)
    result = run("import", "interactions", write(tmp_path, name, content))

    assert result.exit_code == 1
    assert result.output.strip().endswith(f"Error: {message}")
    assert "Traceback" not in result.output
    assert count(Interaction) == 0 and not (tmp_path / f"{name}.rejects.csv").exists()


def test_a_database_without_tables_is_a_cli_error(tmp_path: Path) -> None:
    bare = create_app({"RAPPORT_ENV": "test", "RAPPORT_PLUGINS": [],
                       "RAPPORT_DATABASE_URL": f"sqlite:///{tmp_path / 'bare.db'}"})
    path = write(tmp_path, "customers.csv", CUSTOMERS_CSV)

    result = bare.test_cli_runner().invoke(rapport_cli, args=["import", "customers", str(path)])

    assert result.exit_code == 1
    assert "run 'rapport db upgrade' first" in result.output


def test_a_missing_file_is_a_cli_error(run: Run, tmp_path: Path) -> None:
    result = run("import", "customers", tmp_path / "nope.csv")

    assert result.exit_code == 1
    assert f"Error: No such file: {tmp_path / 'nope.csv'}" in result.output


def test_an_undecodable_file_is_refused_before_anything_is_written(run: Run,
                                                                  tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    rows = "external_id,name\n" + "".join(f"C-{i},Person {i}\n" for i in range(5000))
    path.write_bytes((rows + "C-x,Zoë Müller\n").encode("latin-1"))

    result = run("import", "customers", path, "--batch-size", "100")

    assert result.exit_code == 1
    assert "latin1.csv is not valid utf-8 text (near line 5002)" in result.output
    assert count(Customer) == 0

    ok(run("import", "customers", path, "--encoding", "latin-1"))
    assert customer_by_external_id("C-x").name == "Zoë Müller"


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column(run: Run,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("external_id,name\nC-1,Zoë\n".encode("utf-8-sig"))

    ok(run("import", "customers", path))

    assert customer_by_external_id("C-1").name == "Zoë"
