"""Periodic jobs: the ``schedules`` table, read by ``rapport scheduler``.

A schedule names a job kind, its parameters and when: a five-field cron expression in
UTC (``minute hour day-of-month month day-of-week``; ``*``, lists, ranges and ``/step``)
or an interval in seconds. The scheduler starts each due schedule's job, acting as the
service ``scheduler``. Taking a due schedule is a compare-and-set on its ``next_run_at``
in the transaction that stores the job, so two schedulers never start one run twice; on
PostgreSQL an advisory lock also keeps a second scheduler idle while the first lives.

Schedules are seeded at the scheduler's start from ``DEFAULT_SCHEDULES`` (those whose kind
is enabled), changed by ``RAPPORT_SCHEDULES`` (JSON: ``{"name": {"cron": ..., "enabled":
false}}``); a seeded schedule is only added when none of that name exists, so edits made
through GraphQL stay. Turn a default off with ``enabled: false``: a deleted default comes
back at the next start.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from core import context, jobs
from core.app import rapport
from core.config import ConfigError
from core.db import db, utcnow
from core.ids import shown_id
from core.errors import ErrorCode, UserError
from core.job_tables import Schedule
from core.services import transaction

log = logging.getLogger("rapport.scheduler")
SCHEDULER_ACTOR = context.Actor(service="scheduler", via="scheduler")
#: Any constant: the key of the scheduler's PostgreSQL advisory lock.
_ADVISORY_LOCK_KEY = 0x52415050  # "RAPP"
DEFAULT_TICK_SECONDS = 15.0
MIN_INTERVAL_SECONDS = 60

DEFAULT_SCHEDULES: dict[str, dict[str, Any]] = {
    "loyalty-expiry": {"kind": "loyalty.expire", "cron": "10 0 * * *"},
    "complaints-escalation": {"kind": "complaints.escalate", "interval_seconds": 900},
    "complaints-detection": {"kind": "complaints.detect", "cron": "5 * * * *"},
    "churn-check": {"kind": "churn.check", "cron": "30 0 * * *"},
    "segments-value-tiers": {"kind": "segments.tiers", "cron": "40 2 * * *"},
    # The care plugin's at-risk loop: each advisor's warning list, on the 1st of the month.
    "care-at-risk": {"kind": "care.at_risk", "cron": "0 6 1 * *"},
    # Its occasions: birthdays and customer anniversaries (daysAhead 7) as events, daily.
    "care-occasions": {"kind": "care.occasions", "cron": "0 5 * * *"},
    # Fallbacks: commits queue these at once; the schedules catch what a lost wake-up or a
    # webhook retry due later leaves behind.
    "outbox-relay": {"kind": "core.relay_outbox", "interval_seconds": 60},
    "webhooks-retry": {"kind": "webhooks.deliver", "interval_seconds": 60},
    # Retention (core/housekeeping.py): relayed events and finished jobs past their time.
    "housekeeping": {"kind": "core.purge", "cron": "20 3 * * *"},
}


# --- Cron ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday, as cron counts
    any_day: bool
    any_weekday: bool

    def matches_day(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        # Cron's rule: with both fields restricted, either one matching is enough.
        if self.any_day:
            return in_week
        if self.any_weekday:
            return in_month
        return in_month or in_week

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first matching minute strictly after ``moment`` (UTC)."""
        start = (moment.astimezone(dt.timezone.utc).replace(second=0, microsecond=0)
                 + dt.timedelta(minutes=1))
        day = start.date()
        for _ in range(366 * 8):  # leap days on a given weekday recur within 28 years
            if self.matches_day(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = dt.datetime(day.year, day.month, day.day, hour, minute,
                                                tzinfo=dt.timezone.utc)
                        if candidate >= start:
                            return candidate
            day += dt.timedelta(days=1)
        raise ValueError("the expression never matches")


_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))


def _field(text_value: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text_value.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name}: bad step {step_text!r}")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            if not (a.isdigit() and b.isdigit()):
                raise ValueError(f"{name}: bad range {body!r}")
            first, last = int(a), int(b)
        elif body.isdigit():
            first = int(body)
            last = high if step_text else first
        else:
            raise ValueError(f"{name}: {body!r} is not a number, range or *")
        if not low <= first <= last <= high:
            raise ValueError(f"{name}: {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def parse_cron(expression: str) -> Cron:
    """A five-field cron expression; ``ValueError`` says what is wrong."""
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError("five fields are expected: minute hour day-of-month month "
                         "day-of-week")
    sets = [_field(p, name, low, high) for p, (name, low, high) in zip(parts, _FIELDS)]
    weekdays = frozenset(d % 7 for d in sets[4])
    cron = Cron(sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*",
                parts[4] == "*")
    cron.next_after(dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))  # e.g. 31 February
    return cron


def next_run(schedule: Schedule, after: dt.datetime) -> dt.datetime:
    if schedule.cron:
        return parse_cron(schedule.cron).next_after(after)
    return after + dt.timedelta(seconds=int(schedule.interval_seconds or 0))


# --- Editing schedules (GraphQL and seeding) ----------------------------------------------------


def _checked(data: Mapping[str, Any], existing: Schedule | None = None) -> dict[str, Any]:
    """Validate a schedule's fields (``UserError`` with camelCase field names)."""
    out = dict(data)
    if "name" in out:
        name = str(out["name"] or "").strip()
        if not 1 <= len(name) <= 120:
            raise UserError.single("Give a name of 1 to 120 characters.", ErrorCode.INVALID,
                                   "name")
        out["name"] = name
    if "enabled" in out and not isinstance(out["enabled"], bool):
        raise UserError.single("true or false.", ErrorCode.REQUIRED, "enabled")
    kind_name = out.get("kind", existing.kind if existing else None)
    if kind_name is None:
        raise UserError.single("This field is required.", ErrorCode.REQUIRED, "kind")
    kind = jobs.kind_of(kind_name)
    if "parameters" in out or existing is None:
        loaded = jobs.validate_parameters(kind, out.get("parameters") or {})
        if loaded.get("path") is not None or loaded.get("file") is not None:
            raise UserError.single("A schedule cannot name a file: files are uploaded for "
                                   "one job.", ErrorCode.NOT_ALLOWED, "parameters")
        out["parameters"] = jobs.parameters_json(kind, loaded)
    cron = out.get("cron", existing.cron if existing else None)
    interval = out.get("interval_seconds", existing.interval_seconds if existing else None)
    if "cron" in out and "interval_seconds" not in out and cron:
        interval = out["interval_seconds"] = None
    if "interval_seconds" in out and "cron" not in out and interval:
        cron = out["cron"] = None
    if (cron is None) == (interval is None):
        raise UserError.single("Give either cron or intervalSeconds.", ErrorCode.INVALID,
                               "cron")
    if cron is not None:
        try:
            parse_cron(cron)
        except ValueError as exc:
            raise UserError.single(f"Not a cron expression: {exc}.", ErrorCode.INVALID,
                                   "cron") from None
    if interval is not None and (not isinstance(interval, int)
                                 or interval < MIN_INTERVAL_SECONDS):
        raise UserError.single(f"At least {MIN_INTERVAL_SECONDS} seconds.",
                               ErrorCode.INVALID, "intervalSeconds")
    return out


def create_schedule(data: Mapping[str, Any]) -> Schedule:
    fields = _checked({"name": data.get("name"), **data})
    with transaction():
        if db.session.scalar(select(Schedule.id).where(Schedule.name == fields["name"])):
            raise UserError.single(f"A schedule named {fields['name']!r} exists.",
                                   ErrorCode.UNIQUE, "name")
        schedule = Schedule(name=fields["name"], kind=fields["kind"],
                            parameters=fields["parameters"], cron=fields.get("cron"),
                            interval_seconds=fields.get("interval_seconds"),
                            enabled=bool(fields.get("enabled", True)))
        schedule.next_run_at = next_run(schedule, utcnow())
        db.session.add(schedule)
    return schedule


def update_schedule(schedule_id: int, data: Mapping[str, Any]) -> Schedule:
    with transaction():
        schedule = db.session.get(Schedule, schedule_id, with_for_update=True)
        if schedule is None:
            raise UserError.single(f"No schedule with id {shown_id('Schedule', schedule_id)}.",
                                   ErrorCode.NOT_FOUND, "id")
        fields = _checked(data, schedule)
        if "name" in fields and fields["name"] != schedule.name and db.session.scalar(
                select(Schedule.id).where(Schedule.name == fields["name"])):
            raise UserError.single(f"A schedule named {fields['name']!r} exists.",
                                   ErrorCode.UNIQUE, "name")
        for key in ("name", "kind", "parameters", "cron", "interval_seconds", "enabled"):
            if key in fields:
                setattr(schedule, key, fields[key])
        if {"cron", "interval_seconds", "enabled"} & fields.keys():
            schedule.next_run_at = next_run(schedule, utcnow())
    return schedule


def delete_schedule(schedule_id: int) -> Schedule:
    with transaction():
        schedule = db.session.get(Schedule, schedule_id)
        if schedule is None:
            raise UserError.single(f"No schedule with id {shown_id('Schedule', schedule_id)}.",
                                   ErrorCode.NOT_FOUND, "id")
        db.session.delete(schedule)
    return schedule


def configured_schedules() -> dict[str, dict[str, Any]]:
    """The defaults, changed by RAPPORT_SCHEDULES, for the kinds enabled here."""
    wanted = {name: dict(spec) for name, spec in DEFAULT_SCHEDULES.items()}
    raw = rapport().settings.extra.get("RAPPORT_SCHEDULES")
    if raw:
        try:
            extra = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(extra, dict) or not all(isinstance(v, dict)
                                                      for v in extra.values()):
                raise ValueError
        except ValueError:
            raise ConfigError('RAPPORT_SCHEDULES must be a JSON object: {"name": {"kind": '
                              '..., "cron": ... or "interval_seconds": ..., "enabled": '
                              '...}}') from None
        for name, spec in extra.items():
            wanted[name] = {**wanted.get(name, {}), **spec}
    kinds = jobs.job_kinds()
    return {name: spec for name, spec in wanted.items() if spec.get("kind") in kinds}


def seed_schedules() -> list[str]:
    """Add each configured schedule that has no row of its name yet; return their names."""
    added = []
    existing = set(db.session.scalars(select(Schedule.name)))
    for name, spec in configured_schedules().items():
        if name in existing:
            continue
        try:
            create_schedule({"name": name, **spec})
        except IntegrityError:  # another scheduler seeded it at the same moment
            continue
        except UserError as exc:
            if any(e.code == ErrorCode.UNIQUE for e in exc.errors):
                continue  # the same, seen a little later
            raise ConfigError(f"schedule {name!r}: {exc}") from None
        added.append(name)
    return added


# --- Running ---------------------------------------------------------------------------------


def run_due(now: dt.datetime | None = None) -> list[int]:
    """Start the job of every enabled schedule due at ``now``; return the new job ids."""
    now = now or utcnow()
    started = []
    due = db.session.execute(select(Schedule.id, Schedule.next_run_at).where(
        Schedule.enabled.is_(True), Schedule.next_run_at <= now).order_by(
        Schedule.next_run_at)).all()
    db.session.rollback()
    for schedule_id, planned in due:
        job_id = _start_one(schedule_id, planned, now)
        if job_id is not None:
            started.append(job_id)
    return started


def _start_one(schedule_id: int, planned: dt.datetime, now: dt.datetime) -> int | None:
    with context.use(actor=SCHEDULER_ACTOR, request_id=context.new_request_id()):
        with transaction():
            schedule = db.session.get(Schedule, schedule_id)
            if schedule is None:
                return None
            # Runs missed while no scheduler ran are not made up: the next is after now.
            following = next_run(schedule, max(planned, now))
            taken = db.session.execute(update(Schedule).where(
                Schedule.id == schedule_id, Schedule.next_run_at == planned).values(
                next_run_at=following, last_run_at=now)).rowcount
            if taken != 1:
                return None  # another scheduler took this run
            job = jobs.create_job(schedule.kind, schedule.parameters, schedule_id=schedule_id)
            db.session.execute(update(Schedule).where(Schedule.id == schedule_id).values(
                last_job_id=job.id))
            job_id = job.id
        jobs.dispatch(job_id)
    log.info("schedule %s started job %s", schedule_id, job_id)
    return job_id


@contextmanager
def leadership() -> Iterator[bool]:
    """Whether this scheduler may work: on PostgreSQL, holding the advisory lock (on a
    connection of its own, released when the block ends or the process dies)."""
    if db.engine.dialect.name != "postgresql":
        yield True
        return
    conn = db.engine.connect()
    try:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                 {"key": _ADVISORY_LOCK_KEY}).scalar())
        conn.commit()
        yield held
        if held:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_LOCK_KEY})
            conn.commit()
    finally:
        conn.close()


def serve(tick: float = DEFAULT_TICK_SECONDS, stop: threading.Event | None = None,
          once: bool = False) -> None:
    """The scheduler loop: seed, then every ``tick`` seconds start what is due."""
    stop = stop or threading.Event()
    with context.use(actor=SCHEDULER_ACTOR):
        added = seed_schedules()
        if added:
            log.info("seeded schedules: %s", ", ".join(added))
    while not stop.is_set():
        with leadership() as leader:
            if not leader:
                log.info("another scheduler holds the lock; waiting")
            while leader and not stop.is_set():
                try:
                    run_due()
                    if not jobs.broker_url():
                        # No queue redelivers them: this process's threads take them up.
                        jobs.recover_orphans()
                except Exception:  # noqa: BLE001 - one bad tick must not stop the scheduler
                    db.session.rollback()
                    log.exception("scheduler tick failed")
                db.session.remove()
                if once:
                    return
                stop.wait(tick)
        if once:
            return
        stop.wait(tick)
