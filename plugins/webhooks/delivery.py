"""Delivery: relayed events become deliveries, and the job ``webhooks.deliver`` sends them.

- ``fan_out`` (the ``rapport_events_relayed`` consumer) writes one delivery per event and
  subscribed endpoint, in the relay's transaction, and queues the job after commit.
- The job claims due deliveries in batches (PostgreSQL: SKIP LOCKED), one sender per
  endpoint at a time with at most ``RAPPORT_WEBHOOK_MAX_CONCURRENCY`` requests in flight
  to it, posts them on a few threads and records the batch in one transaction; it runs
  until nothing is due, waiting for retries due within a few seconds. Later retries are
  picked up by the next job: a timer of the process without a broker, the
  ``webhooks-retry`` schedule of ``rapport scheduler`` with one, or the next event.
- An attempt follows the Standard Webhooks specification: ``webhook-id`` is the event id
  (the same on every retry), ``webhook-timestamp``, ``webhook-signature`` (two signatures
  while a rotated secret overlaps). 2xx succeeds; 410 disables the endpoint; anything else
  (and a timeout) is retried with exponential backoff and jitter until the attempts run
  out (dead letter); repeated failures disable the endpoint.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from flask import Flask, current_app
from marshmallow import Schema
from sqlalchemy import and_, func, insert, or_, select, text, update
from standardwebhooks import Webhook

from core import jobs, metrics, outbox
from core.db import db, utcnow
from core.jobs import JobKind, Progress
from core.models import OutboxEvent

from plugins.webhooks.config import WebhookSettings, webhook_settings
from plugins.webhooks.models import Attempt, AttemptOutcome, Delivery, DeliveryStatus, Endpoint
from plugins.webhooks.service import PING_TYPE, signing_secrets, skip_pending, subscribed
from plugins.webhooks.targets import UnsafeTarget, resolve

log = logging.getLogger("rapport.webhooks")

JOB_KIND = "webhooks.deliver"
USER_AGENT = "Rapport-Webhooks/1"
#: Deliveries claimed per round of the job.
CLAIM_BATCH = 100
#: A job with nothing to send waits this long for new deliveries before it ends.
LINGER_SECONDS = 0.5
#: Threads posting at once in one job (each endpoint is still capped on its own).
SENDERS = 8
#: A job waits for retries due within this many seconds instead of ending.
WAIT_FOR_RETRIES = 2.0
#: The longest a delivery job runs before leaving the rest to the next one.
MAX_JOB_SECONDS = 300.0
MAX_BACKOFF = 6 * 3600.0
MAX_ERROR_LENGTH = 500
_clients: dict[float, httpx.Client] = {}
_clients_lock = threading.Lock()


# --- Fan-out (in the relay's transaction) ------------------------------------------------------


def fan_out(events: list[dict[str, Any]]) -> int:
    """One delivery per event and endpoint subscribed to it; the deliveries are sent by a
    job queued once the relay commits. Returns how many were written."""
    endpoints = db.session.execute(select(
        Endpoint.id, Endpoint.event_types, Endpoint.scopes).where(
        Endpoint.active.is_(True))).all()
    if not endpoints:
        return 0
    now = utcnow()
    rows = [{"endpoint_id": endpoint_id, "event_id": event["id"], "event_type": event["type"],
             "status": DeliveryStatus.PENDING, "attempt_count": 0, "next_attempt_at": now,
             "created_at": now}
            for event in events for endpoint_id, patterns, scopes in endpoints
            if subscribed(patterns, scopes, event["type"])]
    if rows:
        db.session.execute(insert(Delivery), rows)
        outbox.start_job_after_commit(JOB_KIND)
    return len(rows)


def kick() -> None:
    """Make sure a delivery job is queued (after a committed ping or redelivery)."""
    outbox.ensure_job(JOB_KIND)


# --- The job --------------------------------------------------------------------------------------


class DeliverParameters(Schema):
    pass


def deliver_due(parameters: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The ``webhooks.deliver`` job: send what is due, then stop once nothing is."""
    settings = webhook_settings()
    started = time.monotonic()
    idle_since: float | None = None
    sent = 0
    with ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="rapport-webhook") as pool:
        while time.monotonic() - started < MAX_JOB_SECONDS:
            claimed = claim(settings, CLAIM_BATCH)
            if claimed:
                idle_since = None
                sent += len(send(claimed, pool))
                progress(0.0, f"{sent} attempts made")
                continue
            wait = seconds_to_next_due()
            now = time.monotonic()
            idle_since = idle_since or now
            # Linger a moment for the next events (a job costs more than a short wait),
            # and for retries due within a few seconds.
            if now - idle_since < LINGER_SECONDS:
                time.sleep(0.02)
            elif wait is not None and wait <= WAIT_FOR_RETRIES:
                time.sleep(max(wait, 0.01))
            else:
                break
    _remind_later(seconds_to_next_due())
    return {"attempts": sent}


_timers: dict[int, tuple[float, threading.Timer]] = {}
_timers_lock = threading.Lock()


def _remind_later(wait: float | None) -> None:
    """Without a broker there may be no scheduler either: a timer of this process starts
    the job when the next retry falls due. (With a broker the webhooks-retry schedule
    does; a timer lost with its process is replaced by the next event's job.)"""
    if wait is None or jobs.broker_url():
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    due = time.monotonic() + max(wait, 0.0)
    with _timers_lock:
        current = _timers.get(id(app))
        if current is not None and current[1].is_alive() and current[0] <= due:
            return
        if current is not None:
            current[1].cancel()
        timer = threading.Timer(max(wait, 0.0) + 0.05, _wake_job, args=(app,))
        timer.daemon = True
        _timers[id(app)] = (due, timer)
        timer.start()


def cancel_reminder(app: Flask) -> None:
    """Forget this app's retry timer (an app being torn down)."""
    with _timers_lock:
        current = _timers.pop(id(app), None)
    if current is not None:
        current[1].cancel()


def _wake_job(app: Flask) -> None:
    with app.app_context():
        try:
            outbox.ensure_job(JOB_KIND)
        except Exception:  # noqa: BLE001 - the next event's job sends the retries too
            log.exception("could not start the webhook delivery job for a retry")
        finally:
            db.session.remove()


def seconds_to_next_due() -> float | None:
    soonest = db.session.scalar(select(func.min(Delivery.next_attempt_at)).where(
        Delivery.status == DeliveryStatus.PENDING))
    db.session.rollback()
    return None if soonest is None else (soonest - utcnow()).total_seconds()


def claim(settings: WebhookSettings, limit: int) -> list[int]:
    """Lease up to ``limit`` due deliveries of endpoints no other sender is working on.

    One sender per endpoint at a time (it sends with at most ``max_concurrency`` requests
    in flight): an endpoint with a live lease is left to its sender. Claims serialise on
    the endpoints' rows, so two workers never both take one endpoint.
    """
    session = db.session
    now = utcnow()
    due = or_(and_(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now),
              # a batch whose worker died: its lease ran out
              and_(Delivery.status == DeliveryStatus.DELIVERING, Delivery.leased_until < now))
    postgres = session.get_bind().dialect.name == "postgresql"
    try:
        if not postgres:  # SQLite: take the write lock first, so claims run one at a time
            session.execute(update(Delivery).where(text("0 = 1")).values(leased_until=None))
        stmt = select(Delivery.id, Delivery.endpoint_id).where(due).order_by(
            Delivery.next_attempt_at, Delivery.id).limit(limit)
        if postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        candidates = session.execute(stmt).all()
        if not candidates:
            session.rollback()
            return []
        endpoint_ids = sorted({e for _, e in candidates})
        session.execute(select(Endpoint.id).where(Endpoint.id.in_(endpoint_ids))
                        .order_by(Endpoint.id).with_for_update())
        busy = set(session.scalars(select(Delivery.endpoint_id).where(
            Delivery.endpoint_id.in_(endpoint_ids),
            Delivery.status == DeliveryStatus.DELIVERING, Delivery.leased_until >= now)
            .distinct()))
        taken = [d for d, e in candidates if e not in busy]
        if taken:
            per_endpoint = max(sum(1 for _, e in candidates if e == endpoint)
                               for endpoint in endpoint_ids)
            rounds = -(-per_endpoint // settings.max_concurrency)
            lease = now + dt.timedelta(seconds=settings.timeout * rounds + 30)
            session.execute(update(Delivery).where(Delivery.id.in_(taken)).values(
                status=DeliveryStatus.DELIVERING, leased_until=lease))
        session.commit()
        return taken
    except BaseException:
        session.rollback()
        raise


# --- Attempts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    outcome: AttemptOutcome
    response_code: int | None
    latency_ms: int | None
    error: str | None


@dataclass(frozen=True)
class _Job:
    delivery_id: int
    endpoint_id: int
    url: str
    event_id: str
    body: str
    secrets: list[str]


def backoff(attempts_made: int, base: float) -> float:
    """Seconds before the next attempt: doubling from ``base``, capped, with jitter (a
    random 50-100 % of it) so that failed endpoints are not retried in lock-step."""
    delay = min(base * (2 ** max(attempts_made - 1, 0)), MAX_BACKOFF)
    return delay * (0.5 + random.random() / 2)


def client(timeout: float) -> httpx.Client:
    """One connection pool per process (and timeout); redirects are not followed: a
    redirect could lead to an address the target check refused."""
    with _clients_lock:
        found = _clients.get(timeout)
        if found is None:
            found = _clients[timeout] = httpx.Client(
                timeout=httpx.Timeout(timeout), follow_redirects=False,
                limits=httpx.Limits(max_connections=SENDERS * 4,
                                    max_keepalive_connections=SENDERS * 2))
        return found


def sign(secrets: list[str], event_id: str, moment: dt.datetime, body: str) -> str:
    return " ".join(Webhook(s).sign(event_id, moment, body) for s in secrets)


def post(settings: WebhookSettings, url: str, event_id: str, body: str,
         secrets: list[str]) -> Result:
    """One signed POST to ``url``, to the address checked just before."""
    began = time.monotonic()
    try:
        target = resolve(url, settings)
    except UnsafeTarget as exc:
        return Result(AttemptOutcome.FAILED, None, None, f"Refused target: {exc}")
    moment = utcnow().replace(microsecond=0)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": target.host_header,
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": sign(secrets, event_id, moment, body),
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        response = client(settings.timeout).post(target.connect_url, content=body.encode(),
                                                 headers=headers, extensions=extensions)
    except httpx.TimeoutException:
        return Result(AttemptOutcome.FAILED, None, _ms(began),
                      f"No answer within {settings.timeout:g} s.")
    except httpx.HTTPError as exc:
        return Result(AttemptOutcome.FAILED, None, _ms(began),
                      f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH])
    ok = 200 <= response.status_code < 300
    error = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
    return Result(AttemptOutcome.SUCCEEDED if ok else AttemptOutcome.FAILED,
                  response.status_code, _ms(began), error)


def _ms(began: float) -> int:
    return int((time.monotonic() - began) * 1000)


def _prepare(delivery_ids: list[int]) -> tuple[list[_Job], dict[int, str]]:
    """What to send for each leased delivery (two queries for the batch), and why the
    others are skipped."""
    rows = db.session.execute(
        select(Delivery, OutboxEvent).outerjoin(
            OutboxEvent, OutboxEvent.event_id == Delivery.event_id)
        .where(Delivery.id.in_(delivery_ids),
               Delivery.status == DeliveryStatus.DELIVERING)).all()
    endpoints = {e.id: e for e in db.session.scalars(select(Endpoint).where(
        Endpoint.id.in_({d.endpoint_id for d, _ in rows})))}
    now = utcnow()
    work: list[_Job] = []
    skipped: dict[int, str] = {}
    for delivery, event in rows:
        endpoint = endpoints[delivery.endpoint_id]
        is_ping = delivery.event_type == PING_TYPE
        envelope = delivery.body if delivery.body is not None else (
            None if event is None else outbox.envelope(event))
        if not endpoint.active and not is_ping:
            skipped[delivery.id] = "The webhook was disabled."
        elif not is_ping and not subscribed(["*"], endpoint.scopes, delivery.event_type):
            skipped[delivery.id] = ("The webhook's key may no longer read this event's "
                                    "domain (or the type is no longer declared).")
        elif envelope is None:
            skipped[delivery.id] = "The event is no longer stored."
        else:
            work.append(_Job(delivery.id, endpoint.id, endpoint.url, delivery.event_id,
                             json.dumps(envelope, separators=(",", ":"), ensure_ascii=False),
                             signing_secrets(endpoint, now)))
    db.session.rollback()  # no transaction stays open while we wait on the network
    return work, skipped


def send(delivery_ids: list[int], pool: ThreadPoolExecutor | None = None
         ) -> dict[int, DeliveryStatus]:
    """Make one attempt of each leased delivery (at most ``max_concurrency`` requests in
    flight per endpoint) and record them all in one transaction."""
    settings = webhook_settings()
    work, skipped = _prepare(delivery_ids)
    gates: dict[int, threading.Semaphore] = {
        e: threading.Semaphore(settings.max_concurrency) for e in {j.endpoint_id for j in work}}

    def attempt_one(job: _Job) -> tuple[_Job, Result]:
        with gates[job.endpoint_id]:
            return job, post(settings, job.url, job.event_id, job.body, job.secrets)

    if pool is None or len(work) <= 1:
        results = [attempt_one(job) for job in work]
    else:
        results = list(pool.map(attempt_one, work))
    return _record(settings, results, skipped)


def attempt(delivery_id: int) -> DeliveryStatus:
    """One attempt of a leased delivery, recorded; its new status."""
    found = send([delivery_id])
    return found.get(delivery_id, DeliveryStatus.SKIPPED)


def _record(settings: WebhookSettings, results: list[tuple[_Job, Result]],
            skipped: dict[int, str]) -> dict[int, DeliveryStatus]:
    session = db.session
    now = utcnow()
    statuses: dict[int, DeliveryStatus] = {}
    labels: list[tuple[str, float]] = []
    try:
        if skipped:
            session.execute(update(Delivery).where(Delivery.id.in_(list(skipped))).values(
                status=DeliveryStatus.SKIPPED, leased_until=None, finished_at=now))
            for delivery_id, reason in skipped.items():
                session.execute(update(Delivery).where(Delivery.id == delivery_id).values(
                    last_error=reason))
                statuses[delivery_id] = DeliveryStatus.SKIPPED
                labels.append(("skipped", 0.0))
        succeeded = [(job, r) for job, r in results
                     if r.outcome is AttemptOutcome.SUCCEEDED]
        if succeeded:
            _record_successes(succeeded, now, statuses, labels)
        results = [(job, r) for job, r in results if r.outcome is not AttemptOutcome.SUCCEEDED]
        if results:
            ids = [job.delivery_id for job, _ in results]
            deliveries = {d.id: d for d in session.scalars(select(Delivery).where(
                Delivery.id.in_(ids)).with_for_update())}
            endpoints = {e.id: e for e in session.scalars(select(Endpoint).where(
                Endpoint.id.in_({job.endpoint_id for job, _ in results}))
                .order_by(Endpoint.id).with_for_update())}
            session.add_all([Attempt(delivery_id=job.delivery_id, attempted_at=now,
                                     outcome=r.outcome, response_code=r.response_code,
                                     latency_ms=r.latency_ms, error=r.error)
                             for job, r in results if job.delivery_id in deliveries])
            for job, result in results:
                delivery = deliveries.get(job.delivery_id)
                endpoint = endpoints.get(job.endpoint_id)
                if delivery is None or endpoint is None:  # deleted meanwhile
                    continue
                label = _apply(settings, delivery, endpoint, result, now)
                statuses[delivery.id] = delivery.status
                labels.append((label, (result.latency_ms or 0) / 1000))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    for label, seconds in labels:
        metrics.webhook_delivered(label, seconds)
    return statuses


def _record_successes(succeeded: list[tuple[_Job, Result]], now: dt.datetime,
                      statuses: dict[int, DeliveryStatus], labels: list[tuple[str, float]]
                      ) -> None:
    """The common case in a few set-based statements: attempts, deliveries, endpoints."""
    session = db.session
    ids = [job.delivery_id for job, _ in succeeded]
    # Only deliveries still leased by us (not deleted with their webhook meanwhile).
    live = set(session.scalars(select(Delivery.id).where(
        Delivery.id.in_(ids), Delivery.status == DeliveryStatus.DELIVERING)))
    kept = [(job, r) for job, r in succeeded if job.delivery_id in live]
    if not kept:
        return
    session.execute(insert(Attempt), [
        {"delivery_id": job.delivery_id, "attempted_at": now, "outcome": r.outcome,
         "response_code": r.response_code, "latency_ms": r.latency_ms, "error": None}
        for job, r in kept])
    by_code: dict[int | None, list[int]] = {}
    for job, r in kept:
        by_code.setdefault(r.response_code, []).append(job.delivery_id)
    for code, delivery_ids in by_code.items():
        session.execute(update(Delivery).where(Delivery.id.in_(delivery_ids)).values(
            status=DeliveryStatus.SUCCEEDED, attempt_count=Delivery.attempt_count + 1,
            last_response_code=code, last_error=None, leased_until=None, finished_at=now))
    session.execute(update(Endpoint).where(
        Endpoint.id.in_({job.endpoint_id for job, _ in kept}),
        Endpoint.consecutive_failures != 0).values(consecutive_failures=0))
    for job, r in kept:
        statuses[job.delivery_id] = DeliveryStatus.SUCCEEDED
        labels.append(("delivered", (r.latency_ms or 0) / 1000))


def _apply(settings: WebhookSettings, delivery: Delivery, endpoint: Endpoint, result: Result,
           now: dt.datetime) -> str:
    """Move a delivery (and its endpoint's failure count) after an attempt; the metric
    label of the outcome."""
    delivery.attempt_count += 1
    delivery.last_response_code = result.response_code
    delivery.last_error = result.error
    delivery.leased_until = None
    if result.outcome is AttemptOutcome.SUCCEEDED:
        delivery.status = DeliveryStatus.SUCCEEDED
        delivery.finished_at = now
        endpoint.consecutive_failures = 0
        return "delivered"
    if result.response_code == 410:
        delivery.status = DeliveryStatus.DEAD
        delivery.finished_at = now
        _disable(endpoint, now, "The endpoint answered 410 Gone.")
        return "disabled"
    endpoint.consecutive_failures += 1
    label = "failed"
    if delivery.attempt_count >= settings.max_attempts:
        delivery.status = DeliveryStatus.DEAD
        delivery.finished_at = now
        label = "dead_lettered"
    elif endpoint.active:
        delivery.status = DeliveryStatus.PENDING
        delivery.next_attempt_at = now + dt.timedelta(
            seconds=backoff(delivery.attempt_count, settings.retry_base))
    else:  # disabled meanwhile (a 410 earlier in this batch)
        delivery.status = DeliveryStatus.SKIPPED
        delivery.finished_at = now
    if endpoint.active and endpoint.consecutive_failures >= settings.disable_after:
        _disable(endpoint, now, f"{endpoint.consecutive_failures} attempts failed in a row.")
        label = "disabled"
    return label


def _disable(endpoint: Endpoint, now: dt.datetime, reason: str) -> None:
    if not endpoint.active:
        return
    endpoint.active = False
    endpoint.disabled_at = now
    endpoint.disabled_reason = reason
    endpoint.updated_at = now
    db.session.flush()
    skip_pending(endpoint.id, f"Not sent: {reason}")
    log.warning("webhook %s disabled: %s", endpoint.id, reason)


JOB_KINDS = [JobKind(kind=JOB_KIND, parameters=DeliverParameters, domain="webhooks",
                     function=deliver_due,
                     description="Send the webhook deliveries that are due (queued by the "
                                 "outbox relay; retries by the webhooks-retry schedule).")]
