"""Who is acting, in which request, doing what: set by the GraphQL view, the CLI, jobs,
the scheduler and rules; read by the audit log, events and logging.

A ``contextvars`` variable carries it, so a thread or an asyncio task started inside a
``use()`` block sees the same context, and concurrent requests never see each other's.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from core.ids import decode_global_id, global_id

#: Where a change came from (CONTRACTS "Actor").
VIA = ("graphql", "cli", "job", "scheduler", "rule")

# Letters, digits and a few separators, bounded: an incoming X-Request-Id goes into logs
# and audit rows, so anything else (control characters, megabytes) is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


@dataclass(frozen=True)
class Actor:
    """The credentials behind a change: an agent, a named service, or both (a service key
    acting for an agent records the agent as ``on_behalf_of_agent_id``)."""

    agent_id: int | None = None
    service: str | None = None
    api_key_prefix: str | None = None
    on_behalf_of_agent_id: int | None = None
    via: str = "graphql"
    #: With ``via == "rule"``: the rules whose actions led to this change, the acting
    #: rule last. A rule never runs for an event its own chain caused (no loops).
    rule_ids: tuple[int, ...] = ()
    #: With ``rule_ids``: the id of the event that started the chain (not caused by a
    #: rule), so the care plugin bounds the runs one event may cause in all.
    rule_root: str | None = None

    def to_json(self) -> dict[str, Any]:
        """camelCase, with global ids: the shape of audit entries, events and jobs
        (``ruleIds`` only when a rule acts)."""
        shape: dict[str, Any] = {
            "agentId": None if self.agent_id is None else global_id("Agent", self.agent_id),
            "service": self.service,
            "apiKeyPrefix": self.api_key_prefix,
            "onBehalfOfAgentId": (None if self.on_behalf_of_agent_id is None
                                  else global_id("Agent", self.on_behalf_of_agent_id)),
            "via": self.via,
        }
        if self.rule_ids:
            shape["ruleIds"] = [global_id("Rule", r) for r in self.rule_ids]
            if self.rule_root is not None:
                shape["ruleRoot"] = self.rule_root
        return shape

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Actor:
        """The inverse of ``to_json`` (a job re-creates its starter's actor from it)."""

        def agent(value: Any) -> int | None:
            if value is None:
                return None
            if isinstance(value, int):
                return value
            return decode_global_id(str(value), "Agent")[1]

        return cls(agent_id=agent(data.get("agentId")), service=data.get("service"),
                   api_key_prefix=data.get("apiKeyPrefix"),
                   on_behalf_of_agent_id=agent(data.get("onBehalfOfAgentId")),
                   via=str(data.get("via") or "graphql"),
                   rule_ids=tuple(decode_global_id(str(r), "Rule")[1]
                                  for r in data.get("ruleIds") or ()),
                   rule_root=(None if data.get("ruleRoot") is None
                              else str(data["ruleRoot"])))


@dataclass(frozen=True)
class Context:
    actor: Actor
    request_id: str
    operation: str | None = None


_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "rapport_context", default=None)

#: The actor of work started outside any request, command or job (a Python shell, a test).
SYSTEM_ACTOR = Actor(service="system", via="cli")


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str | None:
    """``value`` if it may be used as a request id (an incoming X-Request-Id), else None."""
    if value is None:
        return None
    value = value.strip()
    return value if _SANE_REQUEST_ID.fullmatch(value) else None


def current() -> Context:
    """The context of the running request, command or job.

    Outside any ``use()`` block: the ``system`` service with a fresh request id (each call
    a new one, since nothing ties two such calls together).
    """
    found = _current.get()
    if found is not None:
        return found
    return Context(actor=SYSTEM_ACTOR, request_id=new_request_id())


@contextmanager
def use(*, actor: Actor | None = None, request_id: str | None = None,
        operation: str | None = None) -> Iterator[Context]:
    """Run the block with this actor, request id and operation.

    Blocks nest; a value not given is inherited from the enclosing block (outside any:
    the system actor, a new request id, no operation).
    """
    outer = _current.get()
    context = Context(
        actor=actor if actor is not None else (outer.actor if outer else SYSTEM_ACTOR),
        request_id=request_id if request_id is not None else (
            outer.request_id if outer else new_request_id()),
        operation=operation if operation is not None else (outer.operation if outer else None),
    )
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
