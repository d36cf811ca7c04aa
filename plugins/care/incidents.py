"""Incidents: a crisis handled in stages, warning -> response -> recovery -> review, then
closed with the review's conclusions (what the crisis plan should change).

An incident is opened by hand (``openIncident``) or from a core alert: ``openIncident``
with an ``alertId``, or the rule action ``care.open_incident`` on ``alert.raised``. An
alert has at most one incident. Each move goes one stage forward and is recorded on the
incident's timeline, in the audit log and as an ``incident.advanced`` event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core import context
from core.changes import Event, record
from core.db import db, utcnow
from core.errors import ErrorCode, FieldError, UserError
from core.ids import global_id, parse_id
from core.rules import RuleContext
from core.models import Agent, Alert
from core.services import load, not_found, transaction

from plugins.care import schemas
from plugins.care.models import Incident, IncidentStage

#: The stage each move leads to.
NEXT_STAGE = {IncidentStage.WARNING: IncidentStage.RESPONSE,
              IncidentStage.RESPONSE: IncidentStage.RECOVERY,
              IncidentStage.RECOVERY: IncidentStage.REVIEW,
              IncidentStage.REVIEW: IncidentStage.CLOSED}


class IncidentErrorCode:
    ALREADY_CLOSED = "ALREADY_CLOSED"
    REVIEW_REQUIRED = "REVIEW_REQUIRED"
    ALERT_HAS_INCIDENT = "ALERT_HAS_INCIDENT"


INCIDENT_ERROR_CODES = [v for k, v in vars(IncidentErrorCode).items() if k.isupper()]


def _gid(kind: str, ident: int | None) -> str | None:
    return None if ident is None else global_id(kind, ident)


def _payload(incident: Incident) -> dict[str, Any]:
    return {"incidentId": global_id("Incident", incident.id),
            "alertId": _gid("Alert", incident.alert_id), "kind": incident.kind,
            "severity": incident.severity, "stage": incident.stage.value}


def _line(stage: IncidentStage, note: str | None) -> dict[str, Any]:
    return {"stage": stage.value, "at": utcnow().isoformat(), "note": note,
            "actor": context.current().actor.to_json()}


def open_incident(raw: Mapping[str, Any]) -> Incident:
    """A new incident at the warning stage (from an alert: its kind and severity)."""
    data = load(schemas.OpenIncidentSchema(), raw)
    with transaction():
        alert = None
        if data.get("alert_id") is not None:
            alert = db.session.get(Alert, data["alert_id"])
            if alert is None:
                raise not_found("alert", data["alert_id"], "alertId", type_name="Alert")
            if db.session.scalar(select(Incident.id).where(Incident.alert_id == alert.id)):
                raise UserError.single("This alert already has an incident.",
                                       IncidentErrorCode.ALERT_HAS_INCIDENT, "alertId")
        missing = [f for f in ("title", "kind", "severity") if alert is None and f not in data]
        if missing:
            raise UserError([FieldError("Required when no alertId is given.",
                                        ErrorCode.REQUIRED, f) for f in missing])
        owner_id = data.get("owner_id")
        if owner_id is not None and db.session.get(Agent, owner_id) is None:
            raise not_found("agent", owner_id, "ownerId", type_name="Agent")
        kind = data.get("kind") or (alert.kind if alert else "other")
        now = utcnow()
        incident = Incident(
            title=data.get("title") or f"{kind.replace('_', ' ').capitalize()} alert",
            kind=kind, severity=data.get("severity") or (alert.severity if alert else "medium"),
            stage=IncidentStage.WARNING, alert_id=alert.id if alert else None,
            owner_id=owner_id, timeline=[_line(IncidentStage.WARNING, data.get("note"))],
            opened_at=now, stage_changed_at=now)
        try:
            with db.session.begin_nested():  # a concurrent open of the same alert loses here
                db.session.add(incident)
                db.session.flush()
        except IntegrityError:
            raise UserError.single("This alert already has an incident.",
                                   IncidentErrorCode.ALERT_HAS_INCIDENT, "alertId") from None
        objects = [global_id("Incident", incident.id)] + (
            [global_id("Alert", alert.id)] if alert else [])
        record(None, objects, None, [Event("incident.opened", objects[0], _payload(incident))])
    return incident


def advance_incident(raw: Mapping[str, Any]) -> Incident:
    """Move an incident to its next stage; closing (from review) needs the review."""
    data = load(schemas.AdvanceIncidentSchema(), raw)
    with transaction():
        incident = db.session.scalar(select(Incident).where(Incident.id == data["id"])
                                     .with_for_update())
        if incident is None:
            raise not_found("incident", data["id"], type_name="Incident")
        if incident.stage is IncidentStage.CLOSED:
            raise UserError.single("The incident is closed.", IncidentErrorCode.ALREADY_CLOSED,
                                   "id")
        target = NEXT_STAGE[incident.stage]
        if target is IncidentStage.CLOSED and not data.get("review"):
            raise UserError.single("Closing needs the review: what the crisis plan should "
                                   "change.", IncidentErrorCode.REVIEW_REQUIRED, "review")
        before, now = incident.stage, utcnow()
        incident.stage, incident.stage_changed_at = target, now
        incident.timeline = [*incident.timeline, _line(target, data.get("note"))]
        if target is IncidentStage.CLOSED:
            incident.review, incident.closed_at = data["review"], now
        gid = global_id("Incident", incident.id)
        record(None, [gid], None, [Event("incident.advanced", gid, {
            **_payload(incident), "fromStage": before.value})])
    return incident


def open_from_alert_event(event: Mapping[str, Any], parameters: dict[str, Any],
                          rule: RuleContext) -> dict[str, Any]:
    """The ``care.open_incident`` rule action: an incident for the alert of an
    ``alert.raised`` event (once: an alert that has one is left as it is). Choose which
    alerts with the rule's conditions (``severity`` in high, critical)."""
    data = event.get("data") or {}
    try:
        alert_id = parse_id(str(data.get("alertId")), "Alert")
    except ValueError:
        raise UserError.single("The event names no alert (use it on alert.raised).",
                               ErrorCode.INVALID, "alertId") from None
    existing = db.session.scalar(select(Incident.id).where(Incident.alert_id == alert_id))
    if existing is not None:
        return {"incidentId": global_id("Incident", existing), "existed": True}
    incident = open_incident({"alert_id": alert_id, "owner_id": parameters.get("owner_id")})
    return {"incidentId": global_id("Incident", incident.id)}
