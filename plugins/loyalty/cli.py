"""``rapport loyalty expire | tiers | report``: the programme's jobs and its report."""

from __future__ import annotations

import datetime as dt

import click

from core.cli import fail
from core.errors import UserError
from core.jobs import ConsoleProgress, run_here

from plugins.loyalty import report


@click.group("loyalty")
def loyalty_group() -> None:
    """The loyalty programme: expiry and tier jobs, the report."""


@loyalty_group.command("expire")
@click.option("--as-of", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
              help="Expire what is due at this time (default now; a date means 00:00 UTC).")
def expire_command(as_of: dt.datetime | None) -> None:
    """Write expiry entries for every lot past its expiry (the job loyalty.expire)."""
    when = as_of or dt.datetime.now(dt.timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    run = run_here("loyalty.expire", {"asOf": when.isoformat()},
                   ConsoleProgress("Expiring lots"))
    click.echo(f"expired {run['points']} points in {run['lots']} lots of {run['customers']} "
               f"members")


@loyalty_group.command("tiers")
def tiers_command() -> None:
    """Re-evaluate every member's tier (moves down happen only here; the job
    loyalty.tiers)."""
    run = run_here("loyalty.tiers", {}, ConsoleProgress("Re-evaluating tiers"))
    click.echo(f"{run['moved']} members changed tier")


@loyalty_group.command("report")
@click.option("--from", "from_", required=True, help="First day (YYYY-MM-DD).")
@click.option("--to", required=True, help="Last day, included (YYYY-MM-DD).")
def report_command(from_: str, to: str) -> None:
    """Points issued, redeemed and expired per month; liability, rates, tiers, behaviour."""
    try:
        figures = report.loyalty_report({"from": from_, "to": to})
    except UserError as exc:
        raise fail(exc) from None
    click.echo(f"Loyalty programme, {figures.period_from} to {figures.period_to}")
    click.echo(f"{'month':<8}{'issued':>12}{'redeemed':>12}{'expired':>12}{'reversed':>12}"
               f"{'removed':>12}")
    for row in [*figures.months, figures.total]:
        click.echo(f"{row.month:<8}{row.issued:>12}{row.redeemed:>12}{row.expired:>12}"
                   f"{row.reversed:>12}{row.removed:>12}")

    def percent(rate: float | None) -> str:
        return "n/a" if rate is None else f"{rate:.1%}"

    click.echo(f"outstanding: {figures.outstanding_points} points = "
               f"{figures.outstanding_value} {figures.currency}")
    click.echo(f"breakage rate: {percent(figures.breakage_rate)}; "
               f"redemption rate: {percent(figures.redemption_rate)}")
    click.echo(f"members: {figures.members}; per tier: " + (", ".join(
        f"{tier.name if tier else 'no tier'} {count}"
        for tier, count in figures.members_per_tier) or "none"))
    for label, behaviour in (("members", figures.member_purchases),
                             ("non-members", figures.non_member_purchases)):
        frequency = ("n/a" if behaviour.purchase_frequency is None
                     else f"{behaviour.purchase_frequency:.2f}")
        click.echo(f"{label}: {behaviour.customers} purchasers, repeat-purchase rate "
                   f"{percent(behaviour.repeat_purchase_rate)}, {frequency} purchases each")
