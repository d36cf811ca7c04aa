"""Subscriptions: create, update, delete, rotate the secret, ping, redeliver.

Plain functions: validated data in, rows out, one transaction each (audited through
``core.changes.record``). A subscription may only name event types of domains the caller
can read; its key's scopes are stored with it and checked again at every delivery.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import select, update

from core import context, outbox
from core.changes import new_event_id, record
from core.db import db, utcnow
from core.errors import ErrorCode, FieldError, UserError
from core.ids import global_id
from core.services import load, not_found, transaction

from plugins.webhooks import schemas
from plugins.webhooks.config import webhook_settings
from plugins.webhooks.models import Delivery, DeliveryStatus, Endpoint, FINAL_STATUSES
from plugins.webhooks.targets import UnsafeTarget, resolve

SECRET_PREFIX = "whsec_"
PING_TYPE = "webhook.ping"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


# --- Event types: patterns and domains ------------------------------------------------------


def matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def may_read(scopes: Collection[str], domain: str) -> bool:
    return "admin" in scopes or f"{domain}:read" in scopes


def subscribed(patterns: Iterable[str], scopes: Collection[str], event_type: str) -> bool:
    """Whether an endpoint with these patterns, created with these scopes, gets the type."""
    known = outbox.catalogue().get(event_type)
    if known is None or not may_read(scopes, known.domain):
        return False
    return any(matches(p, event_type) for p in patterns)


def check_patterns(patterns: list[str], scopes: Collection[str]) -> list[str]:
    """The patterns, de-duplicated; ``UserError`` on a pattern that names no declared type
    or only types of domains the caller cannot read."""
    types = outbox.catalogue()
    errors: list[FieldError] = []
    for index, pattern in enumerate(patterns):
        named = [t for t in types.values() if matches(pattern, t.type)]
        if not named:
            errors.append(FieldError(f"{pattern!r} names no event type; see docs/events.md.",
                                     ErrorCode.INVALID, f"eventTypes.{index}"))
        elif not any(may_read(scopes, t.domain) for t in named):
            domains = sorted({t.domain for t in named})
            errors.append(FieldError(
                f"{pattern!r} names events of {', '.join(domains)}, which this key may not "
                f"read (it needs {' or '.join(d + ':read' for d in domains)}).",
                "FORBIDDEN", f"eventTypes.{index}"))
    if errors:
        raise UserError(errors)
    return list(dict.fromkeys(patterns))


def _check_url(url: str) -> str:
    try:
        resolve(url, webhook_settings())
    except UnsafeTarget as exc:
        raise UserError.single(str(exc), "UNSAFE_URL", "url") from None
    return url


def _endpoint(endpoint_id: int, *, lock: bool = False) -> Endpoint:
    found = db.session.get(Endpoint, endpoint_id, with_for_update=lock or None)
    if found is None:
        raise not_found("webhook", global_id("Webhook", endpoint_id))
    return found


def _audit(operation: str, endpoint_id: int, changes: dict[str, Any] | None = None) -> None:
    record(operation, [global_id("Webhook", endpoint_id)], changes)


# --- Subscriptions ----------------------------------------------------------------------------


def create_webhook(raw: dict[str, Any], scopes: Collection[str]) -> tuple[Endpoint, str]:
    """Subscribe; returns the endpoint and its secret (shown this once)."""
    data = load(schemas.CreateWebhookSchema(), raw)
    patterns = check_patterns(data["event_types"], scopes)
    url = _check_url(data["url"])
    secret = new_secret()
    with transaction():
        endpoint = Endpoint(url=url, description=data.get("description"), event_types=patterns,
                            active=data["active"], secret=secret, scopes=sorted(scopes),
                            created_by=context.current().actor.to_json(),
                            consecutive_failures=0)
        db.session.add(endpoint)
        db.session.flush()
        _audit("createWebhook", endpoint.id, {"url": [None, url],
                                               "eventTypes": [None, patterns]})
    return endpoint, secret


def update_webhook(raw: dict[str, Any], scopes: Collection[str]) -> Endpoint:
    """Change the URL, the event types, the description or the active flag.

    New event types are checked against the caller's scopes, which then replace the
    stored ones; reactivating clears the failure count and the disabled reason.
    """
    data = load(schemas.UpdateWebhookSchema(), raw)
    patterns = check_patterns(data["event_types"], scopes) if "event_types" in data else None
    if "url" in data:
        _check_url(data["url"])
    with transaction():
        endpoint = _endpoint(data["id"], lock=True)
        changes: dict[str, Any] = {}
        if "url" in data and data["url"] != endpoint.url:
            changes["url"] = [endpoint.url, data["url"]]
            endpoint.url = data["url"]
        if patterns is not None:
            changes["eventTypes"] = [endpoint.event_types, patterns]
            endpoint.event_types = patterns
            endpoint.scopes = sorted(scopes)
        if "description" in data:
            endpoint.description = data["description"]
        if "active" in data and data["active"] != endpoint.active:
            changes["active"] = [endpoint.active, data["active"]]
            endpoint.active = data["active"]
            if endpoint.active:
                endpoint.disabled_at = None
                endpoint.disabled_reason = None
                endpoint.consecutive_failures = 0
        endpoint.updated_at = utcnow()
        _audit("updateWebhook", endpoint.id, changes or None)
    return endpoint


def delete_webhook(raw: dict[str, Any]) -> int:
    """Unsubscribe: the endpoint, its deliveries and their attempts go."""
    data = load(schemas.IdSchema(), raw)
    with transaction():
        endpoint = _endpoint(data["id"], lock=True)
        _audit("deleteWebhook", endpoint.id, {"url": [endpoint.url, None]})
        db.session.delete(endpoint)
    return int(data["id"])


def rotate_secret(raw: dict[str, Any]) -> tuple[Endpoint, str]:
    """A new secret; the old one still signs (a second signature) for the overlap."""
    data = load(schemas.RotateSecretSchema(), raw)
    overlap = data.get("overlap_seconds")
    if overlap is None:
        overlap = webhook_settings().secret_overlap
    secret = new_secret()
    now = utcnow()
    with transaction():
        endpoint = _endpoint(data["id"], lock=True)
        endpoint.previous_secret = endpoint.secret if overlap > 0 else None
        endpoint.previous_secret_until = now + dt.timedelta(seconds=overlap) if overlap else None
        endpoint.secret = secret
        endpoint.updated_at = now
        _audit("rotateWebhookSecret", endpoint.id)
    return endpoint, secret


def signing_secrets(endpoint: Endpoint, now: dt.datetime) -> list[str]:
    found = [endpoint.secret]
    if (endpoint.previous_secret and endpoint.previous_secret_until is not None
            and endpoint.previous_secret_until > now):
        found.append(endpoint.previous_secret)
    return found


# --- Ping and redelivery ------------------------------------------------------------------------


def ping(raw: dict[str, Any]) -> Delivery:
    """Queue a ``webhook.ping`` event to the endpoint (active or not), at once."""
    data = load(schemas.IdSchema(), raw)
    with transaction():
        endpoint = _endpoint(data["id"])
        event_id = new_event_id()
        body = {"id": event_id, "type": PING_TYPE, "occurredAt": outbox.isoformat(utcnow()),
                "actor": context.current().actor.to_json(),
                "data": {"webhookId": global_id("Webhook", endpoint.id)}}
        delivery = Delivery(endpoint_id=endpoint.id, event_id=event_id, event_type=PING_TYPE,
                            body=body, status=DeliveryStatus.PENDING, attempt_count=0,
                            next_attempt_at=utcnow())
        db.session.add(delivery)
        db.session.flush()
        _audit("pingWebhook", endpoint.id)
    from plugins.webhooks import delivery as sender

    sender.kick()
    return delivery


def redeliver(raw: dict[str, Any]) -> Delivery:
    """Send a finished delivery again (same ``webhook-id``), with a fresh set of attempts."""
    data = load(schemas.IdSchema(), raw)
    with transaction():
        delivery = db.session.get(Delivery, data["id"], with_for_update=True)
        if delivery is None:
            raise not_found("webhook delivery", global_id("WebhookDelivery", data["id"]))
        if delivery.status not in FINAL_STATUSES:
            raise UserError.single("This delivery is still being tried; redeliver it once it "
                                   "succeeded or is dead.", ErrorCode.CONFLICT, "id")
        endpoint = _endpoint(delivery.endpoint_id)
        if not endpoint.active and delivery.event_type != PING_TYPE:
            raise UserError.single("The webhook is disabled; activate it (updateWebhook) "
                                   "first.", ErrorCode.CONFLICT, "id")
        delivery.status = DeliveryStatus.PENDING
        delivery.attempt_count = 0
        delivery.next_attempt_at = utcnow()
        delivery.leased_until = None
        delivery.finished_at = None
        _audit("redeliverWebhook", endpoint.id)
    from plugins.webhooks import delivery as sender

    sender.kick()
    return delivery


def endpoints_query(active: bool | None = None) -> Any:
    stmt = select(Endpoint)
    if active is not None:
        stmt = stmt.where(Endpoint.active.is_(active))
    return stmt


def skip_pending(endpoint_id: int, reason: str) -> None:
    """Mark the endpoint's waiting deliveries skipped (it was disabled)."""
    db.session.execute(update(Delivery).where(
        Delivery.endpoint_id == endpoint_id, Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.SKIPPED, last_error=reason, finished_at=utcnow()))
