"""Fixtures of the webhooks tests: an app with the plugin, a real HTTP receiver on
127.0.0.1 (allowed through RAPPORT_WEBHOOK_ALLOWED_HOSTS), and helpers that wait for the
background threads (relay, delivery jobs) to do their work."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask

from core import jobs, outbox
from tests.conftest import AppFactory, GraphQL, admin_token


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server answering each POST with the next status of ``statuses`` (then 200)."""

    server: ThreadingHTTPServer
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.received)} of {count} webhooks arrived in time"
                self.arrived.wait(left)
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            target = holder["receiver"]
            with target.arrived:
                status = target.statuses.pop(0) if target.statuses else 200
                target.received.append(Received(self.path, dict(self.headers.items()), body))
                target.arrived.notify_all()
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["receiver"] = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder["receiver"]
    # shutdown() waits for serve_forever() to acknowledge: never call it on a loop that
    # is gone, or the suite hangs instead of reporting the failure that stopped it.
    if thread.is_alive():
        server.shutdown()
    thread.join(5)
    server.server_close()


WEBHOOK_CONFIG = {"RAPPORT_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
                  "RAPPORT_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
                  "RAPPORT_WEBHOOK_TIMEOUT_SECONDS": "3"}


def stop_background(app: Flask) -> None:
    """Stop the embedded relay and let the job threads finish (before the tables go)."""
    from plugins.webhooks import delivery

    delivery.cancel_reminder(app)
    state = app.extensions.get(outbox.EXTENSION)
    if state is not None and state.relay is not None:
        state.relay.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            t.name == "rapport-after-commit" for t in threading.enumerate()):
        time.sleep(0.02)
    jobs.wait_for_threads(app)
    delivery.cancel_reminder(app)


@pytest.fixture
def webhooks_app(make_app: AppFactory) -> Iterator[Flask]:
    """Webhooks and complaints enabled; the relay on its thread, as in a server."""
    app = make_app(enabled=["webhooks", "complaints"], RAPPORT_OUTBOX_RELAY="thread",
                   **WEBHOOK_CONFIG)
    with app.app_context():
        yield app
    stop_background(app)


@pytest.fixture
def gql(webhooks_app: Flask) -> GraphQL:
    return GraphQL(webhooks_app, admin_token(webhooks_app))


CREATE = """mutation($input: CreateWebhookInput!) { createWebhook(input: $input) {
  webhook { id url eventTypes active } secret errors { field code message } } }"""


def subscribe(gql: GraphQL, url: str, event_types: list[str], **kwargs: Any
              ) -> tuple[str, str]:
    """Create a webhook; return its id and secret."""
    result = gql(CREATE, {"input": {"url": url, "eventTypes": event_types}},
                 **kwargs)["createWebhook"]
    assert result["errors"] == [], result["errors"]
    return result["webhook"]["id"], result["secret"]


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "the condition never became true"
        time.sleep(0.05)
