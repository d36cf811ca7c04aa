"""``rapport care at-risk | occasions | rules``: the care plugin's jobs, run here."""

from __future__ import annotations

import click

from core.cli import fail
from core.errors import UserError
from core.jobs import ConsoleProgress, run_here


@click.group("care")
def care_group() -> None:
    """Care: the monthly at-risk run, the daily occasions run and the rule runs."""


@care_group.command("at-risk")
@click.option("--min-risk", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Churn risk from which a customer gets a follow-up.")
@click.option("--due-in-days", type=click.IntRange(0, 90), default=7, show_default=True,
              help="Days until the follow-up tasks are due.")
def at_risk_command(min_risk: float, due_in_days: int) -> None:
    """Open the owners' follow-ups of at-risk customers, close those that ended (the job
    care.at_risk)."""
    try:
        run = run_here("care.at_risk", {"minRisk": min_risk, "dueInDays": due_in_days},
                       ConsoleProgress("At-risk follow-ups"))
    except UserError as exc:
        raise fail(exc) from None
    if not run["scores"]:
        click.echo("no churn scores (is the churn plugin enabled and has it scored?)")
    click.echo(f"{run['opened']} follow-ups opened, {run['withoutOwner']} at-risk customers "
               f"without an active owner; {run['returned']} returned, {run['lost']} lost")


@care_group.command("occasions")
@click.option("--days-ahead", type=click.IntRange(0, 60), default=7, show_default=True,
              help="Announce the birthdays and anniversaries this many days from today.")
def occasions_command(days_ahead: int) -> None:
    """Announce the birthdays and customer anniversaries ahead as
    customer.occasion.upcoming events (the job care.occasions)."""
    try:
        run = run_here("care.occasions", {"daysAhead": days_ahead},
                       ConsoleProgress("Occasions"))
    except UserError as exc:
        raise fail(exc) from None
    click.echo(f"{run['on']}: {run['birthdays']} birthdays, {run['anniversaries']} "
               f"anniversaries; {run['announced']} announced now")


@care_group.command("rules")
def rules_command() -> None:
    """Run the pending rule runs now (the job care.run_rules)."""
    run = run_here("care.run_rules", {}, ConsoleProgress("Rule runs"))
    click.echo(f"{run['succeeded']} rule runs succeeded, {run['failed']} failed")
