"""Every declared event type is emitted by some operation, with the declared payload, and
no payload carries an e-mail or phone.

One app with every built-in plugin runs a flow per type (services, as the API, the CLI and
jobs call them), then reads the outbox: each type of the catalogue appears, each payload
matches its schema (required fields present, no undeclared field, JSON types and enums).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from core import outbox
from core.db import db, utcnow
from core.importers import Record
from core.models import OutboxEvent
from core.services import customers, interactions, staff, transaction
from tests.conftest import AppFactory

EMAIL, PHONE = "ada.lovelace@example.com", "+44 20 7946 0958"
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),)}


def _mismatches(schema: dict[str, Any], data: dict[str, Any]) -> list[str]:
    problems = [f"missing {k}" for k in schema.get("required", []) if k not in data]
    properties = schema["properties"]
    for key, value in data.items():
        spec = properties.get(key)
        if spec is None:
            problems.append(f"undeclared {key}")
            continue
        kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        allowed = tuple(t for k in kinds for t in JSON_TYPES[k])
        if isinstance(value, bool) and bool not in allowed:
            problems.append(f"{key}: a boolean")
        elif not isinstance(value, allowed):
            problems.append(f"{key}: {type(value).__name__}, not {kinds}")
        if "enum" in spec and value is not None and value not in spec["enum"]:
            problems.append(f"{key}: {value!r} not in {spec['enum']}")
        if "items" in spec and isinstance(value, list):
            items = spec["items"]
            problems += [f"{key}[]: {v!r}" for v in value
                         if not isinstance(v, JSON_TYPES[items["type"]])
                         or ("enum" in items and v not in items["enum"])]
    return problems


def _core_flows() -> None:
    ada = customers.create_customer({"name": "Ada", "email": EMAIL, "phone": PHONE,
                                     "city": "London"})
    customers.update_customer(ada.id, {"city": "Paris", "email": "ada@other.example.org"})
    twin = customers.create_customer({"name": "Ada L.", "email": EMAIL})
    customers.merge_customers(ada.id, [twin.id])
    customers.import_customers([{"external_id": "imp-1", "name": "Imported",
                                 "email": "imported@example.com"}])
    interactions.record_interaction({"customer_id": ada.id, "kind": "call",
                                     "occurred_at": utcnow().isoformat()})
    interactions.record_interactions([{"customer_id": ada.id, "kind": "note",
                                       "occurred_at": utcnow().isoformat()}])
    with transaction():
        staff.raise_alert("spike", "high", "tests", {"window": 3}, customer=ada)
    gone = customers.create_customer({"name": "Gone", "phone": PHONE})
    customers.erase_customer(gone.id)
    leaving = staff.create_agent({"name": "Leaving", "email": "leaving@example.com"})
    staff.create_agent({"name": "Taking", "email": "taking@example.com",  # North's one agent
                        "team": "North"})
    customers.update_customer(ada.id, {"owner_id": leaving.id})
    staff.update_agent(leaving.id, {"active": False, "team": "South"})
    staff.reassign_customers({"from_owner_id": leaving.id, "to_team": "North"})


def _loyalty_flows() -> None:
    from plugins.loyalty import programme, service

    programme.create_earn_rule({"name": "Points", "kind": "purchase", "currency": "USD",
                                "points_per_unit": "1",
                                "valid_from": (utcnow() - dt.timedelta(days=30)).isoformat()})
    programme.create_tier({"name": "Silver", "threshold_points": 50})
    member = customers.create_customer({"name": "Member", "email": "member@example.com"})
    interactions.record_interaction({"customer_id": member.id, "kind": "purchase",
                                     "amount": "120", "currency": "USD",
                                     "occurred_at": utcnow().isoformat()})
    service.redeem_points({"customer_id": member.id, "points": 20,
                           "idempotency_key": "redeem-1"})


def _complaints_flows() -> None:
    from plugins.complaints import service

    who = customers.create_customer({"name": "Unhappy", "email": "unhappy@example.com"})
    complaint = service.file_complaint({"customer_id": who.id, "type": "product_quality",
                                        "channel": "email", "subject": "Broken",
                                        "severity": "high"})
    service.transition_complaint({"id": complaint.id, "to": "confirmed",
                                  "cause": "quality_defect"})
    service.escalate_due(utcnow() + dt.timedelta(days=60))


def _churn_flows() -> None:
    from plugins.churn import modeling, service
    from tests.plugins.churn.test_modeling import load_simulation

    load_simulation(n=60, seed=3)
    leaver = customers.create_customer({"name": "Leaver", "email": "leaver@example.com"})
    service.mark_churned({"customer_id": leaver.id, "type": "competitive", "reason": "pricing"})
    modeling.fit_models()
    modeling.score_customers()


def _surveys_flows() -> None:
    from plugins.surveys import service
    from plugins.surveys.importer import ResponseImporter, open_survey_import

    survey = service.create_survey({"title": "After purchase", "anonymous": False,
                                    "questions": [{"key": "nps", "text": "Recommend us?",
                                                   "type": "nps", "required": True}]})
    service.open_survey(survey.id)
    who = customers.create_customer({"name": "Answers", "external_id": "s-1",
                                     "email": "answers@example.com"})
    service.submit_response({"survey_id": survey.id, "customer_id": who.id,
                             "answers": [{"key": "nps", "value": 9}]})
    importer = ResponseImporter(open_survey_import(survey.id))
    importer.import_batch([Record(2, {"customer_external_id": "s-1", "nps": "7",
                                      "submitted_at": "2026-01-05", "external_id": "r-1",
                                      "source": "crm"})])
    db.session.commit()


def _care_flows() -> None:
    from plugins.care import incidents, occasions, rules, service
    from plugins.care.models import TaskStatus

    owner = staff.create_agent({"name": "Owner", "email": "owner@example.com"})
    client = customers.create_customer({"name": "Cared", "owner_id": owner.id})
    tasks = [service.create_task({"customer_id": client.id, "kind": "call", "title": "Call",
                                  "due_on": "2030-01-0" + str(day)}) for day in (1, 2)]
    service.update_task({"id": tasks[0].id, "due_on": "2030-01-03"})
    service.close_task({"id": tasks[0].id, "outcome": "done"}, TaskStatus.DONE)
    service.close_task({"id": tasks[1].id}, TaskStatus.CANCELLED)
    incident = incidents.open_incident({"title": "Outage", "kind": "outage",
                                        "severity": "high"})
    incidents.advance_incident({"id": incident.id, "note": "on it"})
    rule = rules.create_rule({"name": "Welcome", "event_type": "customer.created",
                              "actions": [{"action": "care.create_task", "parameters": {
                                  "kind": "call", "title": "Welcome"}}]}, {"admin"})
    rules.update_rule({"id": rule.id, "enabled": False}, {"admin"})
    rules.delete_rule({"id": rule.id}, {"admin"})
    # A birthday a week ahead (1980 is a leap year: any day exists in it).
    born = (utcnow().date() + dt.timedelta(days=7)).replace(year=1980)
    customers.create_customer({"name": "Birthday", "owner_id": owner.id,
                               "birth_date": born.isoformat()})
    occasions.announce(7)


def test_every_declared_type_is_emitted_with_its_payload(make_app: AppFactory) -> None:
    app = make_app(enabled=["loyalty", "complaints", "churn", "surveys", "webhooks", "care"])
    with app.app_context():
        for flow in (_core_flows, _loyalty_flows, _complaints_flows, _churn_flows,
                     _surveys_flows, _care_flows):
            flow()
        rows = db.session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)).all()
        catalogue = outbox.catalogue()
    emitted = {row.type for row in rows}
    assert sorted(set(catalogue) - emitted) == [], "declared but never emitted"
    assert sorted(emitted - set(catalogue)) == [], "emitted but not declared"
    for row in rows:
        problems = _mismatches(catalogue[row.type].schema, row.data)
        assert not problems, (row.type, row.data, problems)
        text = repr(row.data)
        # The phone in any spelling: as given, its digits, its last ten digits (the blind
        # index's form). Not a four-digit fragment: timestamps' microseconds hold those.
        for secret in (EMAIL, PHONE, "example.com", "example.org", "442079460958",
                       "2079460958", "7946 0958"):
            assert secret not in text, (row.type, row.data)
        assert not {"email", "phone"} & set(row.data)
