"""``rapport surveys import SURVEY_ID FILE``: responses from CSV; ``rapport surveys report
SURVEY_ID --out report.html``: the HTML report of the analyses (docs/surveys.md). SURVEY_ID
is the global id GraphQL shows, or the plain number."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from core.cli_ids import ObjectId
from core.ids import global_id
from core.errors import UserError

from core.importers import (
    DEFAULT_BATCH_SIZE, FileFormat, ImportFileError, ImportJob, RecordReader,
    default_rejects_path,
)

from plugins.surveys import analysis
from plugins.surveys.importer import ResponseImporter, open_survey_import


@click.group("surveys")
def surveys_group() -> None:
    """Surveys: import responses, write the analysis report."""


@surveys_group.command("import")
@click.argument("survey_id", type=ObjectId("Survey"))
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True,
              type=click.IntRange(1, 10_000), help="Rows per transaction.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write rejected rows [default: FILE.rejects.csv].")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of FILE.")
@click.option("--submitted-at", "submitted_at", metavar="DATE",
              help="When the rows without a submitted_at answered: YYYY-MM-DD means 00:00 "
                   "of that day in RAPPORT_TIMEZONE; a datetime is exact (without a zone: "
                   "UTC) [default: the time of the import].")
@click.option("--column", "columns", multiple=True, metavar="COLUMN=KEY",
              help="Read the file's COLUMN as question KEY (repeatable); other columns "
                   "match question keys without regard to case.")
def import_command(survey_id: int, file: Path, batch_size: int, rejects_path: Path | None,
                   encoding: str, submitted_at: str | None, columns: tuple[str, ...]) -> None:
    """Import survey responses from a CSV FILE: customer_external_id (+ customer_source;
    not for anonymous surveys), submitted_at (optional, see --submitted-at), one column
    per question key, matched without regard to case or named with --column (multiple
    choices separated by ';'). SURVEY_ID is the survey's global id (or its number). Bad
    rows go to the rejects file; a re-run skips what is already stored."""
    mapping: dict[str, str] = {}
    for pair in columns:
        column, sep, key = pair.partition("=")
        if not sep or not column.strip() or not key.strip():
            raise click.BadParameter(f"{pair!r}: give COLUMN=KEY", param_hint="--column")
        mapping[column.strip()] = key.strip()
    when = None
    if submitted_at is not None:
        from core.app import rapport
        from core.dates import DateError, parse_moment
        from core.db import utcnow
        from core.schemas import FUTURE_TOLERANCE

        try:
            when = parse_moment(submitted_at, rapport().settings.tz, ends=False,
                                field="submitted_at")
        except DateError as exc:
            raise click.BadParameter(exc.errors[0].message,
                                     param_hint="--submitted-at") from None
        if when > utcnow() + FUTURE_TOLERANCE:
            raise click.BadParameter("a response cannot be submitted in the future",
                                     param_hint="--submitted-at")
    try:
        importer = ResponseImporter(open_survey_import(survey_id), submitted_at=when,
                                    columns=mapping)
        reader = RecordReader(file, FileFormat.CSV, encoding)
        try:
            if reader.columns is not None:
                importer.check_columns(reader.columns)
            job = ImportJob(importer, reader, rejects_path or default_rejects_path(file))
            with click.progressbar(length=max(job.size, 1), label="Importing responses",
                                   file=sys.stderr) as bar:
                report = job.run(batch_size, on_progress=bar.update)
        finally:
            reader.close()
    except ImportFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"survey {global_id('Survey', survey_id)}: imported: {report.imported}, "
               f"skipped (already there): {report.skipped}, rejected: {report.rejected}")
    if report.rejected:
        click.echo(f"rejected rows and why: {report.rejects_path}")


@surveys_group.command("report")
@click.argument("survey_id", type=ObjectId("Survey"))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the HTML page.")
@click.option("--city", multiple=True, help="Only customers in this city (repeatable).")
@click.option("--country", multiple=True, help="Only customers of this country (ISO code).")
@click.option("--tag", multiple=True, help="Only customers with this tag (repeat: all of them).")
@click.option("--after", help="Only responses submitted at or after (ISO 8601).")
@click.option("--before", help="Only responses submitted at or before (ISO 8601).")
@click.option("--rotation", type=click.Choice(["varimax", "oblimin", "promax"]),
              help="Factor rotation [default: varimax].")
@click.option("--factors", type=int, help="Number of factors [default: parallel analysis].")
@click.option("--clusters", type=int, help="Number of clusters [default: by silhouette].")
def report_command(survey_id: int, out: Path, city: tuple[str, ...], country: tuple[str, ...],
                   tag: tuple[str, ...], after: str | None, before: str | None,
                   rotation: str | None, factors: int | None, clusters: int | None) -> None:
    """Write the analysis report of SURVEY_ID (all responses, or a segment and/or period)
    as one self-contained HTML page with its charts."""
    options = {key: value for key, value in (("rotation", rotation), ("n_factors", factors),
                                             ("n_clusters", clusters)) if value is not None}
    period = {key: value for key, value in (("submitted_after", after),
                                            ("submitted_before", before)) if value}
    with click.progressbar(length=3, label="Survey report", file=sys.stderr) as bar:
        try:
            segment = analysis.segment_from_options(
                {"city": city, "country": country, "tags_all": tag})
            run = analysis.run_analysis(survey_id, segment=segment, period=period,
                                        options=options)
        except UserError as exc:
            raise click.ClickException("; ".join(
                f"{e.field}: {e.message}" if e.field else e.message for e in exc.errors)
            ) from None
        bar.update(2)
        page = analysis.report_html(run)
        bar.update(1)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"Cannot write {out}: {exc.strerror}") from None
    click.echo(f"{out}: survey {global_id('Survey', survey_id)}, "
               f"{run.analysis.n_responses:,} responses "
               f"(loaded in {run.seconds['load']:.2f} s, analysed in "
               f"{run.seconds['compute']:.2f} s)")
