"""What plugins contribute to rules (``rapport_rule_triggers``, ``rapport_rule_actions``).

The care plugin runs the rules ("when an event of this type, whose data meets these
conditions, is relayed, do these actions"); the vocabulary of triggers and actions comes
from every enabled plugin through the two hooks, so a plugin offers an action without
importing the care plugin. docs/plugin_hooks.md and docs/care.md describe both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema

from core.context import Actor


@dataclass(frozen=True)
class RuleTrigger:
    """An event type offered as a rule trigger, with a description for rule editors.

    Any declared event type may trigger a rule; declaring it here lists it (with the
    description) in GraphQL ``ruleTriggers``. Conditions test the fields of the event's
    payload schema.
    """

    event_type: str
    description: str


@dataclass(frozen=True)
class RuleContext:
    """What an action knows besides the event: the rule (its database id and global
    id) and the actor it acts as (the key that created the rule, ``via: "rule"``)."""

    rule_id: int
    rule_global_id: str
    actor: Actor


#: ``function(event, parameters, context)``: ``event`` is the envelope (``id``, ``type``,
#: ``occurredAt``, ``actor``, ``data``), ``parameters`` what the action's schema loaded.
#: It runs inside the rule run's transaction and the rule's actor; it writes through the
#: owning plugin's services (which call ``core.changes.record``) and returns a short JSON
#: summary (``{"taskId": ...}``) or None. Raise ``core.errors.UserError`` for an expected
#: failure (the run is recorded as failed with its message).
RuleActionFunction = Callable[[Mapping[str, Any], dict[str, Any], RuleContext],
                              "Mapping[str, Any] | None"]


@dataclass(frozen=True)
class RuleAction:
    """Something a rule can do: ``name`` is ``plugin.verb`` (``care.create_task``).

    ``parameters`` is a marshmallow schema (class; camelCase keys through ``data_key``)
    validated when the rule is saved and again when it runs. ``domain``: creating a rule
    with this action needs ``<domain>:write``, and each run checks it again against the
    scopes stored with the rule.
    """

    name: str
    description: str
    parameters: type[Schema]
    domain: str
    function: RuleActionFunction
