"""The one mechanism for changes: context, record() (audit entry + outbox), re-entrant
transactions, redaction on erasure, the migration of keys, the CLI's actor and export."""

from __future__ import annotations

import asyncio
import csv
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select, text

from core import changes, context
from core.context import Actor
from core.db import db
from core.ids import decode_global_id, global_id
from core.models import ApiKey, AuditEntry, AuditObject, OutboxEvent
from core.roles import effective_scopes, role_scopes
from core.services import TransactionAborted, transaction
from core.services.customers import create_customer, erase_customer, import_customers, \
    update_customer
from tests.conftest import AppFactory


def _entries(operation: str | None = None) -> list[AuditEntry]:
    stmt = select(AuditEntry).order_by(AuditEntry.id)
    if operation is not None:
        stmt = stmt.where(AuditEntry.operation == operation)
    return list(db.session.scalars(stmt))


def _events(event_type: str | None = None) -> list[OutboxEvent]:
    stmt = select(OutboxEvent).order_by(OutboxEvent.id)
    if event_type is not None:
        stmt = stmt.where(OutboxEvent.type == event_type)
    return list(db.session.scalars(stmt))


# --- ids and context -------------------------------------------------------------------------


def test_global_ids_are_graphene_relay_ids() -> None:
    from graphql_relay import to_global_id

    assert global_id("Customer", 42) == to_global_id("Customer", "42")
    assert decode_global_id(global_id("Agent", 7), "Agent") == ("Agent", 7)
    for bad in ("", "nope", global_id("Agent", 0), to_global_id("Agent", "x"),
                to_global_id("Agent", "²")):
        with pytest.raises(ValueError):
            decode_global_id(bad)
    with pytest.raises(ValueError, match="Customer"):
        decode_global_id(global_id("Agent", 7), "Customer")


def test_actor_round_trips_as_camel_case_json_with_global_ids() -> None:
    actor = Actor(agent_id=3, service=None, api_key_prefix="abcd1234",
                  on_behalf_of_agent_id=9, via="job")
    data = actor.to_json()
    assert data == {"agentId": global_id("Agent", 3), "service": None,
                    "apiKeyPrefix": "abcd1234", "onBehalfOfAgentId": global_id("Agent", 9),
                    "via": "job"}
    assert Actor.from_json(data) == actor


def test_context_nests_inherits_and_stays_per_thread() -> None:
    outside = context.current()
    assert outside.actor == Actor(service="system", via="cli") and outside.operation is None
    seen: dict[str, Any] = {}
    with context.use(actor=Actor(service="cli", via="cli"), request_id="r1") as outer:
        with context.use(operation="createCustomer") as inner:
            assert (inner.actor, inner.request_id) == (outer.actor, "r1")
            assert context.current().operation == "createCustomer"

            async def in_a_task() -> str | None:
                return context.current().operation

            seen["task"] = asyncio.run(in_a_task())
            other = threading.Thread(target=lambda: seen.update(
                thread=context.current().actor.service))
            other.start()
            other.join()
        assert context.current().operation is None
    assert context.current().actor.service == "system"
    assert seen == {"task": "createCustomer", "thread": "system"}


def test_sane_request_ids_only() -> None:
    assert context.sane_request_id(" abc-123 ") == "abc-123"
    for bad in ("", "a b", "x" * 129, "evil\nline", "é"):
        assert context.sane_request_id(bad) is None


# --- record() and transactions --------------------------------------------------------------


def test_record_writes_the_entry_and_events_in_the_callers_transaction(app: Flask) -> None:
    customer = global_id("Customer", 1)
    with context.use(actor=Actor(agent_id=None, service="partner", api_key_prefix="p1"),
                     request_id="req-1", operation="createCustomer"):
        with transaction():
            changes.record(None, [customer, customer], {"name": ["A", "B"]},
                           [changes.Event("customer.updated", customer, {"customerId": customer})])
    entry, = _entries()
    assert (entry.operation, entry.request_id, entry.object_ids) == (
        "createCustomer", "req-1", [customer])
    assert entry.actor["service"] == "partner" and entry.actor_service == "partner"
    assert entry.changes == {"name": ["A", "B"]}
    assert db.session.scalars(select(AuditObject.object_id)).all() == [customer]
    event, = _events()
    assert event.event_id.startswith("evt_")
    assert (event.type, event.aggregate_id, event.data, event.actor["apiKeyPrefix"]) == (
        "customer.updated", customer, {"customerId": customer}, "p1")


def test_rolled_back_change_leaves_neither_entry_nor_event(app: Flask) -> None:
    customer = global_id("Customer", 1)
    with pytest.raises(RuntimeError), transaction():
        changes.record("x", [customer], None, [changes.Event("customer.created", customer)])
        raise RuntimeError("the change fails after its record")
    assert _entries() == [] and _events() == []


def test_events_never_carry_an_email_or_phone(app: Flask) -> None:
    with pytest.raises(ValueError, match="email"), transaction():
        changes.record("x", [], None, [changes.Event("customer.created", "x",
                                                     {"email": "a@b.c"})])
    with pytest.raises(ValueError), transaction():
        changes.record("x", ["not a global id"])


def test_inner_transaction_neither_commits_nor_rolls_back(app: Flask) -> None:
    with pytest.raises(RuntimeError), transaction():
        with transaction():
            create_customer({"name": "Inner"})
        raise RuntimeError("the outer block fails after the inner one ended")
    assert db.session.scalar(text("SELECT count(*) FROM customers")) == 0
    assert _entries() == []

    # An inner failure the outer block swallows still rolls everything back.
    with pytest.raises(TransactionAborted), transaction():
        create_customer({"name": "Kept?"})
        try:
            with transaction():
                raise RuntimeError("inner failure")
        except RuntimeError:
            pass
    assert db.session.scalar(text("SELECT count(*) FROM customers")) == 0
    create_customer({"name": "After"})  # the session works again
    assert db.session.scalar(text("SELECT count(*) FROM customers")) == 1


# --- services ----------------------------------------------------------------------------------


def test_customer_changes_are_audited_with_before_and_after(app: Flask) -> None:
    customer = create_customer({"name": "Ann", "city": "Rome", "email": "ann@example.com"})
    update_customer(customer.id, {"city": "Milan", "phone": "+39 02 1234 5678"})
    gid = global_id("Customer", customer.id)
    created, updated = _entries()
    assert created.actor == Actor(service="system", via="cli").to_json()
    assert created.object_ids == [gid] and created.changes["city"] == [None, "Rome"]
    assert updated.changes["city"] == ["Rome", "Milan"]
    # E-mail and phone are stored encrypted, and read back through changes.unseal.
    assert "ann@example.com" not in str(created.changes)
    assert changes.unseal("email", created.changes["email"][1]) == "ann@example.com"
    assert changes.unseal("phone", updated.changes["phone"][1]) == "+39 02 1234 5678"
    raw = db.session.execute(text("SELECT changes FROM audit_entries")).scalars().all()
    assert not any("example.com" in str(value) or "1234" in str(value) for value in raw)
    assert [e.type for e in _events()] == ["customer.created", "customer.updated"]
    assert _events()[1].data == {"customerId": gid, "changedFields": ["city", "phone"]}


def test_an_import_batch_writes_one_entry_and_one_event(app: Flask) -> None:
    result = import_customers([{"external_id": f"c{i}", "name": f"C {i}"} for i in range(5)]
                              + [{"name": "no external id"}])
    assert result.recorded == 5 and len(result.rejected) == 1
    entry, = _entries()
    assert entry.object_ids == []
    assert entry.changes["recorded"] == [None, 5] and entry.changes["rejected"] == [None, 1]
    event, = _events()
    ids = sorted(result.recorded_ids.values())
    assert event.type == "customers.imported"
    assert (event.data["firstId"], event.data["lastId"]) == (
        global_id("Customer", ids[0]), global_id("Customer", ids[-1]))


def test_erasure_redacts_the_persons_values_in_audit_and_outbox(app: Flask) -> None:
    ann = create_customer({"name": "Ann Lee", "email": "ann@example.com", "city": "Rome"})
    bob = create_customer({"name": "Bob", "city": "Oslo"})
    update_customer(ann.id, {"name": "Ann Smith"})
    gid = global_id("Customer", ann.id)
    with transaction():  # a plugin's event that carried a personal value
        changes.record("x", [gid], None, [changes.Event("x.happened", gid, {"name": "Ann"})])
    erase_customer(ann.id)
    for entry in _entries():
        values = [v for pair in (entry.changes or {}).values() for v in pair]
        if gid in entry.object_ids:
            assert set(values) <= {changes.REDACTED, None}, entry.changes
        else:
            assert "Bob" in values  # another person's entries keep their values
    erased = _entries()[-1]
    assert erased.object_ids == [gid]
    assert erased.changes["name"] == [changes.REDACTED, None]
    assert all(event.data.get("name") in (None, changes.REDACTED) for event in _events())
    assert [e.type for e in _events()][-1] == "customer.erased"
    assert bob.name == "Bob"


# --- roles -------------------------------------------------------------------------------------


def test_roles_cap_agent_keys() -> None:
    known = ["customers:read", "customers:write", "customers:erase", "audit:read",
             "loyalty:read", "agents:act-as", "admin"]
    assert role_scopes("admin", known) == frozenset(known)
    assert effective_scopes(["admin"], "service_representative", known) == {
        "customers:read", "customers:write", "loyalty:read"}
    assert effective_scopes(["audit:read", "customers:read"], "technical_support",
                            known) == {"customers:read"}
    assert "admin" not in effective_scopes(["admin"], "team_leader", known)
    assert "customers:erase" not in role_scopes("team_leader", known)


# --- migration ---------------------------------------------------------------------------------


def test_migration_makes_keys_service_keys_and_widens_customers_write(
        make_app: AppFactory) -> None:
    from core.migrate import upgrade
    from tests.migrations import drop_everything

    app = make_app()
    drop_everything(app)
    upgrade(app, "core_0003")
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO api_keys (name, prefix, secret_hash, scopes, created_at) VALUES "
            "('shop', 'aa', 'h1', :w, CURRENT_TIMESTAMP), "
            "('reader', 'bb', 'h2', :r, CURRENT_TIMESTAMP)"),
            {"w": '["customers:read", "customers:write"]', "r": '["customers:read"]'})
    upgrade(app)
    with app.app_context():
        keys = {k.prefix: k for k in db.session.scalars(select(ApiKey))}
        assert (keys["aa"].service, keys["aa"].agent_id) == ("shop", None)
        # core_0004 widens customers:write by merge, erase and export; core_0009 by reassign.
        assert keys["aa"].scopes == ["customers:erase", "customers:export", "customers:merge",
                                     "customers:read", "customers:reassign", "customers:write"]
        assert (keys["bb"].service, keys["bb"].scopes) == ("reader", ["customers:read"])


# --- CLI ---------------------------------------------------------------------------------------


def _cli(app: Flask, *args: str) -> Any:
    from core.cli import cli

    return CliRunner().invoke(cli, list(args), obj=_script_info(app), catch_exceptions=False)


def _script_info(app: Flask) -> Any:
    from flask.cli import ScriptInfo

    return ScriptInfo(create_app=lambda: app)


def test_cli_acts_as_service_cli_or_as_an_agent(app: Flask, tmp_path: Path) -> None:
    from core.services.staff import create_agent

    agent = create_agent({"name": "Sam", "email": "sam@shop.io", "role": "team_leader"})
    result = _cli(app, "apikey", "create", "--service", "shop", "--scopes", "customers:read")
    assert result.exit_code == 0, result.output
    result = _cli(app, "--as", "SAM@shop.io", "apikey", "create", "--name", "legacy",
                  "--scopes", "customers:read")
    assert result.exit_code == 0, result.output
    result = _cli(app, "--as", "ghost@shop.io", "apikey", "list")
    assert result.exit_code == 2 and "no agent" in result.output
    by_cli, by_sam = _entries("apikey.create")
    assert by_cli.actor == Actor(service="cli", via="cli").to_json()
    assert by_sam.actor == Actor(agent_id=agent.id, via="cli").to_json()
    assert by_sam.actor_agent_id == agent.id

    out = tmp_path / "audit.csv"
    result = _cli(app, "audit", "export", "--out", str(out), "--operation", "apikey.create")
    assert result.exit_code == 0 and "exported 2 audit entries" in result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["service"] for r in rows] == ["cli", ""]
    assert rows[1]["agentId"] == global_id("Agent", agent.id)
    assert rows[1]["id"] == global_id("AuditEntry", by_sam.id)  # the API's AuditEntry id
    assert '"service": [null, "legacy"]' in rows[1]["changes"]


def test_agent_keys_and_service_keys_are_exclusive(app: Flask) -> None:
    from core.auth import create_api_key
    from core.errors import UserError
    from core.services.staff import create_agent

    create_agent({"name": "Sam", "email": "sam@shop.io"})
    key, _ = create_api_key("sam", ["customers:read"], agent_email="sam@shop.io")
    assert (key.service, key.agent_id is not None) == (None, True)
    with pytest.raises(UserError):
        create_api_key("x", ["customers:read"], agent_email="sam@shop.io", service="x")
    with pytest.raises(UserError):
        create_api_key("x", ["customers:read"], agent_email="ghost@shop.io")
