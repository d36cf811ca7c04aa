"""``rapport surveys import SURVEY_ID FILE``: responses from CSV (docs/surveys.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from core.importers import (
    DEFAULT_BATCH_SIZE, FileFormat, ImportFileError, ImportJob, RecordReader,
    default_rejects_path,
)

from plugins.surveys.importer import ResponseImporter, open_survey_import


@click.group("surveys")
def surveys_group() -> None:
    """Surveys: import responses."""


@surveys_group.command("import")
@click.argument("survey_id", type=click.IntRange(1))
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True,
              type=click.IntRange(1, 10_000), help="Rows per transaction.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write rejected rows [default: FILE.rejects.csv].")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of FILE.")
def import_command(survey_id: int, file: Path, batch_size: int, rejects_path: Path | None,
                   encoding: str) -> None:
    """Import survey responses from a CSV FILE: customer_external_id (+ customer_source;
    not for anonymous surveys), submitted_at, one column per question key (multiple
    choices separated by ';'). Bad rows go to the rejects file; a re-run skips what is
    already stored."""
    try:
        importer = ResponseImporter(open_survey_import(survey_id))
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
    click.echo(f"imported: {report.imported}, skipped (already there): {report.skipped}, "
               f"rejected: {report.rejected}")
    if report.rejected:
        click.echo(f"rejected rows and why: {report.rejects_path}")
