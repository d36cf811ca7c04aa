"""The data commands, ``rapport import`` and ``rapport demo``: loaded when they run
(``core/cli.py`` declares them with ``lazy_command``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import inspect

from core.cli import fail
from core.db import db
from core.demo import DEFAULT_CUSTOMERS, generate_demo
from core.errors import UserError
from core.importers import DEFAULT_BATCH_SIZE, Entity, FileFormat, default_rejects_path


@click.group("import", cls=AppGroup)
def import_group() -> None:
    """Import customers or interactions from CSV or JSON Lines files.

    A CSV header row (or each JSON object's keys) names the fields; unknown columns become
    customer attributes or interaction payload; an empty cell means no value. Rows are
    committed in batches; bad rows go to the rejects file with their line number and the
    reason; a re-run skips what is already stored (source + external_id).
    """


def _import_options(command: Callable[..., None]) -> Callable[..., None]:
    options = (
        click.argument("file", type=click.Path(dir_okay=False, path_type=Path)),
        click.option("--format", "file_format",
                     type=click.Choice([f.value for f in FileFormat]),
                     help="Default: from the extension (.csv, .jsonl, .ndjson)."),
        click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True,
                     type=click.IntRange(1, 10_000), help="Rows per transaction."),
        click.option("--rejects", "rejects_path",
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="Where to write rejected rows [default: FILE.rejects.csv]."),
        click.option("--encoding", default="utf-8", show_default=True,
                     help="Text encoding of FILE."),
    )
    for option in reversed(options):
        command = option(command)
    return command


def _require_schema() -> None:
    if not inspect(db.engine).has_table("interactions"):
        raise click.ClickException("The database has no Rapport tables yet: run "
                                   "'rapport db upgrade' first.")


def _run_import(entity: Entity, file: Path, file_format: str | None, batch_size: int,
                rejects_path: Path | None, encoding: str, declare: bool = False) -> None:
    """The job ``core.import_<entity>`` run here, with a progress bar."""
    from core.jobs import ConsoleProgress, run_here

    _require_schema()
    rejects = rejects_path or default_rejects_path(file)
    progress = ConsoleProgress(f"Importing {entity}", {f"{entity}.rejects.csv": rejects})
    parameters = {"path": str(file), "batchSize": batch_size, "encoding": encoding,
                  **({"format": file_format} if file_format else {}),
                  **({"declareAttributes": True} if declare else {})}
    try:
        report = run_here(f"core.import_{entity}", parameters, progress)
    except UserError as exc:
        raise click.ClickException("\n".join(e.message for e in exc.errors)) from None
    for declared in report.get("declaredAttributes", []):
        categories = declared.get("categories")
        click.echo(f"declared attribute {declared['key']}: {declared['type']}"
                   + (f" ({', '.join(categories)})" if categories else ""))
    click.echo(f"imported: {report['imported']}, skipped (already there): {report['skipped']}, "
               f"rejected: {report['rejected']}")
    if report["rejected"]:
        click.echo(f"rejected rows and why: {rejects}")
        if not report["imported"] and not report["skipped"]:
            # Nothing usable in the file: a script must not carry on as if it had worked.
            raise click.ClickException("every row was rejected; nothing was imported")


@import_group.command("customers")
@_import_options
@click.option("--declare-attributes", "declare", is_flag=True,
              help="First declare the undeclared attribute columns, with types inferred "
                   "from their values (number, boolean, date, category, text); each "
                   "declaration is reported.")
def import_customers_command(file: Path, file_format: str | None, batch_size: int,
                             rejects_path: Path | None, encoding: str, declare: bool) -> None:
    """Import customers from FILE.

    Columns: external_id (required), source (default: default), name, email, phone,
    birth_date, gender, education, occupation, income_band, country, region, city,
    tags (separated by ;), lifecycle_stage, owner_id, customer_since (the customer's own
    start date, 00:00 of that day in RAPPORT_TIMEZONE), tenure_periods (renewal periods
    completed) and period (month or year); any other column is an attribute. Exits with
    status 1 when every row was rejected.
    """
    _run_import("customers", file, file_format, batch_size, rejects_path, encoding, declare)


@import_group.command("interactions")
@_import_options
def import_interactions_command(file: Path, file_format: str | None, batch_size: int,
                                rejects_path: Path | None, encoding: str) -> None:
    """Import interactions from FILE for customers imported before.

    Columns: customer_external_id, external_id, kind, occurred_at (ISO 8601; without an
    offset it is UTC) are required; customer_source and source (default: default), amount,
    currency, channel, refers_to (external id of an earlier interaction of the same source);
    any other column goes into the payload.
    """
    _run_import("interactions", file, file_format, batch_size, rejects_path, encoding)


@click.command("demo")
@click.option("--customers", "count", default=DEFAULT_CUSTOMERS, show_default=True,
              type=click.IntRange(1, 1_000_000), help="How many customers to generate.")
@click.option("--seed", type=int, default=None,
              help="Reproduce an earlier demo (each run prints its seed).")
@with_appcontext
def demo_command(count: int, seed: int | None) -> None:
    """Fill the database with realistic demo customers, a year of their interactions, and
    every enabled plugin's demo rows."""
    _require_schema()
    try:
        with click.progressbar(length=count, label="Generating demo data",
                               file=sys.stderr) as bar:
            summary = generate_demo(count, seed, on_progress=bar.update)
    except UserError as exc:
        raise fail(exc) from None
    click.echo(f"demo data: {summary.customers} customers, {summary.interactions} "
               f"interactions, {summary.agents} agents, {len(summary.near_duplicates)} "
               f"customers registered twice (seed {summary.seed})")
