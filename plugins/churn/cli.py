"""``rapport churn import | check | report | fit | score | warnings``: churn records from a
file, the churn-rate jump check, the monthly report as text, fitting the models, scoring
every customer, and the warning list as CSV."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from core.cli import fail
from core.db import utcnow
from core.errors import UserError
from core.importers import FileFormat, ImportFileError
from core.jobs import ConsoleProgress, run_here

from plugins.churn import modeling, report
from plugins.churn.importer import open_churn_import
from plugins.churn.jobs import REPORT_FILE

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
@click.option("--as-of", "as_of", metavar="DATE",
              help="Date of a snapshot file (a churned yes/no column): YYYY-MM-DD means up to "
                   "the end of that day in RAPPORT_TIMEZONE; a datetime is exact (without a "
                   "zone: UTC). An as_of column does the same per row.")
def import_command(file: Path, file_format: str | None, batch_size: int,
                   rejects_path: Path | None, encoding: str, as_of: str | None) -> None:
    """Mark customers churned from FILE.

    Columns: customer_external_id, churned_at (ISO 8601; without an offset it is UTC),
    type (natural, malicious, competitive, negligence, other), reason (pricing,
    inconvenience, core_service_failure, service_encounter_failure, response_to_failure,
    competition, ethical, involuntary, other) are required; customer_source (default:
    default) and note are optional. A re-run skips the records already stored.

    Or a snapshot: customer_external_id and churned (yes/no, true/false, 1/0), with
    --as-of DATE or an as_of column; type and reason are optional (default other). A
    churned row is dated at the snapshot; a row not churned writes nothing.

    Exits with status 1 when every row was rejected (in a snapshot: every churned row).
    """
    try:
        with open_churn_import(file, file_format=file_format, encoding=encoding,
                               rejects_path=rejects_path, as_of=as_of) as job:
            with click.progressbar(length=max(job.size, 1), label="Importing churn records",
                                   file=sys.stderr) as bar:
                result = job.run(batch_size, on_progress=bar.update)
            jumps = job.importer.check_jumps()  # type: ignore[attr-defined]
    except ImportFileError as exc:
        raise click.ClickException(str(exc)) from None
    not_churned = getattr(job.importer, "not_churned", 0)
    click.echo(f"imported: {result.imported}, skipped (already there): "
               f"{result.skipped - not_churned}, rejected: {result.rejected}"
               + (f", not churned: {not_churned}" if not_churned else ""))
    if result.rejected:
        click.echo(f"rejected rows and why: {result.rejects_path}")
    _show_jumps(jumps)
    if result.rejected and not result.imported and not result.skipped - not_churned:
        # A snapshot's "no" rows write nothing by design: when every "yes" row was
        # rejected, the import did nothing it was run for.
        raise click.ClickException(
            "every churned row was rejected; nothing was imported" if not_churned
            else "every row was rejected; nothing was imported")


@churn_group.command("check")
@click.option("--as-of", "as_of", metavar="DATE",
              help="Check the month of this time and the one before (default now). A date "
                   "means up to the end of that day in RAPPORT_TIMEZONE; a datetime is exact "
                   "(without a zone: UTC).")
def check_command(as_of: str | None) -> None:
    """Alert (once per month) when a month's churn rate jumps over its trailing mean (the
    job churn.check)."""
    try:
        run = run_here("churn.check", {"asOf": as_of or utcnow().isoformat()},
                       ConsoleProgress("Checking"))
    except UserError as exc:
        raise fail(exc) from None
    jumps = [report.Jump(j["month"], j["churnRate"], j["trailingMean"], j["churned"],
                         j["activeAtStart"]) for j in run["jumps"]]
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
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the HTML report with its charts to this file.")
def report_command(from_: str, to: str, out: Path | None) -> None:
    """Monthly churn: active customers at the start, churned, churn and retention rates;
    with --out, the HTML report (charts, warning list, model) as one self-contained page."""
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
    if out is not None:
        try:
            run_here("churn.report", {"from": from_, "to": to},
                     ConsoleProgress("Churn report", {REPORT_FILE: out}))
        except OSError as exc:
            raise click.ClickException(f"Cannot write {out}: {exc.strerror}") from None
        click.echo(f"report written to {out}")


def _auc(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "n/a"
    return (f"ROC-AUC {metrics['roc_auc']:.3f}, PR-AUC {metrics['pr_auc']:.3f} (base rate "
            f"{metrics['base_rate']:.3f}), Brier {metrics['brier']:.4f}, n {metrics['n']}")


_AS_OF_HELP = ("YYYY-MM-DD means up to the end of that day (00:00 of the next day in "
               "RAPPORT_TIMEZONE), so that day's facts count; a datetime is exact (without a "
               "zone: UTC); from 1900-01-01 to 9998-12-31.")


@churn_group.command("fit")
@click.option("--as-of", "as_of", metavar="DATE",
              help="Calibration date (default now). " + _AS_OF_HELP)
@click.option("--time-unit", type=click.Choice(["day", "week"]), default="day",
              show_default=True, help="Unit of the BG/NBD times.")
@click.option("--classifier", type=click.Choice(["logistic", "knn", "gradient_boosting"]),
              default="logistic", show_default=True, help="The churn-risk classifier.")
@click.option("--horizon-days", type=click.IntRange(1, modeling.MAX_HORIZON_DAYS), default=90,
              show_default=True, help="The classifier predicts churn within this many days.")
def fit_command(as_of: str | None, time_unit: str, classifier: str,
                horizon_days: int) -> None:
    """Fit BG/NBD, Gamma-Gamma and the classifier; store them as the active model (the job
    churn.fit)."""
    parameters = {"asOf": as_of or utcnow().isoformat(), "timeUnit": time_unit,
                  "classifier": classifier, "horizonDays": horizon_days}
    try:
        version = run_here("churn.fit", parameters, ConsoleProgress("Training features"))
    except UserError as exc:
        raise fail(exc) from None
    params, metrics = version["params"], version["metrics"]
    g = params.get("bgnbd")
    click.echo(f"model version {version['modelVersion']} ({version['kind']}, model "
               f"{params.get('model', 'bgnbd')}), as of {version['asOf']}, time unit "
               f"{version['timeUnit']}")
    for period, fit in sorted((params.get("sbg") or {}).items()):
        if isinstance(fit, dict):
            click.echo(f"sBG ({period}): alpha {fit['alpha']:.4g}, beta {fit['beta']:.4g}, "
                       f"log-likelihood {fit['log_likelihood']:.2f} ({fit['n_customers']} "
                       f"customers, {fit['n_churned']} churned)")
    if g:
        click.echo(f"BG/NBD: r {g['r']:.4g}, alpha {g['alpha']:.4g}, a {g['a']:.4g}, "
                   f"b {g['b']:.4g}, log-likelihood {g['log_likelihood']:.2f} "
                   f"({g['n_customers']} customers, {g['n_repeat_buyers']} repeat buyers)")
    gg = params.get("gamma_gamma")
    if gg:
        click.echo(f"Gamma-Gamma: p {gg['p']:.4g}, q {gg['q']:.4g}, gamma {gg['gamma']:.4g}, "
                   f"log-likelihood {gg['log_likelihood']:.2f} ({gg['n_customers']} buyers)")
    trained = metrics.get("classifier")
    if trained:
        training = metrics["training"]
        click.echo(f"classifier {trained['kind']}: trained as of {training['as_of']} on "
                   f"{training['labelled']} customers, {training['churned']} churned within "
                   f"{training['horizon_days']} days")
        click.echo(f"  cross-validation: {_auc(trained['cross_validation'])}")
        click.echo(f"  time-aware: {_auc(trained['time_validation'])}")
        for note in trained["notes"]:
            click.echo(f"  {note}" if note.startswith("warning:") else f"  note: {note}")
    checked = metrics.get("validation")
    if checked:
        correlation = checked["correlation"]
        click.echo(f"backtest over {checked['horizonDays']:g} days ({checked['customers']} "
                   f"customers): predicted {checked['predictedTotal']:.1f} purchase days, "
                   f"actual {checked['actualTotal']:.0f}, correlation "
                   f"{'n/a' if correlation is None else f'{correlation:.3f}'}, mean absolute "
                   f"error {checked['meanAbsoluteError']:.3f}")
        for group in checked["byFrequency"]:
            click.echo(f"  {group['frequency']}{'+' if group['orMore'] else ''} calibration "
                       f"purchases: {group['customers']} customers, predicted "
                       f"{group['predicted']:.2f}, actual {group['actual']:.2f}")
    for note in metrics.get("notes", []):
        click.echo(f"note: {note}")


@churn_group.command("score")
@click.option("--chunk-size", type=click.IntRange(100, 200_000),
              default=modeling.DEFAULT_SCORE_CHUNK, show_default=True,
              help="Customers per chunk (memory holds one chunk).")
@click.option("--chunks", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Id ranges scored one after the other here (the churn.score job runs "
                   "them on any free workers).")
@click.option("--as-of", "as_of", metavar="DATE",
              help="Score as of this date with the active model (default now). "
                   + _AS_OF_HELP)
def score_command(chunk_size: int, chunks: int, as_of: str | None) -> None:
    """Score every customer with the active model (risk, P(alive), CLV, top factors; the
    job churn.score)."""
    parameters: dict[str, Any] = {"chunkSize": chunk_size, "chunks": chunks}
    if as_of:
        parameters["asOf"] = as_of
    try:
        summary = run_here("churn.score", parameters, ConsoleProgress("Scoring customers"))
    except UserError as exc:
        raise fail(exc) from None
    click.echo(f"scored {summary['customers']} customers ({summary['withPurchases']} with "
               f"purchases) with model version {summary['modelVersion']}: mean risk "
               f"{summary['meanRisk']:.3f}, {summary['highRisk']} at risk >= 0.5, total CLV "
               f"{summary['totalClv']:,.2f}; {summary['removedOldScores']} older scores "
               f"removed")
    for note in summary["notes"]:
        click.echo(f"note: {note}")


@churn_group.command("warnings")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV file to write.")
@click.option("--min-risk", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Leave out customers below this risk.")
@click.option("--limit", type=click.IntRange(1), help="At most this many customers.")
def warnings_command(out: Path, min_risk: float, limit: int | None) -> None:
    """At-risk customers, biggest risk x CLV first, as CSV for the people who follow up."""
    # Written next to FILE, then renamed over it: a failed run (no scores yet, a full
    # disk) leaves an existing FILE as it was instead of truncated or half written.
    partial = out.with_name(f".{out.name}.partial")
    try:
        with partial.open("w", newline="", encoding="utf-8") as handle:
            count = modeling.write_warnings(handle, min_risk, limit)
        partial.replace(out)
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror}") from None
    except UserError as exc:
        raise fail(exc) from None
    finally:
        partial.unlink(missing_ok=True)
    click.echo(f"{count} customers written to {out}")
