"""Rules: "when an event of this type whose data meets these conditions is relayed, run
these actions", acting as the key that created the rule.

- The vocabulary comes from every enabled plugin: triggers through
  ``rapport_rule_triggers`` (any declared event type may trigger), actions through
  ``rapport_rule_actions`` (``core.rules``).
- ``fan_out`` (the ``rapport_events_relayed`` consumer) writes one pending run per
  matching rule and event, in the relay's transaction; the pair (rule, event id) is
  unique, so a redelivered event never runs a rule twice. The ``care.run_rules`` job,
  queued after the relay commits, runs them.
- Each action of a run runs in its own transaction, together with the line of the run's
  outcome that says it ran: a crash between two actions resumes at the next one, and a
  failing action is recorded (its error) without stopping the others or the relay.
- No loops: a rule's actor carries ``ruleIds`` (the chain of rules that led to the
  change); an event whose chain already holds a rule never runs that rule again, and a
  chain stops at ``MAX_CHAIN`` rules, and the runs one event causes through every chain
  it starts stop at ``MAX_RUNS_PER_ROOT`` (the actor's ``ruleRoot``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import Schema, ValidationError
from sqlalchemy import func, select

from core import context, outbox, roles
from core.app import rapport
from core.changes import Event, record
from core.db import db, utcnow
from core.errors import ErrorCode, FieldError, UserError, camel, errors_from_marshmallow
from core.ids import decode_global_id, global_id
from core.jobs import JobKind, Progress
from core.models import Agent, ApiKey, OutboxEvent
from core.rules import RuleAction, RuleContext, RuleTrigger
from core.services import load, not_found, transaction

from plugins.care import schemas
from plugins.care.models import Rule, RuleRun, RunStatus

log = logging.getLogger("rapport.care.rules")

RUN_JOB_KIND = "care.run_rules"
#: A change made by a chain of this many rules triggers no further rule.
MAX_CHAIN = 5
#: Rule runs one event may cause in all, through every chain of rules it starts.
MAX_RUNS_PER_ROOT = 100
#: Runs claimed per round of the job.
CLAIM_BATCH = 100
MAX_ERROR_LENGTH = 500


class RuleErrorCode:
    UNKNOWN_EVENT_TYPE = "UNKNOWN_EVENT_TYPE"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    UNKNOWN_ACTION = "UNKNOWN_ACTION"
    FORBIDDEN = "FORBIDDEN"


RULE_ERROR_CODES = [v for k, v in vars(RuleErrorCode).items() if k.isupper()]


# --- The vocabulary -----------------------------------------------------------------------------


def rule_actions() -> dict[str, RuleAction]:
    """Every enabled plugin's rule actions by name."""
    found: dict[str, RuleAction] = {}
    for declared in rapport().hook.rapport_rule_actions():
        for action in declared or []:
            if action.name in found:
                raise ValueError(f"rule action {action.name!r} is declared twice")
            found[action.name] = action
    return dict(sorted(found.items()))


def rule_triggers() -> list[RuleTrigger]:
    """The declared triggers whose event type exists here, by event type."""
    types = outbox.catalogue()
    found = {t.event_type: t for declared in rapport().hook.rapport_rule_triggers()
             for t in declared or [] if t.event_type in types}
    return [found[name] for name in sorted(found)]


def may(scopes: Collection[str], scope: str) -> bool:
    return "admin" in scopes or scope in scopes


def scopes_now(rule: Rule) -> frozenset[str]:
    """What the rule may do now: the scopes stored with it, within what its key still
    holds (none once the key is revoked or its agent deactivated). A rule made without a
    key (the CLI, the development admin) keeps its stored scopes."""
    known = rapport().scopes
    stored = roles.expand(rule.scopes, known)
    prefix = (rule.created_by or {}).get("apiKeyPrefix")
    if not prefix:
        return stored
    row = db.session.execute(
        select(ApiKey.scopes, ApiKey.revoked_at, ApiKey.agent_id, Agent.active, Agent.role)
        .outerjoin(Agent, Agent.id == ApiKey.agent_id).where(ApiKey.prefix == prefix)).first()
    if row is None or row.revoked_at is not None or (row.agent_id is not None
                                                      and not row.active):
        return frozenset()
    held = (roles.effective_scopes(row.scopes, row.role, known) if row.agent_id is not None
            else roles.expand(row.scopes, known))
    return stored & held


def readable_event_types(scopes: Collection[str]) -> list[str]:
    """The declared event types whose domain ``scopes`` may read."""
    return sorted(name for name, event_type in outbox.catalogue().items()
                  if may(scopes, f"{event_type.domain}:read"))


# --- Conditions ---------------------------------------------------------------------------------


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _same(left: Any, right: Any) -> bool:
    a, b = _number(left), _number(right)
    if a is not None and b is not None and not (isinstance(left, str) and isinstance(right, str)):
        return a == b
    return bool(left == right)


def _compare(left: Any, right: Any) -> int | None:
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    if isinstance(left, str) and isinstance(right, str):
        return (left > right) - (left < right)
    return None


def condition_holds(condition: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """Whether the event ``data`` meets one stored condition."""
    value = data.get(condition["field"])
    op, target = condition["op"], condition.get("value")
    if op == "exists":
        return (value is not None) == (target is None or bool(target))
    if op == "eq":
        return _same(value, target)
    if op == "ne":
        return not _same(value, target)
    if op in ("in", "not_in"):
        inside = any(_same(value, t) for t in target or [])
        return inside if op == "in" else not inside
    order = _compare(value, target)
    if order is None:
        return False
    # An operator this version does not know (a row written by a newer one) never matches:
    # a rule must not be able to stop the relay.
    return {"gt": order > 0, "gte": order >= 0, "lt": order < 0,
            "lte": order <= 0}.get(op, False)


def _check_condition(index: int, condition: dict[str, Any], properties: Mapping[str, Any]
                     ) -> list[FieldError]:
    where = f"conditions.{index}"
    if condition["field"] not in properties:
        return [FieldError(f"The event's data has no field {condition['field']!r}; it has "
                           f"{', '.join(sorted(properties))}.", RuleErrorCode.UNKNOWN_FIELD,
                           f"{where}.field")]
    op, value = condition["op"], condition.get("value")
    scalar = (str, int, float, bool)
    if op == "exists":
        ok = value is None or isinstance(value, bool)
        message = "exists takes true, false or no value."
    elif op in ("in", "not_in"):
        ok = (isinstance(value, list) and 0 < len(value) <= 100
              and all(v is None or isinstance(v, scalar) for v in value))
        message = f"{op} takes a list of 1 to 100 values."
    elif op in ("eq", "ne"):
        ok = value is None or isinstance(value, scalar)
        message = f"{op} takes one value."
    else:
        ok = _number(value) is not None or isinstance(value, str)
        message = f"{op} takes a number or a text."
    return [] if ok else [FieldError(message, ErrorCode.INVALID, f"{where}.value")]


# --- Saving rules -------------------------------------------------------------------------------


def _check(data: dict[str, Any], scopes: Collection[str]) -> list[dict[str, Any]]:
    """Check the event type, conditions and actions against the app; the actions with
    their parameters as stored (JSON as given, validated)."""
    errors: list[FieldError] = []
    event_type = outbox.catalogue().get(data["event_type"])
    if event_type is None:
        raise UserError.single(f"No event type {data['event_type']!r}; see docs/events.md.",
                               RuleErrorCode.UNKNOWN_EVENT_TYPE, "eventType")
    if not may(scopes, f"{event_type.domain}:read"):
        errors.append(FieldError(f"This key may not read {event_type.domain} events (it "
                                 f"needs {event_type.domain}:read).", RuleErrorCode.FORBIDDEN,
                                 "eventType"))
    properties = event_type.schema.get("properties", {})
    for index, condition in enumerate(data.get("conditions", [])):
        errors.extend(_check_condition(index, condition, properties))
    known = rule_actions()
    stored = []
    for index, item in enumerate(data["actions"]):
        where = f"actions.{index}"
        action = known.get(item["action"])
        if action is None:
            errors.append(FieldError(f"No rule action {item['action']!r}; known: "
                                     f"{', '.join(known) or 'none'}.",
                                     RuleErrorCode.UNKNOWN_ACTION, f"{where}.action"))
            continue
        if not may(scopes, f"{action.domain}:write"):
            errors.append(FieldError(f"{action.name} needs {action.domain}:write, which this "
                                     f"key does not hold.", RuleErrorCode.FORBIDDEN,
                                     f"{where}.action"))
        try:
            action.parameters().load(item["parameters"])
        except ValidationError as exc:
            errors.extend(errors_from_marshmallow(exc, f"{where}.parameters"))
        stored.append({"action": action.name, "parameters": item["parameters"]})
    if errors:
        raise UserError(errors)
    return stored


def create_rule(raw: Mapping[str, Any], scopes: Collection[str]) -> Rule:
    """A new rule acting as the calling key (its actor and scopes are stored with it)."""
    data = load(schemas.CreateRuleSchema(), raw)
    actions = _check(data, scopes)
    now = utcnow()
    with transaction():
        rule = Rule(name=data["name"], event_type=data["event_type"],
                    conditions=data["conditions"], actions=actions, enabled=data["enabled"],
                    created_by=context.current().actor.to_json(), scopes=sorted(scopes),
                    created_at=now, updated_at=now)
        db.session.add(rule)
        db.session.flush()
        record(None, [global_id("Rule", rule.id)], {
            "eventType": [None, rule.event_type], "enabled": [None, rule.enabled]}, [
            Event("rule.created", global_id("Rule", rule.id),
                  {"ruleId": global_id("Rule", rule.id)})])
    return rule


def _rule(rule_id: int) -> Rule:
    found = db.session.scalar(select(Rule).where(Rule.id == rule_id, Rule.deleted_at.is_(None))
                              .with_for_update())
    if found is None:
        raise not_found("rule", rule_id, type_name="Rule")
    return found


def _may_change(rule: Rule, scopes: Collection[str], field: str | None = "id") -> None:
    """Refuse (``FORBIDDEN``) a change of ``rule`` by a key that could not have created
    it: it must hold the read scope of the trigger's domain and the write scope of each
    action's (``admin`` for a trigger or an action no enabled plugin declares any more)."""
    event_type = outbox.catalogue().get(rule.event_type)
    needed = [f"{event_type.domain}:read" if event_type is not None else "admin"]
    known = rule_actions()
    for item in rule.actions:
        action = known.get(item["action"])
        needed.append(f"{action.domain}:write" if action is not None else "admin")
    missing = sorted({scope for scope in needed if not may(scopes, scope)})
    if missing:
        raise UserError.single(f"This key could not have created this rule: it lacks "
                               f"{', '.join(missing)}.", RuleErrorCode.FORBIDDEN, field)


def update_rule(raw: Mapping[str, Any], scopes: Collection[str]) -> Rule:
    """Change a rule; enable or disable it. Any change needs a key that could create the
    rule as it is and as it becomes. The rule goes on acting as the key that created it,
    so a new trigger or new actions must also be within that key's stored scopes."""
    data = load(schemas.UpdateRuleSchema(), raw)
    with transaction():
        rule = _rule(data["id"])
        _may_change(rule, scopes)
        merged = {"event_type": data.get("event_type", rule.event_type),
                  "conditions": data.get("conditions", rule.conditions),
                  "actions": data.get("actions", rule.actions)}
        if any(k in data for k in ("event_type", "conditions", "actions")):
            merged["actions"] = _check(merged, scopes)
            try:
                _check(merged, roles.expand(rule.scopes, rapport().scopes))
            except UserError as exc:
                forbidden = [e for e in exc.errors if e.code == RuleErrorCode.FORBIDDEN]
                if forbidden:
                    raise UserError([FieldError(
                        f"The rule acts as the key that created it, which does not hold "
                        f"what this asks: {e.message}", e.code, e.field)
                        for e in forbidden]) from None
        changed: dict[str, list[Any]] = {}
        for name in ("name", "event_type", "conditions", "enabled"):
            if name in data and getattr(rule, name) != data[name]:
                changed[camel(name)] = [getattr(rule, name), data[name]]
                setattr(rule, name, data[name])
        if "actions" in data and rule.actions != merged["actions"]:
            changed["actions"] = [[a["action"] for a in rule.actions],
                                  [a["action"] for a in merged["actions"]]]
            rule.actions = merged["actions"]
        rule.updated_at = utcnow()
        events = [Event("rule.updated", global_id("Rule", rule.id), {
            "ruleId": global_id("Rule", rule.id), "changedFields": sorted(changed)})
        ] if changed else []
        record(None, [global_id("Rule", rule.id)], changed or None, events)
    return rule


def delete_rule(raw: Mapping[str, Any], scopes: Collection[str]) -> Rule:
    """Delete a rule (by a key that could have created it): it never runs again; its
    runs stay as history."""
    data = load(schemas.IdSchema(), raw)
    with transaction():
        rule = _rule(data["id"])
        _may_change(rule, scopes)
        rule.deleted_at = rule.updated_at = utcnow()
        rule.enabled = False
        record(None, [global_id("Rule", rule.id)], {"deleted": [False, True]}, [
            Event("rule.deleted", global_id("Rule", rule.id),
                  {"ruleId": global_id("Rule", rule.id)})])
    return rule


# --- Fan-out (in the relay's transaction) -------------------------------------------------------


def _chain(event: Mapping[str, Any]) -> tuple[int, ...]:
    ids = []
    for value in (event.get("actor") or {}).get("ruleIds") or ():
        try:
            ids.append(decode_global_id(str(value), "Rule")[1])
        except ValueError:
            continue
    return tuple(ids)


def _root(event: Mapping[str, Any]) -> str:
    """The id of the event that started the event's chain of rules (its own id when no
    rule caused it)."""
    actor = event.get("actor") or {}
    if not _chain(event):
        return str(event["id"])
    return str(actor.get("ruleRoot") or event["id"])[:40]


def fan_out(events: list[dict[str, Any]]) -> int:
    """One pending run per event and enabled rule it triggers; returns how many.

    The runs one root event causes, through any chain of rules, are at most
    ``MAX_RUNS_PER_ROOT``: distinct rules reacting to each other's changes multiply
    (five rules on ``task.created`` that each create a task make 65 runs of one event,
    ten make 5,861). A run past the budget is recorded as failed and does not run."""
    types = {e["type"] for e in events}
    rules = db.session.scalars(select(Rule).where(
        Rule.enabled.is_(True), Rule.deleted_at.is_(None), Rule.event_type.in_(types))).all()
    if not rules:
        return 0
    catalogue = outbox.catalogue()
    done = set(db.session.execute(select(RuleRun.rule_id, RuleRun.event_id).where(
        RuleRun.event_id.in_([e["id"] for e in events]))).tuples())
    roots = {e["id"]: _root(e) for e in events}
    used: dict[str, int] = dict(db.session.execute(
        select(RuleRun.root_event_id, func.count()).where(
            RuleRun.root_event_id.in_(set(roots.values())))
        .group_by(RuleRun.root_event_id)).tuples().all())
    now = utcnow()
    rows = []
    for event in events:
        chain = _chain(event)
        if len(chain) >= MAX_CHAIN:
            continue
        known = catalogue.get(event["type"])
        root = roots[event["id"]]
        for rule in rules:
            if (rule.event_type != event["type"] or rule.id in chain
                    or (rule.id, event["id"]) in done or known is None
                    or not may(rule.scopes, f"{known.domain}:read")
                    or not all(condition_holds(c, event.get("data") or {})
                               for c in rule.conditions)):
                continue
            run = RuleRun(rule_id=rule.id, event_id=event["id"], event_type=event["type"],
                          root_event_id=root, status=RunStatus.PENDING, outcome=[],
                          created_at=now)
            used[root] = used.get(root, 0) + 1
            if used[root] > MAX_RUNS_PER_ROOT:
                if used[root] == MAX_RUNS_PER_ROOT + 1:
                    log.warning("rules: event %s caused %d rule runs; no more run", root,
                                MAX_RUNS_PER_ROOT)
                run.status, run.finished_at = RunStatus.FAILED, now
                run.error = (f"Not run: the rules reacting to event {root} and to each "
                             f"other's changes reached {MAX_RUNS_PER_ROOT} runs.")
            rows.append(run)
            done.add((rule.id, event["id"]))
    if rows:
        db.session.add_all(rows)
        db.session.flush()
        if any(r.status is RunStatus.PENDING for r in rows):
            outbox.start_job_after_commit(RUN_JOB_KIND)
    return len(rows)


# --- Running ------------------------------------------------------------------------------------


def _actor(rule: Rule, event: Mapping[str, Any]) -> context.Actor:
    base = context.Actor.from_json(rule.created_by or {})
    return dataclasses.replace(base, via="rule", rule_ids=(*_chain(event), rule.id),
                               rule_root=_root(event))


def _envelope(event_id: str) -> dict[str, Any] | None:
    row = db.session.scalar(select(OutboxEvent).where(OutboxEvent.event_id == event_id))
    return None if row is None else outbox.envelope(row)


def _message(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        text = "; ".join(f"{e.field}: {e.message}" if e.field else e.message
                         for e in exc.errors)
    else:
        # Only the class: the message of an unexpected error (a database error quotes
        # the statement's values) is for the server log, not for every rules:read key.
        text = f"Internal error ({type(exc).__name__}); see the server log."
    return text[:MAX_ERROR_LENGTH]


def _note(run_id: int, index: int, line: dict[str, Any], total: int) -> bool:
    """Append the outcome of action ``index`` to the run (in the caller's transaction);
    False when another worker got there first."""
    run = db.session.scalar(select(RuleRun).where(RuleRun.id == run_id).with_for_update())
    if run is None or run.status is not RunStatus.PENDING or len(run.outcome or []) != index:
        return False
    run.outcome = [*(run.outcome or []), line]
    if index + 1 == total:
        failed = [o for o in run.outcome if o["outcome"] == "failed"]
        run.status = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
        run.error = failed[0]["error"] if failed else None
        run.finished_at = utcnow()
    return True


def _fail_run(run_id: int, message: str) -> None:
    with transaction():
        run = db.session.scalar(select(RuleRun).where(RuleRun.id == run_id).with_for_update())
        if run is not None and run.status is RunStatus.PENDING:
            run.status, run.error, run.finished_at = RunStatus.FAILED, message, utcnow()


def run_one(run_id: int, actions: Mapping[str, RuleAction] | None = None) -> RunStatus | None:
    """Run the actions of one pending run that are not yet done; its final status."""
    actions = actions if actions is not None else rule_actions()
    run = db.session.get(RuleRun, run_id)
    if run is None or run.status is not RunStatus.PENDING:
        db.session.rollback()
        return None if run is None else run.status
    rule = db.session.get(Rule, run.rule_id)
    event = _envelope(run.event_id)
    if rule is None or rule.deleted_at is not None or not rule.enabled:
        db.session.rollback()
        _fail_run(run_id, "The rule was deleted or disabled before it ran.")
        return RunStatus.FAILED
    if event is None:
        db.session.rollback()
        _fail_run(run_id, "The event is no longer in the outbox (purged).")
        return RunStatus.FAILED
    steps = list(rule.actions)
    start = len(run.outcome or [])
    event_type = run.event_type
    event_domain = getattr(outbox.catalogue().get(event_type), "domain", None)
    actor = _actor(rule, event)
    rule_context = RuleContext(rule_id=rule.id, rule_global_id=global_id("Rule", rule.id),
                               actor=actor)
    scopes = scopes_now(rule)
    db.session.rollback()
    for index in range(start, len(steps)):
        step = steps[index]
        name = step["action"]
        try:
            with transaction(), context.use(actor=actor, operation=name):
                action = actions.get(name)
                if action is None:
                    raise UserError.single(f"No rule action {name!r} is enabled here.",
                                           RuleErrorCode.UNKNOWN_ACTION)
                if not may(scopes, f"{action.domain}:write"):
                    raise UserError.single(
                        f"The rule's key no longer holds {action.domain}:write (revoked, "
                        f"its agent deactivated, or the scope taken away).",
                        RuleErrorCode.FORBIDDEN)
                if event_domain is None:
                    raise UserError.single(f"The event type {event_type!r} is no longer "
                                           f"declared here.", RuleErrorCode.UNKNOWN_EVENT_TYPE)
                if not may(scopes, f"{event_domain}:read"):
                    # The conditions and the action read the event: a key that may no
                    # longer read its domain no longer reacts to it.
                    raise UserError.single(
                        f"The rule's key no longer holds {event_domain}:read, the scope of "
                        f"its trigger (revoked, its agent deactivated, or the scope taken "
                        f"away).", RuleErrorCode.FORBIDDEN)
                parameters = _load(action.parameters, step.get("parameters") or {})
                result = action.function(event, parameters, rule_context)
                if not _note(run_id, index, {"action": name, "outcome": "succeeded",
                                             "result": dict(result or {})}, len(steps)):
                    raise _Skipped
        except _Skipped:
            return None
        except Exception as exc:  # noqa: BLE001 - recorded on the run; the others go on
            if not isinstance(exc, UserError):
                log.exception("rule %s action %s failed on event %s", rule_context.rule_global_id,
                              name, event["id"])
            with transaction():
                _note(run_id, index, {"action": name, "outcome": "failed",
                                      "error": _message(exc)}, len(steps))
    final = db.session.get(RuleRun, run_id)
    status = None if final is None else final.status
    db.session.rollback()
    return status


class _Skipped(Exception):
    """Another worker ran this action of the run first."""


def _load(schema: type[Schema], raw: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return dict(schema().load(raw))
    except ValidationError as exc:
        raise UserError(errors_from_marshmallow(exc, "parameters")) from None


def pending_runs(limit: int = CLAIM_BATCH, after: int = 0) -> list[int]:
    ids = list(db.session.scalars(select(RuleRun.id).where(
        RuleRun.status == RunStatus.PENDING, RuleRun.id > after).order_by(RuleRun.id)
        .limit(limit)))
    db.session.rollback()
    return ids


def run_pending(parameters: Mapping[str, Any] | None = None,
                progress: Progress | None = None) -> dict[str, Any]:
    """The ``care.run_rules`` job: run every pending run, oldest first."""
    actions = rule_actions()
    counts = {"succeeded": 0, "failed": 0}
    last = 0
    while True:
        batch = pending_runs(after=last)
        if not batch:
            break
        for run_id in batch:
            status = run_one(run_id, actions)
            if status is not None and status.value in counts:
                counts[status.value] += 1
        last = batch[-1]
        if progress is not None:
            progress(0.0, f"{counts['succeeded'] + counts['failed']} rule runs")
    return counts


class RunRulesParameters(Schema):
    pass


JOB_KINDS = [JobKind(kind=RUN_JOB_KIND, parameters=RunRulesParameters, domain="rules",
                     function=run_pending,
                     description="Run the rules triggered by relayed events (queued after "
                                 "the relay).")]


