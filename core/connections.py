"""Fewer round trips per request: a local liveness check instead of a pre-ping, and
read-only requests without BEGIN and ROLLBACK.

**Liveness without a ping.** A pooled PostgreSQL connection is checked when it is taken
from the pool without asking the server: an idle connection has nothing to read, so a
readable socket means the server closed it (a restart, ``pg_terminate_backend``, an idle
timeout: the server sends its FATAL message and closes) or the connection is otherwise
unusable. The pool then throws it away and takes (or opens) another, as SQLAlchemy's
``pool_pre_ping`` does after a failed ``SELECT 1``, without that round trip on every
checkout. A connection that a network device dropped silently is not seen this way (nor,
for its own timeout, by a ping): ``pool_recycle`` (core.app) replaces connections older
than that.

**Read-only requests.** A GraphQL query (no mutation) on PostgreSQL runs its statements on
an autocommit connection: no BEGIN before the first statement, no ROLLBACK after the last.
Under READ COMMITTED, the isolation level used, each statement takes its own snapshot
either way, so the answers are the same. Its statement time limit still holds: core.timeouts
sets it on the connection before the first statement. Should the request write after all,
``core.services.transaction()`` ends the read-only mode first (the writes get a real
transaction on a fresh checkout), and a flush outside such a block is refused rather than
committed statement by statement.
"""

from __future__ import annotations

import re
import select
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

from core.db import db

#: Pool replaces connections older than this many seconds (core.app).
POOL_RECYCLE_SECONDS = 1800
#: Session.info flag: this session's statements run in autocommit mode.
READ_ONLY = "rapport_read_only"


def unusable(dbapi_connection: Any) -> bool:
    """Whether an idle psycopg connection is closed, broken or has the server's goodbye
    waiting (no round trip: a poll of its socket). False for other drivers."""
    if getattr(dbapi_connection, "pgconn", None) is None:
        return False
    if dbapi_connection.closed or dbapi_connection.broken:
        return True
    try:
        fd = dbapi_connection.fileno()
    except Exception:  # noqa: BLE001 - psycopg raises OperationalError on a closed socket
        return True
    if not hasattr(select, "poll"):  # Windows: select() takes sockets there
        readable, _, broken = select.select([fd], [], [fd], 0)
        return bool(readable or broken)
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
                    | select.POLLNVAL)
    return bool(poller.poll(0))


@event.listens_for(Pool, "checkout")
def _check_liveness(dbapi_connection: Any, connection_record: Any,
                    connection_proxy: Any) -> None:
    if unusable(dbapi_connection):
        # The pool invalidates it and tries again with another connection.
        raise exc.DisconnectionError("the server closed this pooled connection")


def begin_read_only() -> bool:
    """Run the current session's next statements on an autocommit connection (PostgreSQL,
    and only if the session has no transaction going yet). True if it does."""
    session = db.session()
    if session.in_transaction() or db.engine.dialect.name != "postgresql":
        return False
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT",
                                          READ_ONLY: True})
    session.info[READ_ONLY] = True
    return True


def end_read_only(session: Session) -> None:
    """Leave read-only mode before a write: release the autocommit connection so the next
    statement begins a real transaction. Objects added before the write's
    ``transaction()`` are carried into it (not committed on their own); changed or
    deleted objects are refused, as a flush would be."""
    if not session.info.get(READ_ONLY):
        return
    if session.dirty or session.deleted:
        raise RuntimeError(_REFUSED)
    pending = list(session.new)
    for instance in pending:
        session.expunge(instance)
    session.info.pop(READ_ONLY, None)
    session.commit()  # nothing to commit on an autocommit connection: no round trip
    session.add_all(pending)


def release_read_only() -> None:
    """The read-only request is done: hand its autocommit connection back (psycopg sends
    nothing for a rollback outside a transaction) and leave read-only mode, so whatever
    the same session runs next (a test's next request, a teardown hook) is a normal
    transaction. Objects a resolver added without ``transaction()`` are discarded."""
    session = db.session()
    if session.info.get(READ_ONLY):
        session.rollback()


_REFUSED = ("A write in a read-only request must run inside core.services.transaction(); "
            "it would not be atomic here.")
#: What a statement on the read-only connection may start with.
_READS = ("SELECT", "SET ", "SHOW", "RESET", "VALUES", "EXPLAIN", "(")
_WRITE = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE|TRUNCATE|COPY)\b", re.IGNORECASE)


@event.listens_for(Engine, "before_cursor_execute")
def _refuse_statement_writes(conn: Any, cursor: Any, statement: str, parameters: Any,
                             context: Any, executemany: bool) -> None:
    """A statement that writes, run on the autocommit connection of a read-only request
    (``session.execute(update(...))``, driver SQL, ``core.changes.record``), would commit
    on its own: refused like an ORM flush (``transaction()`` is the way to write)."""
    if not conn.get_execution_options().get(READ_ONLY):
        return
    head = statement.lstrip()[:8].upper()
    if head.startswith(_READS):
        return
    if head.startswith("WITH") and not _WRITE.search(statement):
        return
    raise RuntimeError(_REFUSED)


@event.listens_for(Session, "before_flush")
def _refuse_writes_in_read_only(session: Session, flush_context: Any, instances: Any) -> None:
    if session.info.get(READ_ONLY) and (session.new or session.dirty or session.deleted):
        raise RuntimeError(_REFUSED)


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_read_only(session: Session) -> None:
    # Only for the rollback of the whole session transaction: a read-only session has none
    # other (no savepoints on an autocommit connection).
    session.info.pop(READ_ONLY, None)
