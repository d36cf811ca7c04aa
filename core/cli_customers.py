"""``rapport customers``: work on many customers at once (loaded when it runs; ``core/cli.py``
declares it with ``lazy_command``)."""

from __future__ import annotations

from typing import Any

import click
from flask.cli import AppGroup
from sqlalchemy import select

from core import context
from core.cli import fail
from core.db import db
from core.errors import UserError
from core.ids import global_id, parse_id
from core.models import Agent


def _agent_id(value: str, option: str) -> int:
    """An agent by e-mail, global id (as GraphQL shows it) or number: its database id.
    (Resolved in the command, where the app and its database are at hand.)"""
    text = value.strip()
    if "@" not in text:
        try:
            return parse_id(text, "Agent")
        except ValueError as exc:
            raise click.BadParameter(f"{exc} Give the agent's e-mail, global id or number.",
                                     param_hint=option) from None
    agent_id = db.session.scalar(select(Agent.id).where(Agent.email == text.lower()))
    if agent_id is None:
        raise click.BadParameter(f"no agent with e-mail {text!r}", param_hint=option)
    return int(agent_id)


customers_group = AppGroup("customers", help="Customers in bulk: give an owner's customers "
                                             "to another agent or a team.")


@customers_group.command("reassign")
@click.option("--from", "from_owner", metavar="AGENT", required=True,
              help="The departing owner (e-mail, global id or number): all of their "
                   "customers move.")
@click.option("--to", "to_owner", metavar="AGENT", default=None,
              help="The new owner, an active agent.")
@click.option("--to-team", "to_team", default=None, metavar="TEAM",
              help="Or spread the customers over this team's active agents (each next "
                   "customer to the agent holding the fewest).")
@click.option("--only-active", is_flag=True,
              help="Leave churned customers with their owner (erased ones never move).")
def reassign_command(from_owner: str, to_owner: str | None, to_team: str | None,
                     only_active: bool) -> None:
    """Give every customer of an agent (one who left) a new owner: --to AGENT or
    --to-team TEAM. Their open tasks and follow-ups move along (care plugin)."""
    from core.services.staff import reassign_customers

    if (to_owner is None) == (to_team is None):
        raise click.UsageError("Give exactly one of --to AGENT and --to-team TEAM.")
    from_id = _agent_id(from_owner, "--from")
    raw: dict[str, Any] = {"from_owner_id": from_id, "only_active": only_active}
    raw.update({"to_owner_id": _agent_id(to_owner, "--to")} if to_owner is not None
               else {"to_team": to_team})
    try:
        with context.use(operation="cli.customers.reassign"):
            result = reassign_customers(raw)
    except UserError as exc:
        raise fail(exc) from None
    names = dict(db.session.execute(select(Agent.id, Agent.name).where(
        Agent.id.in_(list(result.counts)))).tuples().all()) if result.counts else {}
    click.echo(f"{result.moved} customer(s) moved from {global_id('Agent', from_id)}.")
    for agent_id, count in result.counts.items():
        click.echo(f"  {count} to {names.get(agent_id, '?')} ({global_id('Agent', agent_id)})")
