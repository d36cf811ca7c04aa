"""``rapport complaints escalate | detect | stats | sla``: the jobs, the report, the targets."""

from __future__ import annotations

import datetime as dt

import click

from core.cli import fail
from core.errors import UserError
from core.jobs import ConsoleProgress, run_here

from plugins.complaints import service, sla, stats

_WHEN = click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"])


def _aware(value: dt.datetime | None) -> dt.datetime:
    when = value or dt.datetime.now(dt.timezone.utc)
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


@click.group("complaints")
def complaints_group() -> None:
    """Complaints: SLA escalation, spike detection, statistics, SLA targets."""


@complaints_group.command("escalate")
@click.option("--as-of", type=_WHEN, help="Escalate what is overdue at this time (default "
                                          "now; without a zone: UTC).")
def escalate_command(as_of: dt.datetime | None) -> None:
    """Escalate complaints past an SLA target: severity up, timeline entry, alert (the job
    complaints.escalate)."""
    run = run_here("complaints.escalate", {"asOf": _aware(as_of).isoformat()},
                   ConsoleProgress("Escalating"))
    click.echo(f"escalated {len(run['escalated'])} complaints, raised {len(run['alerts'])} "
               f"alerts")
    for complaint_id in run["escalated"]:
        click.echo(f"  complaint {complaint_id}")


@complaints_group.command("detect")
@click.option("--as-of", type=_WHEN, help="Test the day of this time (default now).")
def detect_command(as_of: dt.datetime | None) -> None:
    """Test daily complaint counts for abnormal rises; alert on each new detection (the job
    complaints.detect)."""
    run = run_here("complaints.detect", {"asOf": _aware(as_of).isoformat()},
                   ConsoleProgress("Detecting"))
    click.echo(f"{run['day']}: {len(run['detections'])} abnormal series, "
               f"{len(run['alerts'])} new alerts")
    for found in run["detections"]:
        click.echo(f"  {found['series']}: {found['windowCount']} complaints in "
                   f"{found['windowDays']} day(s), {found['expected']} expected, score "
                   f"{found['score']}")


def _hours(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


@complaints_group.command("stats")
@click.option("--from", "from_", required=True, help="First day (YYYY-MM-DD).")
@click.option("--to", required=True, help="Last day, included (YYYY-MM-DD).")
@click.option("--group-by", default="type", show_default=True,
              type=click.Choice(stats.GROUPINGS))
def stats_command(from_: str, to: str, group_by: str) -> None:
    """Volume, response and resolution hours (median / p90), SLA compliance, reopen rate,
    satisfaction of the complaints filed in the period."""
    try:
        figures = stats.complaint_stats({"from": from_, "to": to, "group_by": group_by})
    except UserError as exc:
        raise fail(exc) from None
    click.echo(f"Complaints filed {figures.period_from} to {figures.period_to}, by {group_by}")
    click.echo(f"{group_by:<16}{'volume':>8}{'resp.med':>10}{'resp.p90':>10}{'res.med':>10}"
               f"{'res.p90':>10}{'SLA ok':>9}{'reopen':>9}{'satisf.':>9}")
    for row in [*figures.groups, figures.total]:
        satisfaction = "n/a" if row.satisfaction is None else f"{row.satisfaction:.2f}"
        click.echo(f"{row.key:<16}{row.volume:>8}"
                   f"{_hours(row.median_first_response_hours):>10}"
                   f"{_hours(row.p90_first_response_hours):>10}"
                   f"{_hours(row.median_resolution_hours):>10}"
                   f"{_hours(row.p90_resolution_hours):>10}{_share(row.sla_compliance):>9}"
                   f"{_share(row.reopen_rate):>9}{satisfaction:>9}")


@complaints_group.command("sla")
@click.option("--severity", type=click.Choice(["low", "medium", "high", "critical"]))
@click.option("--first-response-hours", type=int)
@click.option("--resolution-hours", type=int)
@click.option("--business-hours/--wall-clock", default=True,
              help="Count the business calendar's hours only (default) or every hour.")
def sla_command(severity: str | None, first_response_hours: int | None,
                resolution_hours: int | None, business_hours: bool) -> None:
    """Show the SLA targets, or set those of one severity (for complaints filed later)."""
    if severity is not None:
        try:
            service.set_sla_policy({"severity": severity,
                                    "first_response_hours": first_response_hours,
                                    "resolution_hours": resolution_hours,
                                    "business_hours": business_hours})
        except UserError as exc:
            raise fail(exc) from None
    for level, target in sla.policy().items():
        clock = "business hours" if target.business_hours else "wall clock"
        click.echo(f"{level.value:<9} first response {target.first_response_hours:>4} h, "
                   f"resolution {target.resolution_hours:>5} h ({clock})")
