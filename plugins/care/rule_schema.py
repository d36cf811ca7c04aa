"""GraphQL of rules: ``rules``, ``ruleRuns``, ``ruleActions``, ``ruleTriggers`` and the
rule mutations; all in the ``rules`` domain."""

from __future__ import annotations

from typing import Any

import graphene
from graphene import relay
from graphene.types.generic import GenericScalar
from sqlalchemy import select

from api import (
    RapportMutation, connection, ctx, domain, error_type, global_id, node_type,
    scoped,
)
from api.pagination import bad_input, keyset_page
from api.types import decode_global_id
from core import outbox
from core.db import db

from plugins.care import rules
from plugins.care.loaders import RuleByIdLoader
from plugins.care.models import Rule, RuleRun, RunStatus
from plugins.care.schemas import OPERATORS

READ, WRITE = "rules:read", "rules:write"

RuleError = error_type("Rule", rules.RULE_ERROR_CODES)
RuleRunStatus = graphene.Enum.from_enum(RunStatus, name="RuleRunStatus")
RuleConditionOp = graphene.Enum("RuleConditionOp", [(o.upper(), o) for o in OPERATORS])


@domain("rules")
class RuleCondition(graphene.ObjectType):
    """One test on the event's data; all of a rule's conditions must hold."""

    field = graphene.String(required=True, description="A field of the event's data.")
    op = graphene.Field(RuleConditionOp, required=True)
    value = GenericScalar()


@domain("rules")
class RuleActionStep(graphene.ObjectType):
    action = graphene.String(required=True, description="A name of ruleActions.")
    parameters = GenericScalar(description=(
        "Null when this key may not read the action's domain (<domain>:read of "
        "ruleActions)."))


@domain("rules")
@node_type(Rule)
class RuleNode(graphene.ObjectType):
    """When an event of ``eventType`` whose data meets ``conditions`` is relayed, run
    ``actions`` in order, acting as the key that created (or last re-aimed) the rule."""

    class Meta:
        name = "Rule"
        interfaces = (relay.Node,)

    name = graphene.String(required=True)
    event_type = graphene.String(required=True)
    conditions = graphene.List(graphene.NonNull(RuleCondition), required=True)
    actions = graphene.List(graphene.NonNull(RuleActionStep), required=True)
    enabled = graphene.Boolean(required=True)
    created_by = GenericScalar(required=True, description="The actor the rule acts as.")
    created_at = graphene.DateTime(required=True)
    updated_at = graphene.DateTime(required=True)

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        rule = _live_rule(db.session.get(Rule, int(id)))
        # Like ``rules``: a rule whose trigger this key may not read is not found.
        if rule is None or not _may_read_trigger(_scopes(info), rule.event_type):
            return None
        return rule

    @staticmethod
    def resolve_conditions(root: Rule, info: Any) -> list[RuleCondition]:
        return [RuleCondition(field=c["field"], op=c["op"], value=c.get("value"))
                for c in root.conditions]

    @staticmethod
    def resolve_actions(root: Rule, info: Any) -> list[RuleActionStep]:
        readable = _readable_actions(_scopes(info))
        return [RuleActionStep(action=a["action"], parameters=(
            a.get("parameters") or {}) if a["action"] in readable else None)
                for a in root.actions]


def _live_rule(rule: Rule | None) -> Rule | None:
    return rule if rule is not None and rule.deleted_at is None else None


def _may_read_trigger(scopes: frozenset[str], event_type: str) -> bool:
    known = outbox.catalogue().get(event_type)
    return rules.may(scopes, f"{known.domain}:read" if known is not None else "admin")


def _readable_actions(scopes: frozenset[str]) -> set[str]:
    """The actions whose parameters and results this key may read: those of domains it
    may read (a task's title, an agent's id, points). An action no enabled plugin
    declares any more is shown to admins only."""
    return {name for name, action in rules.rule_actions().items()
            if rules.may(scopes, f"{action.domain}:read")}


@domain("rules")
class RuleRunNode(graphene.ObjectType):
    """One rule for one event: what each action did."""

    class Meta:
        name = "RuleRun"

    rule = graphene.Field(RuleNode, description=(
        "The rule as it is now; null when it has since been aimed at an event this key "
        "may not read (as rules and node(id) hide it)."))
    event_id = graphene.String(required=True)
    event_type = graphene.String(required=True)
    status = graphene.Field(RuleRunStatus, required=True)
    outcome = GenericScalar(required=True, description=(
        "Per action run: {action, outcome: succeeded|failed, result | error}."))
    error = graphene.String(description="The first failed action's error.")
    created_at = graphene.DateTime(required=True)
    finished_at = graphene.DateTime()

    @staticmethod
    async def resolve_rule(root: RuleRun, info: Any) -> Any:
        rule = await ctx(info).loader(RuleByIdLoader).load(root.rule_id)
        return rule if rule is not None and _may_read_trigger(
            _scopes(info), rule.event_type) else None

    @staticmethod
    def resolve_outcome(root: RuleRun, info: Any) -> Any:
        # As Rule.actions: what an action of a domain this key may not read did is hidden.
        readable = _readable_actions(_scopes(info))
        return [line if line.get("action") in readable or "result" not in line
                else {**line, "result": None} for line in root.outcome or []]


@domain("rules")
class RuleActionInfo(graphene.ObjectType):
    name = graphene.String(required=True)
    description = graphene.String(required=True)
    domain = graphene.String(required=True, description="Creating a rule with it needs "
                                                        "<domain>:write.")


@domain("rules")
class RuleTriggerInfo(graphene.ObjectType):
    event_type = graphene.String(required=True)
    description = graphene.String(required=True)


RuleConnection = connection(RuleNode, "Rule")
RuleRunConnection = connection(RuleRunNode, "RuleRun")


def _decode(value: str, type_name: str, field: str) -> int:
    try:
        return decode_global_id(value, type_name)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise bad_input(f"{field}: {exc}") from None


def resolve_rules(root: Any, info: Any, first: int | None = None, after: str | None = None,
                  enabled: bool | None = None) -> Any:
    query = select(Rule).where(Rule.deleted_at.is_(None))
    scopes = _scopes(info)
    if "admin" not in scopes:
        # As ruleRuns: only the rules of triggers whose domain this key may read.
        query = query.where(Rule.event_type.in_(rules.readable_event_types(scopes)))
    if enabled is not None:
        query = query.where(Rule.enabled.is_(enabled))
    return keyset_page(query, [Rule.id], first, after, kinds=(int,))


def resolve_rule_runs(root: Any, info: Any, rule_id: str | None = None,
                      first: int | None = None, after: str | None = None,
                      status: Any = None) -> Any:
    query = select(RuleRun)
    scopes = _scopes(info)
    if "admin" not in scopes:
        # A run shows what its event caused: only the runs of triggers whose domain this
        # key may read (the run's event type is the rule's trigger when it ran).
        query = query.where(RuleRun.event_type.in_(rules.readable_event_types(scopes)))
    if rule_id is not None:
        query = query.where(RuleRun.rule_id == _decode(rule_id, "Rule", "ruleId"))
    if status is not None:
        query = query.where(RuleRun.status == RunStatus(getattr(status, "value", status)))
    return keyset_page(query, [RuleRun.id], first, after, kinds=(int,), descending=True)


# --- Rule mutations ---------------------------------------------------------------------------


class RuleConditionInput(graphene.InputObjectType):
    field = graphene.String(required=True)
    op = RuleConditionOp(required=True)
    value = GenericScalar()


class RuleActionInput(graphene.InputObjectType):
    action = graphene.String(required=True)
    parameters = GenericScalar(description="As the action's parameter schema asks.")


class CreateRuleInput(graphene.InputObjectType):
    name = graphene.String(required=True)
    event_type = graphene.String(required=True)
    conditions = graphene.List(graphene.NonNull(RuleConditionInput))
    actions = graphene.List(graphene.NonNull(RuleActionInput), required=True)
    enabled = graphene.Boolean(description="Default true.")


class UpdateRuleInput(graphene.InputObjectType):
    id = graphene.ID(required=True)
    name = graphene.String()
    event_type = graphene.String()
    conditions = graphene.List(graphene.NonNull(RuleConditionInput))
    actions = graphene.List(graphene.NonNull(RuleActionInput))
    enabled = graphene.Boolean(description="false disables the rule, true enables it.")


class DeleteRuleInput(graphene.InputObjectType):
    id = graphene.ID(required=True)


def _scopes(info: Any) -> frozenset[str]:
    return ctx(info).principal.scopes  # type: ignore[no-any-return]


def _rule_input(input: dict[str, Any]) -> dict[str, Any]:
    for item in input.get("actions") or []:
        if item.get("parameters") is None:
            item["parameters"] = {}
    return input


class CreateRule(RapportMutation):
    """A rule acting as this key: it needs the read scope of the event's domain and the
    write scope of each action's."""

    class Arguments:
        input = CreateRuleInput(required=True)

    rule = graphene.Field(RuleNode)
    scope = WRITE
    error_type = RuleError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CreateRule:
        return cls(rule=rules.create_rule(_rule_input(input), _scopes(info)))


class UpdateRule(RapportMutation):
    class Arguments:
        input = UpdateRuleInput(required=True)

    rule = graphene.Field(RuleNode)
    scope = WRITE
    error_type = RuleError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> UpdateRule:
        input["id"] = global_id(input, "id", "Rule")
        return cls(rule=rules.update_rule(_rule_input(input), _scopes(info)))


class DeleteRule(RapportMutation):
    """Delete a rule: it never runs again; its runs stay readable."""

    class Arguments:
        input = DeleteRuleInput(required=True)

    deleted_id = graphene.ID()
    scope = WRITE
    error_type = RuleError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> DeleteRule:
        raw_id = input.get("id")
        input["id"] = global_id(input, "id", "Rule")
        rules.delete_rule(input, _scopes(info))
        return cls(deleted_id=raw_id)


def query_fields() -> dict[str, graphene.Field]:
    return {
        "rules": scoped(graphene.Field(
            RuleConnection, required=True, first=graphene.Int(), after=graphene.String(),
            enabled=graphene.Boolean(), resolver=resolve_rules,
            description="Rules, oldest first: only those of event types whose domain this "
                        "key may read."), READ),
        "ruleRuns": scoped(graphene.Field(
            RuleRunConnection, required=True, rule_id=graphene.ID(), status=RuleRunStatus(),
            first=graphene.Int(), after=graphene.String(), resolver=resolve_rule_runs,
            description="Rule runs, newest first: one per rule and event that triggered "
                        "it; only those of event types whose domain this key may read."),
            READ),
        "ruleActions": scoped(graphene.Field(
            graphene.List(graphene.NonNull(RuleActionInfo)), required=True,
            resolver=lambda root, info: [
                RuleActionInfo(name=a.name, description=a.description, domain=a.domain)
                for a in rules.rule_actions().values()],
            description="What rules may do (every enabled plugin's actions)."), READ),
        "ruleTriggers": scoped(graphene.Field(
            graphene.List(graphene.NonNull(RuleTriggerInfo)), required=True,
            resolver=lambda root, info: [
                RuleTriggerInfo(event_type=t.event_type, description=t.description)
                for t in rules.rule_triggers()],
            description="Event types offered as triggers (any declared event type may "
                        "trigger a rule; see docs/events.md)."), READ),
    }


MUTATIONS: dict[str, type[RapportMutation]] = {
    "createRule": CreateRule, "updateRule": UpdateRule, "deleteRule": DeleteRule,
}

NODE_TYPES = [RuleNode]
