"""Staff members (agents) and the alerts any plugin raises through core."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from core import changes as audit
from core.app import rapport
from core.attributes import stored_misfits
from core.db import db, utcnow
from core.errors import ErrorCode, UserError
from core.ids import global_id
from core.models import (
    Agent, Alert, AlertStatus, AttributeType, Customer, CustomerAttributeDefinition,
)
from core.schemas import AgentSchema, AttributeDefinitionSchema
from core.services import load, not_found, transaction

ALERT_SEVERITIES = ("info", "low", "medium", "high", "critical")


def create_agent(raw: Mapping[str, Any]) -> Agent:
    data = load(AgentSchema(), raw)
    with transaction():
        if db.session.scalar(select(Agent.id).where(Agent.email == data["email"].lower())):
            raise UserError.single(f"An agent with e-mail {data['email']} exists.",
                                   ErrorCode.UNIQUE, "email")
        agent = Agent(name=data["name"], email=data["email"].lower(), team=data.get("team"),
                      role=data["role"], active=True)
        db.session.add(agent)
        db.session.flush()
        gid = global_id("Agent", agent.id)
        audit.record(None, [gid], {"name": [None, agent.name], "team": [None, agent.team],
                                   "role": [None, agent.role]})
    return agent


def raise_alert(kind: str, severity: str, source: str, evidence: Mapping[str, Any],
                customer: Customer | None = None) -> Alert:
    """Store an alert in the caller's transaction and announce it (``rapport_alert_raised``).

    ``evidence`` is JSON-serialisable: the figures that justify the alert (window count,
    expected count, score...). The caller commits.
    """
    if severity not in ALERT_SEVERITIES:
        raise ValueError(f"severity {severity!r}: use one of {', '.join(ALERT_SEVERITIES)}")
    alert = Alert(kind=kind, severity=severity, source=source, evidence=dict(evidence),
                  customer_id=customer.id if customer is not None else None,
                  status=AlertStatus.OPEN, raised_at=utcnow())
    db.session.add(alert)
    db.session.flush()
    rapport().hook.rapport_alert_raised(alert=alert)
    gid = global_id("Alert", alert.id)
    customer_gid = None if customer is None else global_id("Customer", customer.id)
    audit.record(None, [gid, *([customer_gid] if customer_gid else [])], None, [
        audit.Event("alert.raised", gid, {
            "alertId": gid, "kind": kind, "severity": severity, "source": source,
            "customerId": customer_gid})])
    return alert


def acknowledge_alert(alert_id: int, agent_id: int | None = None) -> Alert:
    with transaction():
        alert = db.session.get(Alert, alert_id)
        if alert is None:
            raise not_found("alert", alert_id, type_name="Alert")
        if alert.status != AlertStatus.OPEN:
            raise UserError.single(f"The alert is already {alert.status.value}.",
                                   ErrorCode.NOT_ALLOWED, "id")
        alert.status = AlertStatus.ACKNOWLEDGED
        alert.acknowledged_at = utcnow()
        alert.acknowledged_by_id = agent_id
        audit.record(None, [global_id("Alert", alert.id)],
                     {"status": [AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED]})
    return alert


def define_customer_attribute(raw: Mapping[str, Any]) -> CustomerAttributeDefinition:
    """Declare (or re-label) a custom attribute; its type cannot change once declared, and
    values customers already hold must fit it (``core.attributes.stored_misfits``)."""
    data = load(AttributeDefinitionSchema(), raw)
    with transaction():
        definition = db.session.get(CustomerAttributeDefinition, data["key"])
        if definition is not None and definition.type.value != data["type"]:
            raise UserError.single(
                f"Attribute {data['key']!r} is declared as {definition.type.value}; its type "
                f"cannot change.", ErrorCode.CONFLICT, "type")
        before = None if definition is None else {
            "type": definition.type, "label": definition.label,
            "categories": definition.categories}
        if definition is None or (definition.categories or []) != (data.get("categories")
                                                                   or []):
            # Values customers already hold must fit the new type (or categories).
            misfit = stored_misfits(CustomerAttributeDefinition(
                key=data["key"], type=AttributeType(data["type"]), label=data["label"],
                categories=data.get("categories")))
            if misfit is not None:
                raise UserError(misfit)
        if definition is None:
            definition = CustomerAttributeDefinition(key=data["key"], type=data["type"])
            db.session.add(definition)
        definition.label = data["label"]
        definition.categories = data.get("categories")
        after = {"type": data["type"], "label": data["label"],
                 "categories": data.get("categories")}
        audit.record(None, [], {f"attributes.{data['key']}": [before, after]})
    return definition
