"""Staff members (agents) and the alerts any plugin raises through core."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from core.app import rapport
from core.db import db, utcnow
from core.errors import ErrorCode, UserError
from core.models import Agent, Alert, AlertStatus, Customer, CustomerAttributeDefinition
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
                      active=True)
        db.session.add(agent)
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
    return alert


def acknowledge_alert(alert_id: int, agent_id: int | None = None) -> Alert:
    with transaction():
        alert = db.session.get(Alert, alert_id)
        if alert is None:
            raise not_found("alert", alert_id)
        if alert.status != AlertStatus.OPEN:
            raise UserError.single(f"The alert is already {alert.status.value}.",
                                   ErrorCode.NOT_ALLOWED, "id")
        alert.status = AlertStatus.ACKNOWLEDGED
        alert.acknowledged_at = utcnow()
        alert.acknowledged_by_id = agent_id
    return alert


def define_customer_attribute(raw: Mapping[str, Any]) -> CustomerAttributeDefinition:
    """Declare (or re-label) a custom attribute; its type cannot change once declared."""
    data = load(AttributeDefinitionSchema(), raw)
    with transaction():
        definition = db.session.get(CustomerAttributeDefinition, data["key"])
        if definition is not None and definition.type.value != data["type"]:
            raise UserError.single(
                f"Attribute {data['key']!r} is declared as {definition.type.value}; its type "
                f"cannot change.", ErrorCode.CONFLICT, "type")
        if definition is None:
            definition = CustomerAttributeDefinition(key=data["key"], type=data["type"])
            db.session.add(definition)
        definition.label = data["label"]
        definition.categories = data.get("categories")
    return definition
