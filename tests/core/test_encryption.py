"""Personal data at rest: no table holds a plaintext e-mail or phone; exact look-ups through
blind indexes; clear errors for wrong keys; rotation to a new key."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from alembic import command
from flask import Flask
from graphql_relay import to_global_id
from sqlalchemy import MetaData, column, insert, inspect, select, table, text

from core import create_app
from core.changes import ENCRYPTED_FIELDS, record, unseal
from core.cli import cli
from core.config import ConfigError
from core.crypto import (
    BLIND_INDEX_KEY_FILE, ENCRYPTION_KEY_FILE, SECRET_KEY_FILE, DecryptionError,
    EncryptedString, keyring,
)
from core.db import JSONDocument, UTCDateTime, db
from core.migrate import alembic_config, upgrade
from core.models import AuditEntry, Customer
from core.plugins import builtin_plugin_names
from core.services import customers
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.migrations import drop_everything

OLD_KEY = "b2xkLWtleS1vbmx5LWZvci10aGUtdGVzdHMtMDAwMDA="
NEW_KEY = "bmV3LWtleS1vbmx5LWZvci10aGUtdGVzdHMtMDAwMDA="
BLIND_KEY = "blind-index-key-of-the-tests-" + "x" * 16

CREATE = """mutation($input: CreateCustomerInput!) { createCustomer(input: $input) {
    customer { id } errors { field code message } } }"""
UPDATE = """mutation($input: UpdateCustomerInput!) { updateCustomer(input: $input) {
    customer { id } errors { field code message } } }"""
MERGE = """mutation($input: MergeCustomersInput!) { mergeCustomers(input: $input) {
    customer { id email phone } errors { field code message } } }"""
NAMES = """query($filter: CustomerFilterInput) { customers(first: 50, filter: $filter) {
    totalCount edges { node { name } } } }"""


def _keys(*encryption: str) -> dict[str, str]:
    return {"RAPPORT_ENCRYPTION_KEYS": ",".join(encryption), "RAPPORT_BLIND_INDEX_KEY": BLIND_KEY}


def _ok(payload: dict[str, Any]) -> dict[str, Any]:
    assert payload["errors"] == [], payload["errors"]
    return payload


def _cell_text(value: Any) -> str:
    """A stored value as the text an attacker reading the table would search."""
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _every_cell(app: Flask) -> dict[str, list[str]]:
    """Every value of every table of the database (reflected, not the models), as text."""
    found: dict[str, list[str]] = {}
    with app.app_context(), db.engine.connect() as conn:
        metadata = MetaData()
        metadata.reflect(bind=conn)
        for table in metadata.sorted_tables:
            cells = found.setdefault(table.name, [])
            for row in conn.execute(select(table)):
                cells.extend(_cell_text(v).lower() for v in row if v is not None)
    return found


def _where(cells: dict[str, list[str]], needle: str) -> list[str]:
    return sorted({table for table, values in cells.items()
                   if any(needle.lower() in v for v in values)})


def test_no_table_holds_a_plaintext_email_or_phone(make_app: AppFactory, tmp_path: Path
                                                   ) -> None:
    app = make_app(enabled=builtin_plugin_names())
    gql = GraphQL(app, admin_token(app))
    # Through GraphQL: create, then change both values (the audit keeps before and after).
    created = _ok(gql(CREATE, {"input": {
        "name": "Grace Hopper", "email": "Grace.Hopper@Navy.example",
        "phone": "+1 (202) 555-0147", "city": "Arlington", "externalId": "G-1"}})[
        "createCustomer"])["customer"]["id"]
    _ok(gql(UPDATE, {"input": {"id": created, "email": "amazing.grace@navy.example",
                               "phone": "+1 202 555 0148"}})["updateCustomer"])
    # Through a CSV import: Ada has no phone, so the merge below copies Grace's.
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text("external_id,name,email,city\nA-1,Ada Lovelace,"
                        "ADA@Analytical.example,London\n", encoding="utf-8")
    result = app.test_cli_runner().invoke(cli, ["import", "customers", str(csv_file)])
    assert result.exit_code == 0, result.output
    with app.app_context():
        ada = customers.find_by_external_id("default", "A-1")
        assert ada is not None
        ada_id = to_global_id("Customer", ada.id)
    merged = _ok(gql(MERGE, {"input": {"survivorId": ada_id, "mergedIds": [created]}})[
        "mergeCustomers"])["customer"]
    # Callers allowed to read them still get the values.
    assert merged == {"id": ada_id, "email": "ADA@Analytical.example",
                      "phone": "+1 202 555 0148"}

    cells = _every_cell(app)
    assert "customers" in cells and "customer_external_ids" in cells
    # The scan sees clear data where it is meant to be (names stay queryable).
    assert _where(cells, "Ada Lovelace") == ["customers"]
    needles = [
        "grace.hopper@navy.example", "amazing.grace@navy.example", "ada@analytical.example",
        "+1 (202) 555-0147", "12025550147", "2025550147",
        "+1 202 555 0148", "12025550148", "2025550148",
    ]
    assert {needle: _where(cells, needle) for needle in needles} == {
        needle: [] for needle in needles}


def test_email_and_phone_filters_match_exactly(app: Flask, gql: GraphQL) -> None:
    customers.create_customer({"name": "Ann Lee", "email": "Ann.Lee@Shop.example",
                               "phone": "+33 1 23 45 67 89"})
    customers.create_customer({"name": "Bob Stone", "email": "bob@shop.example"})
    customers.create_customer({"name": "Cid Lee", "phone": "555 0100 200"})

    def names(spec: dict[str, Any]) -> list[str]:
        page = gql(NAMES, {"filter": spec})["customers"]
        found = sorted(e["node"]["name"] for e in page["edges"])
        assert page["totalCount"] == len(found), spec
        return found

    assert names({"email": "  ann.lee@SHOP.example "}) == ["Ann Lee"]
    assert names({"email": "ann.lee"}) == []  # exact: no substring of an e-mail
    assert names({"email": "   "}) == []  # a blank value is not "no e-mail"
    assert names({"phone": "+33-1-23-45-67-89"}) == ["Ann Lee"]
    assert names({"phone": "5550100200"}) == ["Cid Lee"]
    assert names({"phone": "5550100201"}) == []
    assert names({"search": "lee"}) == ["Ann Lee", "Cid Lee"]
    assert names({"search": "shop.example"}) == []  # search matches names only
    assert names({"search": "lee", "email": "ann.lee@shop.example"}) == ["Ann Lee"]
    body = gql.raw(NAMES, {"filter": {"phone": "12345"}}).get_json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "filter.phone" in body["errors"][0]["message"]


def test_duplicates_are_found_through_the_blind_indexes(app: Flask, gql: GraphQL) -> None:
    a = customers.create_customer({"name": "Ann", "email": "ann@x.io"})
    b = customers.create_customer({"name": "Annie", "email": " ANN@X.IO"})
    c = customers.create_customer({"name": "Bo", "phone": "+1 555 0100 200"})
    d = customers.create_customer({"name": "Robert", "phone": "(555) 0100-200"})
    customers.create_customer({"name": "Zed", "email": "zed@x.io", "phone": "555 0100 201"})
    groups = gql("{ customerDuplicates { reason customers { id } } }")["customerDuplicates"]
    assert sorted((g["reason"], [n["id"] for n in g["customers"]]) for g in groups) == [
        ("email", [to_global_id("Customer", a.id), to_global_id("Customer", b.id)]),
        ("phone", [to_global_id("Customer", c.id), to_global_id("Customer", d.id)])]


def test_an_encrypted_column_cannot_be_compared_in_sql(app: Flask) -> None:
    with pytest.raises(TypeError, match="blind index"):
        select(Customer.id).where(Customer.email == "ann@x.io")
    with pytest.raises(TypeError, match="encrypted"):
        select(Customer.id).where(Customer.phone.like("%555%"))
    customers.create_customer({"name": "No contact"})
    assert db.session.scalar(select(Customer.name).where(Customer.email.is_(None))) == \
        "No contact"


def test_a_wrong_key_is_a_clear_error(make_app: AppFactory) -> None:
    writer = make_app(**_keys(OLD_KEY))
    with writer.app_context():
        customer_id = customers.create_customer({"name": "Eve", "email": "eve@x.io"}).id
    reader = make_app(**_keys(NEW_KEY))
    with reader.app_context():
        with pytest.raises(DecryptionError) as caught:
            db.session.get(Customer, customer_id)
    message = str(caught.value)
    assert "RAPPORT_ENCRYPTION_KEYS" in message and "rapport keys rotate" in message
    assert "eve@x.io" not in message


@pytest.mark.parametrize(("settings", "message"), [
    (_keys("not-a-key"), "key 1 is not a Fernet key"),
    (_keys(NEW_KEY, "short"), "key 2 is not a Fernet key"),
    ({"RAPPORT_ENCRYPTION_KEYS": NEW_KEY, "RAPPORT_BLIND_INDEX_KEY": "too-short"},
     "RAPPORT_BLIND_INDEX_KEY must be at least 32 characters"),
])
def test_bad_keys_are_refused_at_start(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app({"RAPPORT_ENV": "test", "RAPPORT_DATABASE_URL": "sqlite://", **settings})


def test_development_keys_are_made_once_in_the_instance_folder(tmp_path: Path) -> None:
    config = {"RAPPORT_ENV": "development", "RAPPORT_DATABASE_URL": "sqlite://",
              "RAPPORT_INSTANCE_PATH": str(tmp_path), "RAPPORT_PLUGINS": ""}
    first, second = create_app(config), create_app(config)
    for name in (ENCRYPTION_KEY_FILE, BLIND_INDEX_KEY_FILE):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    token = keyring(first).encrypt("ann@x.io")
    assert keyring(second).decrypt(token) == "ann@x.io"  # every process agrees
    assert keyring(first).blind_index("email", "ann@x.io") == \
        keyring(second).blind_index("email", "ann@x.io")
    # The signing secret is kept beside them (core.crypto.secret_key).
    assert sorted(os.listdir(tmp_path)) == sorted([ENCRYPTION_KEY_FILE, BLIND_INDEX_KEY_FILE,
                                                   SECRET_KEY_FILE])


def _entries_with_sealed_values() -> int:
    return sum(1 for changes in db.session.scalars(select(AuditEntry.changes))
               if any(v is not None for name in ENCRYPTED_FIELDS & set(changes or {})
                      for v in changes[name]))


def _raw_contacts(app: Flask) -> list[tuple[Any, ...]]:
    with app.app_context():
        return [tuple(row) for row in db.session.execute(text(
            "SELECT id, email, phone, email_blind_index, phone_blind_index FROM customers "
            "ORDER BY id"))]


def test_rotation_then_the_old_key_can_go(make_app: AppFactory) -> None:
    old = make_app(**_keys(OLD_KEY))
    with old.app_context():
        for i in range(3):
            customers.create_customer({"name": f"C{i}", "email": f"c{i}@x.io",
                                       "phone": f"555 010{i} 000" if i else None})
        gid = to_global_id("Customer", 1)
        with db.session.begin():
            record("rotationTest", [gid], {"email": ["c0@old.io", "c0@x.io"],
                                           "phone": [None, "555 0100 000"]})
        sealed_entries = _entries_with_sealed_values()
    before = _raw_contacts(old)

    both = make_app(**_keys(NEW_KEY, OLD_KEY))
    result = both.test_cli_runner().invoke(cli, ["keys", "rotate", "--batch-size", "2"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "customers: 3 rows re-encrypted" in result.output
    assert f"audit_entries: {sealed_entries} rows re-encrypted" in result.output
    after = _raw_contacts(both)
    assert [row[3:] for row in after] == [row[3:] for row in before]  # indexes untouched
    assert all(a[1] != b[1] for a, b in zip(after, before))  # every token rewritten
    assert [row[2] is None for row in after] == [True, False, False]

    new = make_app(**_keys(NEW_KEY))
    with new.app_context():
        assert [(c.email, c.phone) for c in db.session.scalars(
            select(Customer).order_by(Customer.id))] == [
            ("c0@x.io", None), ("c1@x.io", "555 0101 000"), ("c2@x.io", "555 0102 000")]
        entry = db.session.scalars(select(AuditEntry).where(
            AuditEntry.operation == "rotationTest")).one()
        assert [unseal("email", v) for v in entry.changes["email"]] == ["c0@old.io",
                                                                        "c0@x.io"]
        assert [unseal("phone", v) for v in entry.changes["phone"]] == [None, "555 0100 000"]
        for other in db.session.scalars(select(AuditEntry)):  # the services' own entries
            for name in ENCRYPTED_FIELDS & set(other.changes or {}):
                assert all(isinstance(unseal(name, v), (str, type(None)))
                           for v in other.changes[name])
    names = GraphQL(new, admin_token(new))(NAMES, {"filter": {"email": "C2@x.io"}})
    assert names["customers"]["edges"] == [{"node": {"name": "C2"}}]
    with old.app_context():
        db.session.remove()
        with pytest.raises(DecryptionError):
            db.session.get(Customer, 2)


def test_every_encrypted_column_is_known_to_rotation() -> None:
    """Rotation finds columns by their type; the customer's two are among them."""
    from core.crypto import encrypted_columns

    found = {(t.name, c.name) for t, columns in encrypted_columns(db.metadata)
             for c in columns}
    assert {("customers", "email"), ("customers", "phone")} <= found
    assert all(isinstance(c.type, EncryptedString) for _, columns in
               encrypted_columns(db.metadata) for c in columns)


def test_db_upgrade_encrypts_existing_rows_in_batches(make_app: AppFactory,
                                                      request: pytest.FixtureRequest) -> None:
    app = make_app(**_keys(OLD_KEY))
    drop_everything(app)
    upgrade(app, "core_0004")
    request.addfinalizer(lambda: upgrade(app))  # every table back for the fixture's clean-up
    old_customers = table(
        "customers", column("name"), column("email"), column("phone"),
        column("name_normalized"), column("email_normalized"), column("phone_normalized"),
        column("attributes", JSONDocument), column("lifecycle_stage"), column("status"),
        column("created_at", UTCDateTime()), column("updated_at", UTCDateTime()))
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rows = [{"name": f"Customer {i}", "email": f"Person.{i}@Example.org" if i % 3 else None,
             "phone": f"+1 202 555 {i:04d}" if i % 2 else None,
             "name_normalized": f"customer {i}",
             "email_normalized": f"person.{i}@example.org" if i % 3 else None,
             "phone_normalized": f"202555{i:04d}" if i % 2 else None,
             "attributes": {}, "lifecycle_stage": "customer", "status": "active",
             "created_at": now, "updated_at": now} for i in range(1, 1503)]
    rows.append(rows[0] | {"name": "Nobody", "email": None, "phone": None,
                           "email_normalized": None, "phone_normalized": None})
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(insert(old_customers), rows)
    with_contact = sum(1 for r in rows if r["email"] or r["phone"])

    shown: list[Any] = []

    @contextmanager
    def progress(label: str, total: int) -> Iterator[Any]:
        shown.append((label, total))
        yield SimpleNamespace(update=shown.append)

    upgrade(app, "core_0005", progress=progress)
    assert shown == [("Encrypting customers' e-mails and phones", with_contact),
                     1000, with_contact - 1000]
    with app.app_context():
        columns = {c["name"] for c in inspect(db.engine).get_columns("customers")}
        assert {"email_blind_index", "phone_blind_index"} <= columns
        assert not {"email_normalized", "phone_normalized"} & columns
        raw = db.session.execute(text("SELECT email, phone FROM customers")).all()
        tokens = [value for r in raw for value in r if value is not None]
        assert len(tokens) == sum(bool(r["email"]) + bool(r["phone"]) for r in rows)
        assert all(t.startswith("gAAAAA") and "@" not in t for t in tokens)  # Fernet tokens
        # Columns as of core_0005 only: later migrations add customer columns.
        stored = {c.name: c for c in db.session.execute(select(
            Customer.name, Customer.email, Customer.phone, Customer.email_blind_index,
            Customer.phone_blind_index))}
        for row in rows:
            customer = stored[row["name"]]
            assert (customer.email, customer.phone) == (row["email"], row["phone"])
            assert customer.email_blind_index == customers.email_blind_index(row["email"])
            assert customer.phone_blind_index == customers.phone_blind_index(row["phone"])
        db.session.remove()

        with db.engine.begin() as conn:
            command.downgrade(alembic_config(app, conn), "core_0004")
        restored = db.session.execute(text(
            "SELECT name, email, phone, email_normalized, phone_normalized FROM customers")
        ).all()
    assert sorted(tuple(r) for r in restored) == sorted(
        (r["name"], r["email"], r["phone"], r["email_normalized"], r["phone_normalized"])
        for r in rows)
