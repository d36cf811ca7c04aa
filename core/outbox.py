"""The event catalogue and the outbox relay.

``core.changes.record`` writes events to ``outbox_events`` in the transaction of their
change. The relay moves committed rows, oldest first and in order per aggregate, to the
consumers of the ``rapport_events_relayed`` hook (webhooks, rules, a partner's publisher)
and marks them delivered in the same transaction, so a consumer that fails rolls the
relay back and the events come again (at-least-once).

Where the relay runs: with ``RAPPORT_BROKER_URL``, as the job kind ``core.relay_outbox``
in ``rapport worker`` (queued after each commit that wrote events, and every few seconds
by ``rapport scheduler``); without a broker, on a background thread of the server
process, woken after such commits and polling as a fallback (events written by a CLI
command are picked up by that poll). ``rapport outbox relay`` runs one pass by hand.
docs/events.md lists the catalogue and the envelope.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from marshmallow import Schema
from sqlalchemy import event, func, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import ORMExecuteState, Session

from core import context
from core.changes import WROTE_EVENTS
from core.app import rapport
from core.config import ConfigError
from core.db import db, utcnow
from core.jobs import JobKind
from core.models import OutboxEvent

log = logging.getLogger("rapport.outbox")

EXTENSION = "rapport_outbox"
RELAY_JOB_KIND = "core.relay_outbox"
#: Events handed to consumers per relay transaction.
BATCH_SIZE = 200
#: Seconds between two polls of the embedded relay when no commit woke it.
POLL_SECONDS = 2.0
#: After a wake-up the embedded relay waits this long, so one pass takes the commits of a
#: burst together instead of one pass per commit.
COALESCE_SECONDS = 0.02

_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,3}$")
#: Set by core.changes.record when it wrote events (its PostgreSQL statement is driver SQL,
#: which the listener below does not see).
_WROTE_EVENTS = WROTE_EVENTS
_AFTER_COMMIT_JOBS = "rapport_after_commit_jobs"


# --- The catalogue --------------------------------------------------------------------------


@dataclass(frozen=True)
class EventType:
    type: str
    description: str
    schema: dict[str, Any]
    #: The scope domain a subscriber must read to receive it (``customers`` for
    #: ``customer.created``): the type's first word, or that word plus "s".
    domain: str
    plugin: str


def _domain(type_name: str, scopes: dict[str, str]) -> str | None:
    head = type_name.split(".", 1)[0]
    for domain in (head, f"{head}s"):
        if f"{domain}:read" in scopes:
            return domain
    return None


def build_catalogue(app: Flask) -> dict[str, EventType]:
    """Every declared event type, checked: names, schemas, a readable domain, no clash."""
    state = rapport(app)
    catalogue: dict[str, EventType] = {}
    for impl in reversed(state.pm.hook.rapport_event_types.get_hookimpls()):
        for item in impl.function() or []:
            name, description, schema = item
            where = f"plugin {impl.plugin_name!r} declares event type {name!r}"
            if not _TYPE_NAME.match(name):
                raise ConfigError(f"{where}: name it domain.entity.verb in lower case")
            if name in catalogue:
                raise ConfigError(f"{where}, already declared by {catalogue[name].plugin!r}")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise ConfigError(f"{where}: its payload schema must be a JSON Schema "
                                  f"object ({{'type': 'object', ...}})")
            domain = _domain(name, state.scopes)
            if domain is None:
                raise ConfigError(f"{where}: no '<domain>:read' scope matches its first word")
            catalogue[name] = EventType(name, description, schema, domain, impl.plugin_name)
    return catalogue


def catalogue(app: Flask | None = None) -> dict[str, EventType]:
    """The app's event types, by name."""
    target = app if app is not None else current_app
    return target.extensions[EXTENSION].catalogue  # type: ignore[no-any-return]


# --- Envelopes ------------------------------------------------------------------------------


def isoformat(moment: Any) -> str:
    return str(moment.isoformat()).replace("+00:00", "Z")


def envelope(row: OutboxEvent) -> dict[str, Any]:
    """The JSON an event is delivered as (also the webhook body)."""
    return {"id": row.event_id, "type": row.type, "occurredAt": isoformat(row.occurred_at),
            "actor": row.actor, "data": row.data}


# --- The relay ------------------------------------------------------------------------------


_sqlite_lock = threading.Lock()


def _claim(session: Session, limit: int) -> list[OutboxEvent]:
    """Undelivered rows this relay may hand out now, oldest first.

    PostgreSQL: rows are locked with SKIP LOCKED, so concurrent relays take disjoint
    batches; an aggregate whose older undelivered event sits in another relay's batch is
    left for a later pass, which keeps the order per aggregate. SQLite: a no-op write
    first takes the database's write lock, so relays run one at a time.
    """
    stmt = select(OutboxEvent).where(OutboxEvent.delivered_at.is_(None)).order_by(
        OutboxEvent.id).limit(limit)
    if session.get_bind().dialect.name != "postgresql":
        session.execute(update(OutboxEvent).where(text("0 = 1")).values(delivered_at=None))
        return list(session.scalars(stmt))
    rows = list(session.scalars(stmt.with_for_update(skip_locked=True)))
    if not rows:
        return rows
    # Older undelivered rows outside this batch are held by other relays (few, and found
    # through the partial index of undelivered rows): their aggregates wait a pass.
    mine = [r.id for r in rows]
    held = set(session.scalars(
        select(OutboxEvent.aggregate_id).where(
            OutboxEvent.delivered_at.is_(None), OutboxEvent.id < max(mine),
            OutboxEvent.id.not_in(mine)).distinct()))
    free = [r for r in rows if r.aggregate_id not in held]
    return free if free else _DEFERRED


class _Deferred(list):  # type: ignore[type-arg]
    """Rows waited but none may go yet (see ``relay_once``): empty, and told apart."""


_DEFERRED: list[OutboxEvent] = _Deferred()
#: Waits before claiming again while every claimable row is deferred (about 1 s in all).
_DEFERRED_PAUSES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4)


def relay_once(limit: int = BATCH_SIZE) -> int:
    """One relay transaction: hand up to ``limit`` committed events to the consumers and
    mark them delivered. Returns how many were relayed (0: nothing was waiting)."""
    session = db.session
    lock = _sqlite_lock if db.engine.dialect.name != "postgresql" else None
    if lock is not None:
        lock.acquire()
    try:
        rows = _claim(session, limit)
        for pause in _DEFERRED_PAUSES:
            if rows is not _DEFERRED:
                break
            # Every row claimed belongs to an aggregate whose older event another relay
            # holds at this moment (often one that is about to give its rows back): "nothing
            # waiting" would end this relay's loop while events wait. Let go, wait, retry.
            session.rollback()
            time.sleep(pause)
            rows = _claim(session, limit)
        if not rows:
            session.rollback()
            return 0
        envelopes = [envelope(row) for row in rows]
        rapport().hook.rapport_events_relayed(events=envelopes)
        session.execute(update(OutboxEvent).where(OutboxEvent.id.in_([r.id for r in rows]))
                        .values(delivered_at=utcnow()))
        session.commit()
        return len(rows)
    except BaseException:
        session.rollback()
        raise
    finally:
        if lock is not None:
            lock.release()


def relay_all(limit: int = BATCH_SIZE, max_batches: int | None = None) -> int:
    """Relay until nothing is waiting (or ``max_batches`` passes); the count relayed."""
    total = batches = 0
    while max_batches is None or batches < max_batches:
        count = relay_once(limit)
        batches += 1
        total += count
        if count == 0:
            break
    return total


def lag_seconds() -> float:
    """Age of the oldest event not yet relayed (0 when none waits)."""
    oldest = db.session.scalar(select(func.min(OutboxEvent.occurred_at))
                               .where(OutboxEvent.delivered_at.is_(None)))
    db.session.rollback()
    return 0.0 if oldest is None else max((utcnow() - oldest).total_seconds(), 0.0)


# --- After-commit work: waking the relay, queueing deliveries ------------------------------


def ensure_job(kind: str) -> None:
    """Start a job of ``kind`` (no parameters) unless one is already queued: a queued job
    starts after the caller's commit, so it will see what the caller wrote."""
    from core import jobs
    from core.job_tables import Job, JobStatus

    queued = db.session.scalar(select(Job.id).where(
        Job.kind == kind, Job.status == JobStatus.QUEUED).limit(1))
    if queued is None:
        with context.use(actor=context.Actor(service=kind.split(".", 1)[0], via="job")):
            jobs.start_job(kind, {})
    else:
        db.session.rollback()


def start_job_after_commit(kind: str) -> None:
    """``ensure_job(kind)`` once the current transaction commits (never if it rolls back)."""
    db.session.info.setdefault(_AFTER_COMMIT_JOBS, set()).add(kind)


def _ensure_jobs(app: Flask, kinds: set[str]) -> None:
    with app.app_context():
        try:
            for kind in sorted(kinds):
                ensure_job(kind)
        except Exception:  # noqa: BLE001 - the scheduler's periodic run catches up
            log.exception("could not queue %s after a commit", ", ".join(sorted(kinds)))
        finally:
            db.session.remove()
            with _pending_lock:
                _pending.discard(threading.current_thread())


@event.listens_for(Session, "do_orm_execute")
def _notice_outbox_insert(state: ORMExecuteState) -> None:
    if state.is_insert:
        table = getattr(state.statement, "table", None)
        if table is not None and table.name == OutboxEvent.__tablename__:
            state.session.info[_WROTE_EVENTS] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    kinds: set[str] = session.info.pop(_AFTER_COMMIT_JOBS, set())
    wrote = session.info.pop(_WROTE_EVENTS, False)
    try:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        state: OutboxState | None = app.extensions.get(EXTENSION)
    except RuntimeError:
        return
    if wrote and state is not None:
        if state.mode == "thread" and state.relay is not None:
            state.relay.wake()
        elif state.mode == "worker":
            kinds.add(RELAY_JOB_KIND)
    if kinds:
        # This session may not run SQL inside its commit: queue from a fresh one.
        thread = threading.Thread(target=_ensure_jobs, args=(app, kinds), daemon=True,
                                  name="rapport-after-commit")
        with _pending_lock:
            _pending.add(thread)
        thread.start()


_pending: set[threading.Thread] = set()
_pending_lock = threading.Lock()


@atexit.register
def _finish_pending(timeout: float = 5.0) -> None:
    """A CLI command exits right after its commit: let it queue the relay first."""
    with _pending_lock:
        threads = list(_pending)
        _pending.clear()
    for thread in threads:
        thread.join(timeout)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction: Any) -> None:
    if not session.in_transaction():
        session.info.pop(_AFTER_COMMIT_JOBS, None)
        session.info.pop(_WROTE_EVENTS, None)


@dataclass
class OutboxState:
    catalogue: dict[str, EventType]
    #: ``thread`` (embedded relay), ``worker`` (queue core.relay_outbox), ``off``.
    mode: str
    relay: EmbeddedRelay | None = None


class EmbeddedRelay:
    """The relay on a daemon thread of the server process (no broker configured)."""

    def __init__(self, app: Flask, poll: float = POLL_SECONDS):
        self.app = app
        self.poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="rapport-outbox-relay",
                                                daemon=True)
                self._thread.start()

    def wake(self) -> None:
        """Relay now, if this process runs the relay (a CLI command's events wait for
        the server's poll: the command may exit before a pass would end)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        with self.app.app_context(), context.use(
                actor=context.Actor(service="outbox-relay", via="job"),
                operation=RELAY_JOB_KIND):
            while not self._stop.is_set():
                if self._wake.wait(self.poll):
                    # Commits come in bursts: one pass for those of the next moment.
                    self._stop.wait(COALESCE_SECONDS)
                self._wake.clear()
                if self._stop.is_set():
                    break
                try:
                    relay_all()
                except OperationalError as exc:
                    if not sqlite_busy(exc):
                        log.exception("outbox relay pass failed")
                    else:  # another process writes (rapport demo, an import): next pass
                        log.debug("outbox relay: the SQLite database is busy; retrying in "
                                  "%.1f s", self.poll)
                except Exception:  # noqa: BLE001 - keep relaying; the rows stay undelivered
                    log.exception("outbox relay pass failed")
                finally:
                    db.session.remove()


def sqlite_busy(exc: OperationalError) -> bool:
    """SQLite's "database is locked" (or busy): another connection held the write lock
    longer than the busy timeout. Not a failure: the same rows are relayed on a later pass."""
    message = str(exc.orig if exc.orig is not None else exc).lower()
    return "database is locked" in message or "database is busy" in message


def relay_mode(app: Flask) -> str:
    settings = rapport(app).settings
    raw = str(settings.extra.get("RAPPORT_OUTBOX_RELAY", "") or "").strip().lower()
    if raw and raw not in ("thread", "worker", "off"):
        raise ConfigError(f"RAPPORT_OUTBOX_RELAY={raw!r}: use thread, worker or off")
    if raw:
        return raw
    if settings.extra.get("RAPPORT_BROKER_URL"):
        return "worker"
    # Tests relay explicitly (or ask for the thread): no stray threads between tests.
    return "off" if settings.env == "test" else "thread"


def init_app(app: Flask) -> None:
    """Build and check the catalogue; set up where the relay runs."""
    mode = relay_mode(app)
    state = OutboxState(catalogue=build_catalogue(app), mode=mode)
    if mode == "thread":
        state.relay = EmbeddedRelay(app)
    app.extensions[EXTENSION] = state
    from core import metrics

    metrics.set_outbox_lag_callback(lag_seconds)
    relay = state.relay
    if relay is not None:
        # Serving processes relay; a CLI command (which never serves a request) does not.
        app.before_request(relay.start)


# --- Payload schemas -----------------------------------------------------------------------

GLOBAL_ID = {"type": "string", "description": "a global id (the id GraphQL's node(id:) takes)"}
NULLABLE_GLOBAL_ID = {"type": ["string", "null"], "description": "a global id, or null"}
DATETIME = {"type": "string", "format": "date-time"}
DECIMAL = {"type": ["string", "null"], "description": "an exact decimal amount, or null"}


def payload_schema(properties: dict[str, Any], optional: tuple[str, ...] = ()
                   ) -> dict[str, Any]:
    """A JSON Schema of an event's ``data``: every property required unless ``optional``."""
    return {"type": "object", "properties": properties,
            "required": [name for name in properties if name not in optional]}


def _relay_job(parameters: dict[str, Any], progress: Any) -> dict[str, Any]:
    return {"relayed": relay_all()}


class RelayParameters(Schema):
    pass


#: ``core.relay_outbox``: one relay run until nothing waits (queued after commits that
#: wrote events when a broker is configured, and by the ``outbox-relay`` schedule).
JOB_KINDS = [JobKind(kind=RELAY_JOB_KIND, parameters=RelayParameters, domain="jobs",
                     function=_relay_job,
                     description="Relay committed outbox events to their consumers.")]
