"""Time limits on database statements.

A statement run for a web request may take at most ``RAPPORT_STATEMENT_TIMEOUT_MS``; one
run by a worker, a job thread or the CLI (an app context without a request) at most
``RAPPORT_JOB_STATEMENT_TIMEOUT_MS`` (default: no limit). ``statement_timeout(ms)`` sets
another limit for a block of code.

PostgreSQL enforces it: at the start of each transaction (explicit, or the implicit one of
each statement on an autocommit connection, see ``core.connections``) the connection's
``statement_timeout`` is set to the limit wanted there, unless it already holds it: the
value set is remembered per DBAPI connection, so a web worker's connections, whose every
transaction wants the same limit, pay the round trip once, not per request. It is set
outside any transaction (a rolled-back transaction would undo it) and replaced, or reset to
the server's default when no limit is wanted, before any transaction that wants another
value: a pooled connection never lends its last user's limit to the next. SQLite has no
such setting: a progress handler, called every few thousand virtual-machine steps,
interrupts a statement that has run longer than the limit. Either way the statement fails
with an error ``is_statement_timeout`` recognises, and the transaction rolls back.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from flask import current_app, has_app_context, has_request_context
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

#: SQLSTATE of PostgreSQL's query_canceled (statement_timeout) and of the statements that
#: follow it in the same aborted transaction.
_PG_CANCELED = "57014"
_PG_ABORTED_TRANSACTION = "25P02"
#: Virtual-machine instructions between two calls of SQLite's progress handler.
_SQLITE_STEPS = 10_000

_UNSET: Any = object()
_override: ContextVar[int | None] = ContextVar("rapport_statement_timeout", default=_UNSET)


@contextmanager
def statement_timeout(milliseconds: int | None) -> Iterator[None]:
    """Run the block with this statement limit (``None``: none) instead of the setting's."""
    token = _override.set(milliseconds)
    try:
        yield
    finally:
        _override.reset(token)


def current_timeout() -> int | None:
    """The limit in milliseconds for a statement run now, or None."""
    value = _override.get()
    if value is not _UNSET:
        return value  # type: ignore[no-any-return]
    if not has_app_context():
        return None
    state = current_app.extensions.get("rapport")
    if state is None:
        return None
    settings = state.settings
    return settings.statement_timeout_ms if has_request_context() \
        else settings.job_statement_timeout_ms


def is_statement_timeout(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) is a statement stopped by its time limit, or a
    statement refused because the transaction was aborted by one (PostgreSQL)."""
    seen = 0
    while error is not None and seen < 10:
        original = getattr(error, "orig", None)
        for candidate in (error, original):
            if getattr(candidate, "sqlstate", None) in (_PG_CANCELED, _PG_ABORTED_TRANSACTION):
                return True
            if isinstance(candidate, sqlite3.OperationalError) and \
                    str(candidate) == "interrupted":
                return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


#: The statement_timeout this process set on a PostgreSQL connection, in the DBAPI
#: connection's ``info`` (which lives as long as that connection). Absent: the server's.
_SESSION_TIMEOUT = "rapport_statement_timeout"


@event.listens_for(Engine, "begin")
def _limit_postgresql_transaction(conn: Connection) -> None:
    if conn.dialect.name != "postgresql":
        return
    milliseconds = current_timeout()
    info = conn.connection.info
    if info.get(_SESSION_TIMEOUT) == milliseconds:
        return
    # The DBAPI connection, not conn.execute: the transaction is being begun.
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    if dbapi.info.transaction_status != _IDLE:  # not seen: SA begins on an idle connection
        info.pop(_SESSION_TIMEOUT, None)
        _execute(dbapi, "SET LOCAL statement_timeout = "
                        f"{'DEFAULT' if milliseconds is None else int(milliseconds)}")
        return
    autocommit = dbapi.autocommit
    try:
        if not autocommit:  # a SET inside the transaction would end with it
            dbapi.autocommit = True
        _execute(dbapi, "RESET statement_timeout" if milliseconds is None
                 else f"SET statement_timeout = {int(milliseconds)}")
    finally:
        if not autocommit:
            dbapi.autocommit = False
    info[_SESSION_TIMEOUT] = milliseconds


_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE


def _execute(dbapi: Any, statement: str) -> None:
    cursor = dbapi.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


class _Deadline:
    """The running statement's deadline on one SQLite connection."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self) -> int:
        return 1 if self.at is not None and time.monotonic() > self.at else 0


@event.listens_for(Engine, "connect")
def _watch_sqlite_connection(dbapi_connection: Any, connection_record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        deadline = _Deadline()
        connection_record.info["rapport_deadline"] = deadline
        dbapi_connection.set_progress_handler(deadline, _SQLITE_STEPS)


@event.listens_for(Engine, "before_cursor_execute")
def _start_sqlite_statement(conn: Connection, cursor: Any, statement: str, parameters: Any,
                            context: Any, executemany: bool) -> None:
    if conn.dialect.name != "sqlite":
        return
    deadline = conn.connection.info.get("rapport_deadline")
    if deadline is not None:
        milliseconds = current_timeout()
        deadline.at = None if milliseconds is None else \
            time.monotonic() + milliseconds / 1000
