"""``rapport churn import | check | report``: churn records from a file, the churn-rate
jump check, the monthly report as text."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from core.cli import fail
from core.db import utcnow
from core.errors import UserError
from core.importers import FileFormat, ImportFileError
from core.services import transaction

from plugins.churn import report
from plugins.churn.importer import open_churn_import

_WHEN = click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"])


def _aware(value: dt.datetime | None) -> dt.datetime:
    when = value or utcnow()
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


@click.group("churn")
def churn_group() -> None:
    """Churn: import churn records, check the churn rate, the monthly report."""


@churn_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "file_format", type=click.Choice([f.value for f in FileFormat]),
              help="Default: from the extension (.csv, .jsonl, .ndjson).")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 1000),
              help="Rows per transaction.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write rejected rows [default: FILE.rejects.csv].")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of FILE.")
def import_command(file: Path, file_format: str | None, batch_size: int,
                   rejects_path: Path | None, encoding: str) -> None:
    """Mark customers churned from FILE.

    Columns: customer_external_id, churned_at (ISO 8601; without an offset it is UTC),
    type (natural, malicious, competitive, negligence), reason (pricing, inconvenience,
    core_service_failure, service_encounter_failure, response_to_failure, competition,
    ethical, involuntary, other) are required; customer_source (default: default) and note
    are optional. A re-run skips the records already stored.
    """
    try:
        with open_churn_import(file, file_format=file_format, encoding=encoding,
                               rejects_path=rejects_path) as job:
            with click.progressbar(length=max(job.size, 1), label="Importing churn records",
                                   file=sys.stderr) as bar:
                result = job.run(batch_size, on_progress=bar.update)
            jumps = job.importer.check_jumps()  # type: ignore[attr-defined]
    except ImportFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"imported: {result.imported}, skipped (already there): {result.skipped}, "
               f"rejected: {result.rejected}")
    if result.rejected:
        click.echo(f"rejected rows and why: {result.rejects_path}")
    _show_jumps(jumps)


@churn_group.command("check")
@click.option("--as-of", type=_WHEN, help="Check the month of this time and the one before "
                                          "(default now; without a zone: UTC).")
def check_command(as_of: dt.datetime | None) -> None:
    """Alert (once per month) when a month's churn rate jumps over its trailing mean."""
    now = _aware(as_of)
    previous = now.astimezone(report.business_tz()).replace(day=1) - dt.timedelta(days=1)
    with transaction():
        jumps = report.check_churn_jumps([now, previous], now=now)
    click.echo(f"{len(jumps)} new churn-rate alert(s)")
    _show_jumps(jumps)


def _show_jumps(jumps: list[report.Jump]) -> None:
    for jump in jumps:
        click.echo(f"  {jump.month}: churn rate {jump.churn_rate:.2%} vs {jump.trailing_mean:.2%}"
                   f" over the {report.TRAILING_MONTHS} months before ({jump.churned} churned)")


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


@churn_group.command("report")
@click.option("--from", "from_", required=True, help="First day (YYYY-MM-DD).")
@click.option("--to", required=True, help="Last day, included (YYYY-MM-DD).")
def report_command(from_: str, to: str) -> None:
    """Monthly churn: active customers at the start, churned, churn and retention rates."""
    try:
        figures = report.churn_report({"from": from_, "to": to})
    except UserError as exc:
        raise fail(exc) from None
    click.echo(f"{'month':<9}{'active':>9}{'churned':>9}{'back':>7}{'churn':>9}{'retain':>9}")
    for month in figures.months:
        click.echo(f"{month.month:<9}{month.active_at_start:>9}{month.churned:>9}"
                   f"{month.reactivated:>7}{_rate(month.churn_rate):>9}"
                   f"{_rate(month.retention_rate):>9}")
    for title, counts in (("by type", figures.by_type), ("by reason", figures.by_reason)):
        click.echo(f"{title}: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                                   or "none"))
