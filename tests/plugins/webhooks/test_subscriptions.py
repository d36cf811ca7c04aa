"""Subscriptions: safe targets (server-side request forgery), scopes, validation."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from core.changes import Event, record
from core.db import db
from core.services import transaction
from plugins.webhooks import delivery as sender
from plugins.webhooks.config import webhook_settings
from plugins.webhooks.models import Attempt, Delivery, DeliveryStatus, Endpoint
from plugins.webhooks.targets import UnsafeTarget, forbidden_reason, resolve
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.plugins.webhooks.conftest import CREATE, Receiver, stop_background, subscribe


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "169.254.169.254", "fe80::1", "fd00:ec2::254", "100.64.0.1", "0.0.0.0", "::",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "224.0.0.1", "240.0.0.1",
])
def test_private_loopback_link_local_and_metadata_addresses_are_refused(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.fixture
def production_like(make_app: AppFactory) -> Any:
    """Safe targets enforced (every environment but development), nothing allow-listed."""
    app = make_app(enabled=["webhooks"])
    with app.app_context():
        yield app
    stop_background(app)


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://localhost/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.8/hook", "private"),
    ("http://[::ffff:192.168.0.1]/hook", "private"),
    ("http://2130706433/hook", "loopback"),  # 127.0.0.1 written as a number
    ("ftp://example.com/hook", "http"),
    ("http://user:pw@example.com/hook", "Credentials"),
    ("http:///hook", "no host"),
    ("not a url", "spaces"),
])
def test_unsafe_urls_are_refused_at_creation(production_like: Flask, url: str,
                                             message: str) -> None:
    gql = GraphQL(production_like, admin_token(production_like))
    result = gql(CREATE, {"input": {"url": url, "eventTypes": ["customer.*"]}})["createWebhook"]
    assert result["webhook"] is None and result["secret"] is None
    (error,) = result["errors"]
    assert error["field"] == "input.url"
    assert message in error["message"], error
    assert db.session.scalar(select(Endpoint.id)) is None


def test_an_allow_listed_host_may_be_private(make_app: AppFactory) -> None:
    app = make_app(enabled=["webhooks"], RAPPORT_WEBHOOK_ALLOWED_HOSTS="127.0.0.1, hooks.internal")
    with app.app_context():
        settings = webhook_settings()
        assert resolve("http://127.0.0.1:9/x", settings).address == "127.0.0.1"
        with pytest.raises(UnsafeTarget):
            resolve("http://10.0.0.1/x", settings)


def test_development_allows_local_receivers(make_app: AppFactory) -> None:
    app = make_app(enabled=["webhooks"], RAPPORT_ENV="development")
    with app.app_context():
        assert resolve("http://127.0.0.1:9/x", webhook_settings()).address == "127.0.0.1"


def test_the_target_is_checked_again_at_delivery(production_like: Flask,
                                                 receiver: Receiver) -> None:
    """A URL that became unsafe after it was saved (here written straight to the table,
    as a DNS change would make it) is refused before any connection."""
    with transaction():
        endpoint = Endpoint(url=receiver.url, event_types=["*"], active=True,
                            secret="whsec_" + "A" * 44, scopes=["admin"], created_by={},
                            consecutive_failures=0)
        db.session.add(endpoint)
        db.session.flush()
        record("test", [], events=[Event("customer.erased", "Q3VzdG9tZXI6MQ==",
                                         {"customerId": "Q3VzdG9tZXI6MQ=="})])
    from core import outbox

    assert outbox.relay_all() == 1
    # The relay queued a delivery job after its commit: let it run (it makes the attempt)
    # or, if it has not got there, make the attempt here; either way exactly one.
    stop_background(production_like)
    for delivery_id in sender.claim(webhook_settings(), 10):
        assert sender.attempt(delivery_id) is DeliveryStatus.PENDING
    db.session.expire_all()
    (attempt,) = db.session.scalars(select(Attempt)).all()
    assert attempt.response_code is None and "Refused target" in attempt.error
    assert "loopback" in attempt.error
    assert receiver.received == []


# --- Scopes --------------------------------------------------------------------------------


def test_only_event_types_of_readable_domains(webhooks_app: Flask, receiver: Receiver) -> None:
    key = GraphQL(webhooks_app, admin_token(webhooks_app, ("webhooks:write", "webhooks:read",
                                                           "customers:read")))
    refused = key(CREATE, {"input": {"url": receiver.url,
                                     "eventTypes": ["customer.*", "complaint.filed"]}})
    (error,) = refused["createWebhook"]["errors"]
    assert (error["field"], error["code"]) == ("input.eventTypes.1", "FORBIDDEN")
    assert "complaints:read" in error["message"]
    unknown = key(CREATE, {"input": {"url": receiver.url, "eventTypes": ["nothing.*"]}})
    assert unknown["createWebhook"]["errors"][0]["code"] == "INVALID"
    bad = key(CREATE, {"input": {"url": receiver.url, "eventTypes": ["customer.*.x"]}})
    assert bad["createWebhook"]["errors"][0]["field"] == "input.eventTypes.0"
    subscribe(key, receiver.url, ["*"])  # a wildcard: only the readable types arrive


def test_writing_webhooks_needs_the_scope(webhooks_app: Flask, receiver: Receiver) -> None:
    reader = GraphQL(webhooks_app, admin_token(webhooks_app, ("webhooks:read",
                                                              "customers:read")))
    response = reader.raw(CREATE, {"input": {"url": receiver.url, "eventTypes": ["*"]}})
    assert response.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    stranger = GraphQL(webhooks_app, admin_token(webhooks_app, ("customers:read",)))
    response = stranger.raw("{ webhooks { totalCount } }")
    assert response.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_the_domain_is_checked_again_at_delivery(webhooks_app: Flask, gql: GraphQL,
                                                 receiver: Receiver) -> None:
    """The scopes stored with the endpoint decide each delivery: an event of a domain
    they do not read is skipped, never sent."""
    customers_only = GraphQL(webhooks_app, admin_token(
        webhooks_app, ("webhooks:write", "webhooks:read", "customers:read")))
    subscribe(customers_only, receiver.url, ["*"])
    with transaction():
        # An alert event: alerts:read is not among the endpoint's scopes.
        record("test", [], events=[Event("alert.raised", "QWxlcnQ6MQ==", {
            "alertId": "QWxlcnQ6MQ==", "kind": "spike", "severity": "high",
            "source": "test", "customerId": None})])
        endpoint = db.session.scalar(select(Endpoint))
        endpoint.event_types = ["*"]
    from core import outbox

    stop_background(webhooks_app)
    outbox.relay_all()
    assert db.session.scalar(select(Delivery.id)) is None  # not fanned out to it
    # Scopes narrowed after subscribing: a pending delivery is skipped when attempted.
    with transaction():
        db.session.add(Delivery(endpoint_id=endpoint.id, event_id="evt_x",
                                event_type="alert.raised", status=DeliveryStatus.DELIVERING,
                                attempt_count=0))
    delivery_id = db.session.scalar(select(Delivery.id))
    assert sender.attempt(delivery_id) is DeliveryStatus.SKIPPED
    assert "no longer read" in db.session.get(Delivery, delivery_id).last_error
    assert receiver.received == []


def test_update_and_delete(gql: GraphQL, receiver: Receiver) -> None:
    webhook_id, _ = subscribe(gql, receiver.url, ["customer.created"])
    updated = gql("""mutation($input: UpdateWebhookInput!) { updateWebhook(input: $input) {
      webhook { eventTypes active } errors { field code } } }""",
                  {"input": {"id": webhook_id, "eventTypes": ["customer.*", "customer.*"],
                             "active": False}})["updateWebhook"]
    assert updated == {"webhook": {"eventTypes": ["customer.*"], "active": False}, "errors": []}
    listed = gql("{ webhooks(active: false) { totalCount edges { node { id } } } }")
    assert listed["webhooks"]["totalCount"] == 1
    deleted = gql("""mutation($id: ID!) { deleteWebhook(input: {id: $id}) {
      deletedId errors { code } } }""", {"id": webhook_id})["deleteWebhook"]
    assert deleted == {"deletedId": webhook_id, "errors": []}
    again = gql("""mutation($id: ID!) { deleteWebhook(input: {id: $id}) {
      errors { code } } }""", {"id": webhook_id})["deleteWebhook"]
    assert again["errors"][0]["code"] == "NOT_FOUND"
    assert gql("{ webhooks { totalCount } }")["webhooks"]["totalCount"] == 0


def test_the_list_pages_through_every_webhook(gql: GraphQL, receiver: Receiver) -> None:
    made = [subscribe(gql, receiver.url, ["customer.created"])[0] for _ in range(3)]
    page = """query($after: String) { webhooks(first: 2, after: $after) {
      edges { node { id } } pageInfo { hasNextPage endCursor } } }"""
    first = gql(page)["webhooks"]
    second = gql(page, {"after": first["pageInfo"]["endCursor"]})["webhooks"]
    seen = [e["node"]["id"] for e in first["edges"] + second["edges"]]
    assert seen == made and first["pageInfo"]["hasNextPage"]
    assert not second["pageInfo"]["hasNextPage"]


def test_secrets_are_encrypted_at_rest(gql: GraphQL, receiver: Receiver) -> None:
    from sqlalchemy import text

    webhook_id, secret = subscribe(gql, receiver.url, ["customer.*"])
    stored = db.session.execute(text("SELECT secret FROM webhooks_endpoints")).scalar_one()
    assert secret not in stored and secret.removeprefix("whsec_") not in stored
    assert db.session.scalar(select(Endpoint.secret)) == secret


def test_a_batch_whose_worker_died_is_claimed_again(production_like: Flask) -> None:
    """A lease that ran out (the worker died mid-attempt) makes the delivery due again;
    a live lease keeps other senders off the endpoint."""
    import datetime as dt

    from core.db import utcnow

    with transaction():
        endpoint = Endpoint(url="https://hooks.example.com/x", event_types=["*"], active=True,
                            secret="whsec_" + "A" * 44, scopes=["admin"], created_by={},
                            consecutive_failures=0)
        db.session.add(endpoint)
        db.session.flush()
        stale = Delivery(endpoint_id=endpoint.id, event_id="evt_a", event_type="alert.raised",
                         status=DeliveryStatus.DELIVERING, attempt_count=1,
                         leased_until=utcnow() - dt.timedelta(seconds=1))
        waiting = Delivery(endpoint_id=endpoint.id, event_id="evt_b", event_type="alert.raised",
                           status=DeliveryStatus.PENDING, attempt_count=0,
                           next_attempt_at=utcnow() - dt.timedelta(seconds=1))
        db.session.add_all([stale, waiting])
    settings = webhook_settings()
    assert sorted(sender.claim(settings, 10)) == sorted([stale.id, waiting.id])
    assert sender.claim(settings, 10) == []  # leased now: nothing more to take
    with transaction():
        db.session.add(Delivery(endpoint_id=endpoint.id, event_id="evt_c",
                                event_type="alert.raised", status=DeliveryStatus.PENDING,
                                attempt_count=0, next_attempt_at=utcnow()))
    assert sender.claim(settings, 10) == []  # another sender holds this endpoint


def test_an_edited_cursor_is_bad_input(gql: GraphQL) -> None:
    import base64

    forged = base64.urlsafe_b64encode(b'["x"]').decode().rstrip("=")
    body = gql.raw("query($a: String) { webhooks(after: $a) { totalCount } }",
                   {"a": forged}).get_json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
