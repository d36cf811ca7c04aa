"""The embedded outbox relay on a SQLite file another process is writing to (``rapport
serve`` while ``rapport demo`` runs): a busy database makes it wait and retry on its next
pass, logged at debug level, never an error."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event

from core import outbox
from core.db import db
from core.services.customers import create_customer
from tests.conftest import AppFactory
from tests.core.test_events import Collects


def _until(condition: Callable[[], bool], seconds: float = 3.0) -> bool:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        threading.Event().wait(0.01)
    return condition()


@pytest.mark.sqlite_only
def test_a_busy_sqlite_file_makes_the_relay_wait_quietly(
        make_app: AppFactory, dialect: str, caplog: pytest.LogCaptureFixture) -> None:
    if dialect != "sqlite":
        pytest.skip("SQLite's file lock")
    consumer = Collects()
    app = make_app(plugins=(consumer,), RAPPORT_OUTBOX_RELAY="thread")
    relay = app.extensions[outbox.EXTENSION].relay
    relay.poll = 0.05

    def short_busy_timeout(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout = 50")  # the default waits 5 s

    with app.app_context():
        engine = db.engine
        event.listen(engine, "connect", short_busy_timeout)
        other = sqlite3.connect(engine.url.database, isolation_level=None)
        try:
            engine.dispose()
            create_customer({"name": "Ada"})
            caplog.set_level(logging.DEBUG, logger="rapport.outbox")
            other.execute("BEGIN EXCLUSIVE")  # the other process's write transaction
            relay.start()
            assert _until(lambda: any("busy" in r.getMessage() for r in caplog.records))
            assert consumer.events == []
            other.execute("ROLLBACK")
            assert _until(lambda: bool(consumer.events))
            assert [e["type"] for e in consumer.events] == ["customer.created"]
        finally:
            relay.stop()
            other.close()
            event.remove(engine, "connect", short_busy_timeout)
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == []
    assert all(r.levelno == logging.DEBUG for r in caplog.records
               if "busy" in r.getMessage())
