"""Webhooks through a real broker and a real ``rapport worker`` process: the relay and the
deliveries run as jobs in the worker (RAPPORT_TEST_BROKER_URL; skipped without it unless
RAPPORT_REQUIRE_BROKER=1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from standardwebhooks import Webhook

from tests.conftest import AppFactory, GraphQL, admin_token
from tests.core.test_jobs_broker import Workers, app_on_broker, broker  # noqa: F401 - fixture
from tests.plugins.webhooks.conftest import Receiver, WEBHOOK_CONFIG, eventually, subscribe
from tests.plugins.webhooks.test_delivery import WEBHOOK, create_customer, deliveries


@pytest.fixture
def worker_app(broker: str, make_app: AppFactory, database_url: str,  # noqa: F811
               tmp_path: Path) -> Iterator[tuple[Flask, Workers]]:
    with app_on_broker(make_app, broker, database_url, tmp_path, ["webhooks"],
                       **WEBHOOK_CONFIG) as pair:
        yield pair


def test_events_reach_the_receiver_through_a_worker(worker_app: Any,
                                                    receiver: Receiver) -> None:
    app, workers = worker_app
    assert app.extensions["rapport_outbox"].mode == "worker"
    workers.start()
    gql = GraphQL(app, admin_token(app))
    receiver.statuses = [500]
    webhook_id, secret = subscribe(gql, receiver.url, ["customer.created"])
    customer_id = create_customer(gql)

    try:
        first, second = receiver.wait_for(2, timeout=60)
    except AssertionError:
        print(workers.log(1))
        raise
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    envelope = Webhook(secret).verify(second.body, second.headers)
    assert envelope["data"]["customerId"] == customer_id
    (delivery,) = eventually(lambda: deliveries(gql, webhook_id, "SUCCEEDED"), timeout=30)
    assert [a["responseCode"] for a in delivery["attempts"]] == [500, 200]

    receiver.statuses = [410]
    create_customer(gql, "Grace")
    receiver.wait_for(3, timeout=60)
    eventually(lambda: not gql(WEBHOOK, {"id": webhook_id})["node"]["active"], timeout=30)
