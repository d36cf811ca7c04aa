"""Staff members (agents), the hand-over of customers between them, and the alerts any
plugin raises through core."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, or_, select, update

from core import changes as audit
from core.app import rapport
from core.attributes import stored_misfits
from core.db import db, utcnow
from core.errors import ErrorCode, UserError
from core.ids import global_id
from core.models import (
    Agent, AgentRole, Alert, AlertStatus, AttributeType, Customer,
    CustomerAttributeDefinition, CustomerStatus,
)
from core.schemas import (
    AgentSchema, AttributeDefinitionSchema, ReassignCustomersSchema, UpdateAgentSchema,
)
from core.services import load, not_found, transaction
from core.services.customers import INACTIVE_OWNER

ALERT_SEVERITIES = ("info", "low", "medium", "high", "critical")


@dataclass(frozen=True)
class Caller:
    """Who asks for a staff change (the API passes it; the CLI and Python callers pass
    none and act as admin): its agent (``None`` for a service key acting for nobody) and
    whether it holds the ``admin`` scope."""

    agent_id: int | None
    admin: bool


def create_agent(raw: Mapping[str, Any], *, caller: Caller | None = None) -> Agent:
    """Add a staff member. Only a caller holding ``admin`` may create an admin agent
    (``NOT_ALLOWED`` on ``role``)."""
    data = load(AgentSchema(), raw)
    if data["role"] == AgentRole.ADMIN.value and caller is not None and not caller.admin:
        raise UserError.single("Only an admin may create an admin agent.",
                               ErrorCode.NOT_ALLOWED, "role")
    with transaction():
        if db.session.scalar(select(Agent.id).where(Agent.email == data["email"].lower())):
            raise UserError.single(f"An agent with e-mail {data['email']} exists.",
                                   ErrorCode.UNIQUE, "email")
        agent = Agent(name=data["name"], email=data["email"].lower(), team=data.get("team"),
                      role=data["role"], active=True)
        db.session.add(agent)
        db.session.flush()
        gid = global_id("Agent", agent.id)
        audit.record(None, [gid], {"name": [None, agent.name], "team": [None, agent.team],
                                   "role": [None, agent.role]})
    return agent


_AGENT_FIELDS = ("name", "team", "role", "active")


def update_agent(agent_id: int, raw: Mapping[str, Any], *,
                 caller: Caller | None = None) -> Agent:
    """Rename, move to another team, change the role of, deactivate or reactivate an agent.

    Only the fields sent change. A deactivated agent's API keys and report links are
    refused from the next request on (core.auth forgets its cached keys when an agent row
    commits). The last active admin agent can be neither deactivated nor given another
    role: name another admin first (``NOT_ALLOWED``). Role changes apply to the agent's
    keys at once, so (``NOT_ALLOWED``, on ``role`` or ``active``): an agent never changes
    its own role nor deactivates itself, and only a caller holding ``admin`` gives or
    takes the admin role or changes an admin agent (``caller`` None: the CLI, as admin).
    Audited with the changed fields; ``agent.updated`` carries the agent's global id and
    the changed field names.
    """
    data = load(UpdateAgentSchema(), raw, partial=True)
    if "role" in data:
        data["role"] = AgentRole(data["role"])
    with transaction():
        admins = _active_admins() if (data.get("active") is False or data.get(
            "role", AgentRole.ADMIN) != AgentRole.ADMIN) else None
        agent = db.session.scalar(select(Agent).where(Agent.id == agent_id).with_for_update())
        if agent is None:
            raise not_found("agent", agent_id, type_name="Agent")
        changed = {name: (getattr(agent, name), data[name]) for name in _AGENT_FIELDS
                   if name in data and getattr(agent, name) != data[name]}
        if not changed:
            return agent
        _check_caller(caller, agent, changed)
        if admins == [agent.id]:
            raise UserError.single(
                "This is the last active admin agent: make another agent an admin first.",
                ErrorCode.NOT_ALLOWED, "active" if "active" in changed else "role")
        for name, (_, after) in changed.items():
            setattr(agent, name, after)
        db.session.flush()
        gid = global_id("Agent", agent.id)
        fields = sorted(audit.camel_changes(changed))
        audit.record(None, [gid], audit.camel_changes(changed), [audit.Event(
            "agent.updated", gid, {"agentId": gid, "changedFields": fields,
                                   **({"active": agent.active} if "active" in changed
                                      else {})})])
    return agent


def _check_caller(caller: Caller | None, agent: Agent,
                  changed: Mapping[str, tuple[Any, Any]]) -> None:
    if caller is None:
        return
    field = "role" if "role" in changed else "active" if "active" in changed else "id"
    if caller.agent_id == agent.id and field != "id":
        raise UserError.single("An agent cannot change its own role or deactivate itself; "
                               "ask another admin.", ErrorCode.NOT_ALLOWED, field)
    if not caller.admin and AgentRole.ADMIN in (agent.role, changed.get("role", (None,))[-1]):
        raise UserError.single("Only an admin may give or take the admin role or change an "
                               "admin agent.", ErrorCode.NOT_ALLOWED, field)


def _active_admins() -> list[int]:
    """The active admin agents' ids, their rows locked in id order: two changes that
    could each remove an admin run one after the other, and the second sees the first."""
    return list(db.session.scalars(select(Agent.id).where(
        Agent.role == AgentRole.ADMIN, Agent.active.is_(True)).order_by(Agent.id)
        .with_for_update()))


# --- Hand-over of customers ------------------------------------------------------------------

#: Customers moved per batch: one audit entry, one ``customers.reassigned`` event and one
#: ``rapport_customers_reassigned`` call each.
REASSIGN_BATCH = 500
#: At most this many customers named one by one (``customerIds``) per call.
MAX_REASSIGN_IDS = 1000


@dataclass
class Reassignment:
    """What ``reassign_customers`` did: how many customers moved, and to whom."""

    moved: int = 0
    #: Customers moved to each new owner, by agent id (agents given none are absent).
    counts: dict[int, int] = field(default_factory=dict)


def reassign_customers(raw: Mapping[str, Any]) -> Reassignment:
    """Give customers a new owner: the customers of ``from_owner_id``, those of
    ``customer_ids``, or both (the intersection); to ``to_owner_id`` (an active agent) or
    spread over the active agents of ``to_team``, each next customer (in id order) to the
    agent holding the fewest customers at that moment (ties: the lower agent id), never
    to the departing owner (``from_owner_id``) nor to the customer's current owner.

    Erased customers never move; with ``only_active``, churned ones stay too. One
    transaction: a refusal (unknown or inactive destination, a team without an active
    agent...) writes nothing. Batches of ``REASSIGN_BATCH`` customers: one audit entry,
    one ``customers.reassigned`` event and one ``rapport_customers_reassigned`` call each.
    """
    ids = raw.get("customer_ids")
    if isinstance(ids, (list, tuple)) and len(ids) > MAX_REASSIGN_IDS:
        raise UserError.single(f"At most {MAX_REASSIGN_IDS} customers per call; give "
                               "fromOwnerId to move all of an owner's customers.",
                               ErrorCode.TOO_MANY, "customerIds")
    data = load(ReassignCustomersSchema(), raw)
    _check_source_and_destination(data)
    result = Reassignment()
    with transaction():
        from_id = data.get("from_owner_id")
        if from_id is not None and db.session.get(Agent, from_id) is None:
            raise not_found("agent", from_id, "fromOwnerId", type_name="Agent")
        to_id = data.get("to_owner_id")
        candidates = _destinations(to_id, data.get("to_team"), from_id)
        holding = _customers_held(candidates) if to_id is None else {to_id: 0}
        query = select(Customer.id, Customer.owner_id).where(
            Customer.status != CustomerStatus.ERASED)
        if data.get("only_active"):
            query = query.where(Customer.status == CustomerStatus.ACTIVE)
        if from_id is not None:
            query = query.where(Customer.owner_id == from_id)
        if data.get("customer_ids") is not None:
            query = query.where(Customer.id.in_(sorted(set(data["customer_ids"]))))
        if to_id is not None:
            query = query.where(or_(Customer.owner_id.is_(None), Customer.owner_id != to_id))
        last = 0
        while True:
            rows = db.session.execute(query.where(Customer.id > last).order_by(Customer.id)
                                      .limit(REASSIGN_BATCH).with_for_update()).all()
            if not rows:
                break
            last = rows[-1].id
            assignments: dict[int, int] = {}
            previous: dict[int, int | None] = {}
            for customer_id, owner_id in rows:
                choices = [a for a in holding if a != owner_id]
                if not choices:
                    continue  # the team's only agent already owns it
                chosen = min(choices, key=lambda a: (holding[a], a))
                holding[chosen] += 1
                if owner_id in holding:
                    holding[owner_id] -= 1
                assignments[customer_id] = chosen
                previous[customer_id] = owner_id
            if assignments:
                _move(assignments, previous, from_id)
                result.moved += len(assignments)
                for agent_id in assignments.values():
                    result.counts[agent_id] = result.counts.get(agent_id, 0) + 1
            if len(rows) < REASSIGN_BATCH:
                break
    result.counts = dict(sorted(result.counts.items()))
    return result


def _check_source_and_destination(data: Mapping[str, Any]) -> None:
    if data.get("from_owner_id") is None and not data.get("customer_ids"):
        raise UserError.single("Name the customers to move: fromOwnerId, customerIds or "
                               "both.", ErrorCode.REQUIRED, "fromOwnerId")
    to_id, team = data.get("to_owner_id"), data.get("to_team")
    if to_id is None and team is None:
        raise UserError.single("Name the new owner (toOwnerId) or team (toTeam).",
                               ErrorCode.REQUIRED, "toOwnerId")
    if to_id is not None and team is not None:
        raise UserError.single("Give one destination: toOwnerId or toTeam, not both.",
                               ErrorCode.INVALID, "toOwnerId")
    if to_id is not None and to_id == data.get("from_owner_id"):
        raise UserError.single("The customers already belong to this agent; choose "
                               "another owner.", ErrorCode.INVALID, "toOwnerId")


def _destinations(to_id: int | None, team: str | None, from_id: int | None) -> list[int]:
    """The agents customers may go to (checked: known and active), by id."""
    # The destinations' rows are share-locked (update_agent locks an agent FOR UPDATE):
    # an agent deactivated meanwhile is seen deactivated, never given customers.
    if to_id is not None:
        agent = db.session.get(Agent, to_id, with_for_update={"read": True},
                               populate_existing=True)
        if agent is None:
            raise not_found("agent", to_id, "toOwnerId", type_name="Agent")
        if not agent.active:
            raise UserError.single(INACTIVE_OWNER, ErrorCode.NOT_ALLOWED, "toOwnerId")
        return [to_id]
    found = list(db.session.scalars(select(Agent.id).where(
        Agent.team == team, Agent.active.is_(True), Agent.id != (from_id or 0))
        .order_by(Agent.id).with_for_update(read=True)))
    if not found:
        raise UserError.single(f"The team {team!r} has no active agent to take the "
                               "customers.", ErrorCode.NOT_FOUND, "toTeam")
    return found


def _customers_held(agent_ids: list[int]) -> dict[int, int]:
    """How many (not erased) customers each agent owns, in one query; every agent listed."""
    held = dict.fromkeys(agent_ids, 0)
    held.update(db.session.execute(
        select(Customer.owner_id, func.count()).where(
            Customer.owner_id.in_(agent_ids), Customer.status != CustomerStatus.ERASED)
        .group_by(Customer.owner_id)).tuples().all())
    return held


def _owner_counts(owners: Any) -> dict[str, int]:
    """``{agent global id: customers}`` in agent id order (``none``: without an owner)."""
    counts: dict[int, int] = {}
    for owner in owners:
        counts[owner or 0] = counts.get(owner or 0, 0) + 1
    return {("none" if owner == 0 else global_id("Agent", owner)): n
            for owner, n in sorted(counts.items())}


def _move(assignments: dict[int, int], previous: dict[int, int | None],
          from_id: int | None) -> None:
    """One batch: one UPDATE, the plugins' hook, one audit entry and one event."""
    new_owners = set(assignments.values())
    owner = (next(iter(new_owners)) if len(new_owners) == 1
             else case(assignments, value=Customer.id))
    db.session.execute(update(Customer).where(Customer.id.in_(list(assignments)))
                       .values(owner_id=owner, updated_at=utcnow())
                       .execution_options(synchronize_session=False))
    for row in list(db.session.identity_map.values()):
        if isinstance(row, Customer) and row.id in assignments:
            db.session.expire(row, ["owner_id", "updated_at"])
    rapport().hook.rapport_customers_reassigned(assignments=assignments, previous=previous)
    moved = sorted(assignments)
    first, last = global_id("Customer", moved[0]), global_id("Customer", moved[-1])
    counts = _owner_counts(assignments.values())
    from_gid = None if from_id is None else global_id("Agent", from_id)
    agents = sorted({a for a in (*new_owners, *previous.values(), from_id) if a is not None})
    audit.record(
        None, [*(global_id("Customer", c) for c in moved),
               *(global_id("Agent", a) for a in agents)],
        {"ownerId": [_owner_counts(previous[c] for c in moved), counts]},
        [audit.Event("customers.reassigned", first, {
            "moved": len(moved), "fromOwnerId": from_gid,
            "assignments": [{"ownerId": gid, "count": n} for gid, n in counts.items()],
            "firstId": first, "lastId": last})])


def raise_alert(kind: str, severity: str, source: str, evidence: Mapping[str, Any],
                customer: Customer | None = None) -> Alert:
    """Store an alert in the caller's transaction and announce it (``rapport_alert_raised``).

    ``evidence`` is JSON-serialisable: the figures that justify the alert (window count,
    expected count, score...). The caller commits.
    """
    if severity not in ALERT_SEVERITIES:
        raise ValueError(f"severity {severity!r}: use one of {', '.join(ALERT_SEVERITIES)}")
    alert = Alert(kind=kind, severity=severity, source=source, evidence=dict(evidence),
                  customer_id=customer.id if customer is not None else None,
                  status=AlertStatus.OPEN, raised_at=utcnow())
    db.session.add(alert)
    db.session.flush()
    rapport().hook.rapport_alert_raised(alert=alert)
    gid = global_id("Alert", alert.id)
    customer_gid = None if customer is None else global_id("Customer", customer.id)
    audit.record(None, [gid, *([customer_gid] if customer_gid else [])], None, [
        audit.Event("alert.raised", gid, {
            "alertId": gid, "kind": kind, "severity": severity, "source": source,
            "customerId": customer_gid})])
    return alert


def acknowledge_alert(alert_id: int, agent_id: int | None = None) -> Alert:
    with transaction():
        alert = db.session.get(Alert, alert_id)
        if alert is None:
            raise not_found("alert", alert_id, type_name="Alert")
        if alert.status != AlertStatus.OPEN:
            raise UserError.single(f"The alert is already {alert.status.value}.",
                                   ErrorCode.NOT_ALLOWED, "id")
        alert.status = AlertStatus.ACKNOWLEDGED
        alert.acknowledged_at = utcnow()
        alert.acknowledged_by_id = agent_id
        audit.record(None, [global_id("Alert", alert.id)],
                     {"status": [AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED]})
    return alert


def define_customer_attribute(raw: Mapping[str, Any]) -> CustomerAttributeDefinition:
    """Declare (or re-label) a custom attribute; its type cannot change once declared, and
    values customers already hold must fit it (``core.attributes.stored_misfits``)."""
    data = load(AttributeDefinitionSchema(), raw)
    with transaction():
        definition = db.session.get(CustomerAttributeDefinition, data["key"])
        if definition is not None and definition.type.value != data["type"]:
            raise UserError.single(
                f"Attribute {data['key']!r} is declared as {definition.type.value}; its type "
                f"cannot change.", ErrorCode.CONFLICT, "type")
        before = None if definition is None else {
            "type": definition.type, "label": definition.label,
            "categories": definition.categories}
        if definition is None or (definition.categories or []) != (data.get("categories")
                                                                   or []):
            # Values customers already hold must fit the new type (or categories).
            misfit = stored_misfits(CustomerAttributeDefinition(
                key=data["key"], type=AttributeType(data["type"]), label=data["label"],
                categories=data.get("categories")))
            if misfit is not None:
                raise UserError(misfit)
        if definition is None:
            definition = CustomerAttributeDefinition(key=data["key"], type=data["type"])
            db.session.add(definition)
        definition.label = data["label"]
        definition.categories = data.get("categories")
        after = {"type": data["type"], "label": data["label"],
                 "categories": data.get("categories")}
        audit.record(None, [], {f"attributes.{data['key']}": [before, after]})
    return definition
