"""``rapport segments tiers``: the value tiers job, here, with a progress bar."""

from __future__ import annotations

import datetime as dt

import click

from core.cli import fail
from core.errors import UserError
from core.jobs import ConsoleProgress, run_here


@click.group("segments")
def segments_group() -> None:
    """Saved segments and value tiers."""


@segments_group.command("tiers")
@click.option("--as-of", type=click.DateTime(["%Y-%m-%d"]),
              help="The window ends with this day (default today in RAPPORT_TIMEZONE).")
@click.option("--window-days", type=int, default=365, show_default=True,
              help="Days of purchases scored.")
def tiers_command(as_of: dt.datetime | None, window_days: int) -> None:
    """Score every customer's recency, frequency and spend and store their value tier (the
    job segments.tiers)."""
    parameters: dict[str, object] = {"windowDays": window_days}
    if as_of is not None:
        parameters["asOf"] = as_of.date().isoformat()
    try:
        run = run_here("segments.tiers", parameters, ConsoleProgress("Scoring customers"))
    except UserError as exc:
        raise fail(exc) from None
    click.echo(f"{run['customers']} customers scored as of {run['asOf']} over "
               f"{run['windowDays']} days; {run['changed']} changed tier")
    click.echo("per tier: " + ", ".join(f"{tier} {count}" for tier, count in run["tiers"].items()))
