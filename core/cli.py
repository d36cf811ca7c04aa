"""The ``rapport`` command. Plugins add subcommands through ``rapport_cli_commands``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup
from werkzeug.serving import run_simple
from sqlalchemy import inspect, select

from core.app import create_app, rapport
from core.config import ConfigError
from core.db import db
from core.demo import DEFAULT_CUSTOMERS, generate_demo
from core.errors import UserError
from core.importers import (
    DEFAULT_BATCH_SIZE, Entity, FileFormat, ImportFileError, open_import,
)


def _make_app() -> Flask:
    try:
        return create_app()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def fail(exc: UserError) -> click.ClickException:
    """A service's UserError as a CLI error (exit code 1, no traceback)."""
    return click.ClickException("\n".join(
        f"{e.field}: {e.message}" if e.field else e.message for e in exc.errors))


@click.group(cls=FlaskGroup, create_app=_make_app, add_default_commands=False,
             add_version_option=False)
def cli() -> None:
    """Rapport: a headless CRM backend. Configure it with RAPPORT_* environment variables."""


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the API with the built-in server (use gunicorn 'core.wsgi:app' in production)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = rapport().settings
    if settings.is_development:
        logging.getLogger("rapport").warning(
            "DEVELOPMENT mode: requests from this machine (loopback) act as a local admin "
            "without an API key; GraphiQL at http://%s:%s/graphql. Never expose this server.",
            host, port)
    # Flask refuses app.run() under its CLI; serve the same way it would.
    run_simple(host, port, app, use_reloader=False, threaded=True)


@cli.group("db")
def db_group() -> None:
    """Database migrations (Alembic: a branch for core and one per plugin)."""


@db_group.command("upgrade")
@click.argument("target", default="heads")
def db_upgrade(target: str) -> None:
    """Upgrade the database to TARGET (default: the newest revision of every branch)."""
    from core.migrate import upgrade

    upgrade(current_app._get_current_object(), target)  # type: ignore[attr-defined]
    click.echo("database is up to date")


@db_group.command("revision")
@click.option("-m", "--message", required=True)
@click.option("--branch", default="core", show_default=True,
              help="The branch: core or a plugin's name.")
@click.option("--autogenerate/--empty", default=True, show_default=True)
@click.option("--version-dir", default=None, help="Where to write it (a plugin's migrations "
                                                  "directory for a new plugin branch).")
def db_revision(message: str, branch: str, autogenerate: bool, version_dir: str | None) -> None:
    """Write a new revision on a branch, from the difference between models and database."""
    from alembic.util import CommandError

    from core.migrate import revision

    try:
        revision(current_app._get_current_object(), message, branch, autogenerate,  # type: ignore
                 version_dir)
    except CommandError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("plugins")
def plugins_command() -> None:
    """List installed plugins: version, enabled or why not, hooks implemented."""
    for info in rapport().plugins:
        state = "enabled" if info.enabled else f"disabled ({info.reason})"
        click.echo(f"{info.name} {info.version}: {state}")
        if info.install_hint:
            click.echo(f"    install: {info.install_hint}")
        if info.hooks:
            click.echo(f"    hooks: {', '.join(info.hooks)}")


@cli.group("apikey")
def apikey_group() -> None:
    """API keys: the secret is shown once; only its digest is stored."""


def _scopes(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


@apikey_group.command("create")
@click.option("--name", required=True, help="Who uses the key (an app, a partner).")
@click.option("--scopes", required=True,
              help="Comma list, e.g. customers:read,interactions:write (admin: everything).")
def apikey_create(name: str, scopes: str) -> None:
    from core.auth import create_api_key

    try:
        key, secret = create_api_key(name, _scopes(scopes))
    except UserError as exc:
        raise fail(exc) from None
    click.echo(f"created key {key.prefix} for {key.name} with scopes {', '.join(key.scopes)}")
    click.echo("secret (shown once, store it now):")
    click.echo(secret)


@apikey_group.command("list")
def apikey_list() -> None:
    from core.models import ApiKey

    for key in db.session.scalars(select(ApiKey).order_by(ApiKey.id)):
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
        click.echo(f"{key.prefix}  {key.name}  [{', '.join(key.scopes)}]  {state}  "
                   f"last used {used}")


@apikey_group.command("revoke")
@click.argument("prefix")
def apikey_revoke(prefix: str) -> None:
    from core.auth import revoke_api_key

    try:
        key = revoke_api_key(prefix)
    except UserError as exc:
        raise fail(exc) from None
    click.echo(f"revoked {key.prefix} ({key.name})")


@cli.group("import")
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
                rejects_path: Path | None, encoding: str) -> None:
    _require_schema()
    try:
        with open_import(entity, file, file_format=file_format, encoding=encoding,
                         rejects_path=rejects_path) as job:
            with click.progressbar(length=max(job.size, 1), label=f"Importing {entity}",
                                   file=sys.stderr) as bar:
                report = job.run(batch_size, on_progress=bar.update)
    except ImportFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"imported: {report.imported}, skipped (already there): {report.skipped}, "
               f"rejected: {report.rejected}")
    if report.rejected:
        click.echo(f"rejected rows and why: {report.rejects_path}")


@import_group.command("customers")
@_import_options
def import_customers_command(file: Path, file_format: str | None, batch_size: int,
                             rejects_path: Path | None, encoding: str) -> None:
    """Import customers from FILE.

    Columns: external_id (required), source (default: default), name, email, phone,
    birth_date, gender, education, occupation, income_band, country, region, city,
    tags (separated by ;), lifecycle_stage, owner_id; any other column is an attribute.
    """
    _run_import("customers", file, file_format, batch_size, rejects_path, encoding)


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


@cli.command("demo")
@click.option("--customers", "count", default=DEFAULT_CUSTOMERS, show_default=True,
              type=click.IntRange(1, 1_000_000), help="How many customers to generate.")
@click.option("--seed", type=int, default=None,
              help="Reproduce an earlier demo (each run prints its seed).")
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


def main(argv: Any = None) -> None:
    cli.main(args=argv, prog_name="rapport")


if __name__ == "__main__":
    sys.exit(main())
