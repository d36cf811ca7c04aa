"""GraphQL: ``webhooks``, ``webhookDeliveries`` and the subscription mutations.

The secret is returned by ``createWebhook`` and ``rotateWebhookSecret`` only; no query
shows it again. Every type belongs to the ``webhooks`` domain.
"""

from __future__ import annotations

from typing import Any

import graphene
from graphene import relay
from sqlalchemy import select

from api import (
    RapportMutation, connection, ctx, domain, error_type, global_id, node_type,
    scoped,
)
from api.pagination import bad_input, keyset_page
from api.types import decode_global_id
from core.db import db

from plugins.webhooks import service
from plugins.webhooks.models import (
    Attempt, AttemptOutcome, Delivery, DeliveryStatus, Endpoint,
)

READ, WRITE = "webhooks:read", "webhooks:write"

WebhookError = error_type("Webhook", ["FORBIDDEN", "UNSAFE_URL"])
WebhookDeliveryStatus = graphene.Enum.from_enum(DeliveryStatus, name="WebhookDeliveryStatus")
WebhookAttemptOutcome = graphene.Enum.from_enum(AttemptOutcome, name="WebhookAttemptOutcome")


@domain("webhooks")
@node_type(Endpoint)
class Webhook(graphene.ObjectType):
    """A subscription: events of the listed types are POSTed to ``url``, signed."""

    class Meta:
        interfaces = (relay.Node,)

    url = graphene.String(required=True)
    description = graphene.String()
    event_types = graphene.List(graphene.NonNull(graphene.String), required=True,
                                description="Types, prefixes with a wildcard (customer.*) "
                                            "or *.")
    active = graphene.Boolean(required=True)
    disabled_at = graphene.DateTime()
    disabled_reason = graphene.String(description="Why it was disabled: a 410 Gone answer, "
                                                  "or too many failures in a row.")
    consecutive_failures = graphene.Int(required=True)
    previous_secret_expires_at = graphene.DateTime(description=(
        "Until then the secret before the last rotation also signs each delivery."))
    created_at = graphene.DateTime(required=True)
    updated_at = graphene.DateTime(required=True)

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return db.session.get(Endpoint, int(id))

    @staticmethod
    def resolve_previous_secret_expires_at(root: Endpoint, info: Any) -> Any:
        return root.previous_secret_until if root.previous_secret else None


@domain("webhooks")
class WebhookAttempt(graphene.ObjectType):
    """One HTTP request of a delivery."""

    attempted_at = graphene.DateTime(required=True)
    outcome = graphene.Field(WebhookAttemptOutcome, required=True)
    response_code = graphene.Int()
    latency_ms = graphene.Int()
    error = graphene.String()


@domain("webhooks")
@node_type(Delivery)
class WebhookDelivery(graphene.ObjectType):
    """One event for one webhook, and its attempts (oldest first)."""

    class Meta:
        interfaces = (relay.Node,)

    webhook = graphene.Field(Webhook, required=True)
    event_id = graphene.String(required=True, description="The webhook-id header.")
    event_type = graphene.String(required=True)
    status = graphene.Field(WebhookDeliveryStatus, required=True)
    attempt_count = graphene.Int(required=True)
    next_attempt_at = graphene.DateTime(description="When PENDING: the next attempt.")
    last_response_code = graphene.Int()
    last_error = graphene.String()
    created_at = graphene.DateTime(required=True)
    finished_at = graphene.DateTime()
    attempts = graphene.List(graphene.NonNull(WebhookAttempt), required=True)

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return db.session.get(Delivery, int(id))

    @staticmethod
    def resolve_webhook(root: Delivery, info: Any) -> Any:
        return db.session.get(Endpoint, root.endpoint_id)

    @staticmethod
    def resolve_next_attempt_at(root: Delivery, info: Any) -> Any:
        return root.next_attempt_at if root.status is DeliveryStatus.PENDING else None

    @staticmethod
    def resolve_attempts(root: Delivery, info: Any) -> list[Attempt]:
        return list(db.session.scalars(select(Attempt).where(
            Attempt.delivery_id == root.id).order_by(Attempt.id)))


WebhookConnection = connection(Webhook, "Webhook")
WebhookDeliveryConnection = connection(WebhookDelivery, "WebhookDelivery")


def _decode(value: str, type_name: str, field: str) -> int:
    try:
        return decode_global_id(value, type_name)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise bad_input(f"{field}: {exc}") from None


def resolve_webhooks(root: Any, info: Any, first: int | None = None, after: str | None = None,
                     active: bool | None = None) -> Any:
    return keyset_page(service.endpoints_query(active), [Endpoint.id], first, after,
                       kinds=(int,))


def resolve_webhook_deliveries(root: Any, info: Any, webhook_id: str, first: int | None = None,
                               after: str | None = None, status: Any = None) -> Any:
    endpoint_id = _decode(webhook_id, "Webhook", "webhookId")
    query = select(Delivery).where(Delivery.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(Delivery.status == DeliveryStatus(getattr(status, "value", status)))
    return keyset_page(query, [Delivery.id], first, after, kinds=(int,), descending=True)


# --- Mutations -------------------------------------------------------------------------------


class CreateWebhookInput(graphene.InputObjectType):
    url = graphene.String(required=True)
    event_types = graphene.List(graphene.NonNull(graphene.String), required=True, description=(
        "Event types (complaint.filed), prefixes with a wildcard (customer.*) or *; only "
        "types of domains this key can read."))
    active = graphene.Boolean(description="Default true.")
    description = graphene.String()


class UpdateWebhookInput(graphene.InputObjectType):
    id = graphene.ID(required=True)
    url = graphene.String()
    event_types = graphene.List(graphene.NonNull(graphene.String))
    active = graphene.Boolean(description="true re-enables a disabled webhook.")
    description = graphene.String()


class DeleteWebhookInput(graphene.InputObjectType):
    id = graphene.ID(required=True)


class PingWebhookInput(graphene.InputObjectType):
    id = graphene.ID(required=True)


class RotateWebhookSecretInput(graphene.InputObjectType):
    id = graphene.ID(required=True)
    overlap_seconds = graphene.Int(description=(
        "How long the old secret still signs (a second signature); default "
        "RAPPORT_WEBHOOK_SECRET_OVERLAP_SECONDS, 0 stops it at once, at most 7 days."))


class RedeliverWebhookInput(graphene.InputObjectType):
    delivery_id = graphene.ID(required=True)


def _scopes(info: Any) -> frozenset[str]:
    return ctx(info).principal.scopes  # type: ignore[no-any-return]


class CreateWebhook(RapportMutation):
    """Subscribe; the secret (``whsec_...``) is shown this once."""

    class Arguments:
        input = CreateWebhookInput(required=True)

    webhook = graphene.Field(Webhook)
    secret = graphene.String(description="Verify signatures with it; it is not shown again.")
    scope = WRITE
    error_type = WebhookError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CreateWebhook:
        endpoint, secret = service.create_webhook(input, _scopes(info))
        return cls(webhook=endpoint, secret=secret)


class UpdateWebhook(RapportMutation):
    class Arguments:
        input = UpdateWebhookInput(required=True)

    webhook = graphene.Field(Webhook)
    scope = WRITE
    error_type = WebhookError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> UpdateWebhook:
        input["id"] = global_id(input, "id", "Webhook")
        return cls(webhook=service.update_webhook(input, _scopes(info)))


class DeleteWebhook(RapportMutation):
    class Arguments:
        input = DeleteWebhookInput(required=True)

    deleted_id = graphene.ID()
    scope = WRITE
    error_type = WebhookError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> DeleteWebhook:
        raw_id = input.get("id")
        input["id"] = global_id(input, "id", "Webhook")
        service.delete_webhook(input)
        return cls(deleted_id=raw_id)


class RotateWebhookSecret(RapportMutation):
    """A new secret; the old one keeps signing (a second signature) for the overlap."""

    class Arguments:
        input = RotateWebhookSecretInput(required=True)

    webhook = graphene.Field(Webhook)
    secret = graphene.String(description="The new secret; it is not shown again.")
    scope = WRITE
    error_type = WebhookError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> RotateWebhookSecret:
        input["id"] = global_id(input, "id", "Webhook")
        endpoint, secret = service.rotate_secret(input)
        return cls(webhook=endpoint, secret=secret)


class PingWebhook(RapportMutation):
    """Send a ``webhook.ping`` event now (also to a disabled webhook)."""

    class Arguments:
        input = PingWebhookInput(required=True)

    delivery = graphene.Field(WebhookDelivery)
    scope = WRITE
    error_type = WebhookError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> PingWebhook:
        input["id"] = global_id(input, "id", "Webhook")
        return cls(delivery=service.ping(input))


class RedeliverWebhook(RapportMutation):
    """Send a finished (succeeded, dead or skipped) delivery again, same webhook-id."""

    class Arguments:
        input = RedeliverWebhookInput(required=True)

    delivery = graphene.Field(WebhookDelivery)
    scope = WRITE
    error_type = WebhookError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> RedeliverWebhook:
        delivery_id = global_id(input, "delivery_id", "WebhookDelivery")
        return cls(delivery=service.redeliver({"id": delivery_id}))


def query_fields() -> dict[str, graphene.Field]:
    return {
        "webhooks": scoped(graphene.Field(
            WebhookConnection, required=True, first=graphene.Int(), after=graphene.String(),
            active=graphene.Boolean(), resolver=resolve_webhooks,
            description="Webhook subscriptions, oldest first."), READ),
        "webhookDeliveries": scoped(graphene.Field(
            WebhookDeliveryConnection, required=True, webhook_id=graphene.ID(required=True),
            status=WebhookDeliveryStatus(), first=graphene.Int(), after=graphene.String(),
            resolver=resolve_webhook_deliveries,
            description="A webhook's deliveries, newest first, with their attempts."), READ),
    }


MUTATIONS: dict[str, type[RapportMutation]] = {
    "createWebhook": CreateWebhook, "updateWebhook": UpdateWebhook,
    "deleteWebhook": DeleteWebhook, "rotateWebhookSecret": RotateWebhookSecret,
    "pingWebhook": PingWebhook, "redeliverWebhook": RedeliverWebhook,
}

NODE_TYPES = [Webhook, WebhookDelivery]
