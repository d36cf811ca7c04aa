"""The ``rapport`` command. Plugins add subcommands through ``rapport_cli_commands``."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, ScriptInfo

from core.config import ConfigError
from core.lazy_cli import lazy_command

if TYPE_CHECKING:
    from core.errors import UserError

# `rapport --help` imports this module: what a command needs beyond click and Flask
# (SQLAlchemy, the models, the services) is imported inside it, and the commands of other
# modules are declared with `lazy_command` (tests/core/test_cli_start.py checks).


#: The service the CLI acts as unless given ``--as``.
CLI_SERVICE = "cli"


#: The checkout configuration: ``rapport db upgrade`` in development writes it in the
#: instance folder, so every later command run there finds the same mode (and whatever a
#: developer adds to it) without RAPPORT_ENV in the environment.
INSTANCE_CONFIG_FILE = "rapport.env"


def instance_path() -> str:
    """The instance folder, as ``create_app`` finds it: RAPPORT_INSTANCE_PATH, else
    Flask's default for the app (./instance from a checkout)."""
    return os.environ.get("RAPPORT_INSTANCE_PATH") or Flask("rapport").instance_path


def _checkout_instance() -> str | None:
    """The nearest ``instance`` folder holding ``rapport.env``, from the current folder
    upwards (as ``.env`` is found): a command run in a checkout's subfolder (``docs/``)
    uses the checkout's development settings, keys and database."""
    folder = os.path.abspath(os.getcwd())
    while True:
        candidate = os.path.join(folder, "instance")
        if os.path.isfile(os.path.join(candidate, INSTANCE_CONFIG_FILE)):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def load_instance_config() -> None:
    """Apply the instance folder's ``rapport.env`` under everything else: the environment,
    ``--env-file``, ``.env`` and ``.flaskenv`` win (Flask loaded those already)."""
    path = os.path.join(instance_path(), INSTANCE_CONFIG_FILE)
    if not os.path.isfile(path) and "RAPPORT_INSTANCE_PATH" not in os.environ:
        found = _checkout_instance()
        if found is None:
            return
        # The app must use that folder too (its keys, its SQLite database).
        os.environ["RAPPORT_INSTANCE_PATH"] = found
        path = os.path.join(found, INSTANCE_CONFIG_FILE)
    if not os.path.isfile(path):
        return
    from dotenv import dotenv_values

    for key, value in dotenv_values(path, encoding="utf-8").items():
        if value is not None and key not in os.environ:
            os.environ[key] = value


def write_development_config(app: Flask) -> str | None:
    """Mark the instance folder as a development checkout (once); the path if written."""
    path = os.path.join(app.instance_path, INSTANCE_CONFIG_FILE)
    os.makedirs(app.instance_path, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as out:
            out.write("# Written by 'rapport db upgrade' in development: every rapport command\n"
                      "# run from this checkout reads it (the environment, --env-file and .env\n"
                      "# win). Delete it to make production the default again.\n"
                      "RAPPORT_ENV=development\n")
    except FileExistsError:
        return None
    return path


def _make_app() -> Flask:
    from core.app import create_app

    load_instance_config()
    try:
        return create_app()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _listed_commands() -> dict[str, click.Command]:
    """The plugins' commands without building the app (no configuration or database
    needed): for ``rapport --help``."""
    from core.config import Settings, _csv
    from core.plugins import build_plugin_manager

    load_instance_config()
    raw = os.environ.get("RAPPORT_PLUGINS")
    hook = "rapport_cli_commands"  # plugins that cannot contribute one are not imported
    try:
        pm, _ = build_plugin_manager(Settings(plugins=None if raw is None else _csv(raw)),
                                     only_implementing=hook)
    except ConfigError:  # an unknown name in RAPPORT_PLUGINS: list what is installed
        pm, _ = build_plugin_manager(Settings(), only_implementing=hook)
    found: dict[str, click.Command] = {}
    for commands in pm.hook.rapport_cli_commands():
        for command in commands or []:
            if command.name:
                found.setdefault(command.name, command)
    return found


#: ``ctx.meta`` key of the commands ``list_commands`` found without the app (help only).
_LISTED = "rapport.listed_commands"


class RapportGroup(FlaskGroup):
    """Flask's group without third-party ``flask.commands`` (Flask-Limiter's ``limiter``
    is not Rapport's), and a help that lists the plugins' commands without building the
    app, so it needs no configuration."""

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = click.Group.get_command(self, ctx, name)
        if command is None and name in ctx.meta.get(_LISTED, {}):
            return ctx.meta[_LISTED][name]  # the help only shows it
        if command is not None:
            return command
        app = ctx.ensure_object(ScriptInfo).load_app()
        if not current_app or current_app._get_current_object() is not app:  # type: ignore
            ctx.with_resource(app.app_context())
        return app.cli.get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(click.Group.list_commands(self, ctx))
        info = ctx.ensure_object(ScriptInfo)
        if info.create_app is not _make_app:  # an app given by the caller (tests, embedding)
            names.update(info.load_app().cli.list_commands(ctx))
        else:
            ctx.meta[_LISTED] = _listed_commands()
            names.update(ctx.meta[_LISTED])
        return sorted(names)


def fail(exc: UserError) -> click.ClickException:
    """A service's UserError as a CLI error (exit code 1, no traceback)."""
    return click.ClickException("\n".join(
        f"{e.field}: {e.message}" if e.field else e.message for e in exc.errors))


@click.group(cls=RapportGroup, create_app=_make_app, add_default_commands=False,
             add_version_option=False)
@click.option("--as", "as_agent", metavar="AGENT_EMAIL", default=None,
              help="Act as this staff member: the audit log records the agent instead of "
                   "the service 'cli'.")
@click.pass_context
def cli(ctx: click.Context, as_agent: str | None) -> None:
    """Rapport: a headless CRM backend. Configure it with RAPPORT_* environment variables
    (or .env, --env-file; a checkout where 'make run' ran keeps development settings in
    instance/rapport.env)."""
    from core import context
    from core.context import Actor

    actor = Actor(service=CLI_SERVICE, via="cli")
    if as_agent is not None and ctx.invoked_subcommand is not None:
        actor = Actor(agent_id=_agent_for_cli(ctx, as_agent), via="cli")
    operation = f"cli.{ctx.invoked_subcommand}" if ctx.invoked_subcommand else None
    ctx.with_resource(context.use(actor=actor, operation=operation))


def _agent_for_cli(ctx: click.Context, email: str) -> int:
    from sqlalchemy import select

    from core.db import db
    from core.models import Agent

    app = ctx.ensure_object(ScriptInfo).load_app()
    with app.app_context():
        row = db.session.execute(select(Agent.id, Agent.active).where(
            Agent.email == email.strip().lower())).first()
    if row is None:
        raise click.BadParameter(f"no agent with e-mail {email!r}", param_hint="--as")
    if not row.active:
        raise click.BadParameter(f"the agent {email!r} is deactivated", param_hint="--as")
    return int(row.id)


@cli.command("serve")
@click.option("--host", default=None,
              help="Interface to listen on [default: 127.0.0.1; with --production "
                   "RAPPORT_BIND, else 0.0.0.0 when PORT is set, else 127.0.0.1].")
@click.option("--port", default=None, type=click.IntRange(1, 65535),
              help="[default: 5000; with --production PORT or 8000]")
@click.option("--production", is_flag=True,
              help="Run gunicorn with core/gunicorn_conf.py: preforked workers, JSON logs, "
                   "metrics added up across workers (needs the 'server' extra).")
@click.option("--workers", default=None, type=click.IntRange(1, 64),
              help="With --production: worker processes [default: RAPPORT_WORKERS or "
                   "WEB_CONCURRENCY, else 2 x cores + 1, at most 8].")
def serve(host: str | None, port: int | None, production: bool, workers: int | None) -> None:
    """Serve the API: the built-in server, or gunicorn with --production."""
    if production:
        _exec_gunicorn(host, port, workers)
    if workers is not None:
        raise click.UsageError("--workers needs --production (the built-in server is one "
                               "process).")
    from werkzeug.serving import run_simple

    from core.app import rapport
    from core.logs import configure_logging

    host, port = host or "127.0.0.1", port or 5000
    settings = rapport().settings
    configure_logging({**settings.extra, "RAPPORT_ENV": settings.env})
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if settings.is_development:
        logging.getLogger("rapport").warning(
            "DEVELOPMENT mode: requests from this machine (loopback) act as a local admin "
            "without an API key; GraphiQL at http://%s:%s/graphql. Never expose this server.",
            host, port)
    # Flask refuses app.run() under its CLI; serve the same way it would.
    run_simple(host, port, app, use_reloader=False, threaded=True)


def _exec_gunicorn(host: str | None, port: int | None, workers: int | None) -> NoReturn:
    """Replace this process with gunicorn (the app was built once here: a configuration
    error is reported as a message before anything starts)."""
    if importlib.util.find_spec("gunicorn") is None:
        raise click.ClickException("gunicorn is not installed: pip install "
                                   "\"rapport-crm[server]\"")
    args = [sys.executable, "-m", "gunicorn", "--config", "python:core.gunicorn_conf"]
    if host is not None or port is not None:
        address = host or "127.0.0.1"
        address = f"[{address}]" if ":" in address else address
        args += ["--bind", f"{address}:{port or 8000}"]
    env = dict(os.environ)
    if workers is not None:
        env["RAPPORT_WORKERS"] = str(workers)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, env)


@cli.group("db")
def db_group() -> None:
    """Database migrations (Alembic: a branch for core and one per plugin)."""


@db_group.command("upgrade")
@click.argument("target", default="heads")
def db_upgrade(target: str) -> None:
    """Upgrade the database to TARGET (default: the newest revision of every branch)."""
    from sqlalchemy import inspect

    from core.app import rapport
    from core.db import db
    from core.keys import progress_bar
    from core.migrate import current_heads, upgrade

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    before, tables_before = current_heads(app), set(inspect(db.engine).get_table_names())
    upgrade(app, target, progress=progress_bar)
    after = current_heads(app)
    created = sorted(set(inspect(db.engine).get_table_names()) - tables_before)
    if after == before:
        click.echo(f"database already up to date ({', '.join(sorted(after)) or 'empty'})")
    else:
        done = "created at" if not before else f"upgraded from {', '.join(sorted(before))} to"
        click.echo(f"database {done} {', '.join(sorted(after))}"
                   + (f": {len(created)} new tables" if created else ""))
    if rapport().settings.is_development:
        written = write_development_config(app)
        if written:
            click.echo(f"wrote {written}: rapport commands run from here use development "
                       f"mode without RAPPORT_ENV (delete the file to undo)")


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
    from core.app import rapport

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
@click.option("--service", "--name", "service", default=None, metavar="NAME",
              help="A key for this service (an app, a partner); --name is its old spelling.")
@click.option("--agent", "agent_email", default=None, metavar="EMAIL",
              help="A key for this staff member: it never does more than the agent's role.")
@click.option("--scopes", required=True,
              help="Comma list, e.g. customers:read,interactions:write (admin: everything).")
@click.option("--rate-limit", default=None, metavar="LIMIT",
              help="Its own budget, e.g. 1000/minute or 10/second;1000/minute; 'unlimited' "
                   "exempts it (benchmarks) [default: RAPPORT_RATE_LIMIT].")
def apikey_create(service: str | None, agent_email: str | None, scopes: str,
                  rate_limit: str | None) -> None:
    """Create a key for a service (--service NAME) or an agent (--agent EMAIL)."""
    from core.auth import create_api_key
    from core.errors import UserError

    if (service is None) == (agent_email is None):
        raise click.UsageError("Give exactly one of --service NAME and --agent EMAIL.")
    try:
        if agent_email is not None:
            key, secret = create_api_key(agent_email, _scopes(scopes), agent_email=agent_email,
                                         rate_limit=rate_limit)
        else:
            key, secret = create_api_key(service or "", _scopes(scopes), service=service,
                                         rate_limit=rate_limit)
    except UserError as exc:
        raise fail(exc) from None
    owner = f"agent {agent_email}" if agent_email else f"service {key.service}"
    click.echo(f"created key {key.prefix} for {owner} with scopes {', '.join(key.scopes)}")
    click.echo("secret (shown once, store it now):")
    click.echo(secret)


@apikey_group.command("list")
def apikey_list() -> None:
    from sqlalchemy import select

    from core.db import db
    from core.models import ApiKey

    for key in db.session.scalars(select(ApiKey).order_by(ApiKey.id)):
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
        owner = f"service {key.service}" if key.service else f"agent {key.name}"
        limit = f"rate limit {key.rate_limit or 'default'}"
        click.echo(f"{key.prefix}  {owner}  [{', '.join(key.scopes)}]  {state}  "
                   f"last used {used}  {limit}")


@apikey_group.command("limit")
@click.argument("prefix")
@click.argument("rate_limit", metavar="LIMIT")
def apikey_limit(prefix: str, rate_limit: str) -> None:
    """Give a key its own rate limit (1000/minute, 'unlimited'), or 'default' to go back to
    RAPPORT_RATE_LIMIT."""
    from core.errors import UserError
    from core.ratelimit import set_key_rate_limit

    try:
        key = set_key_rate_limit(prefix, None if rate_limit.strip() == "default" else rate_limit)
    except UserError as exc:
        raise fail(exc) from None
    click.echo(f"rate limit of {key.prefix}: {key.rate_limit or 'default'}")


@apikey_group.command("revoke")
@click.argument("prefix")
def apikey_revoke(prefix: str) -> None:
    from core.auth import revoke_api_key
    from core.errors import UserError

    try:
        key = revoke_api_key(prefix)
    except UserError as exc:
        raise fail(exc) from None
    click.echo(f"revoked {key.prefix} ({key.name})")


for _command in (
    lazy_command("import", "core.cli_data:import_group",
                 "Import customers or interactions from CSV or JSON Lines files."),
    lazy_command("demo", "core.cli_data:demo_command",
                 "Fill the database with realistic demo customers, a year of their "
                 "interactions, and every enabled plugin's demo rows."),
    lazy_command("keys", "core.keys:keys_group",
                 "Keys of personal data at rest: generate, rotate."),
    lazy_command("audit", "core.audit:audit_group",
                 "The audit log: who changed what, when, through which credentials."),
    lazy_command("customers", "core.cli_customers:customers_group",
                 "Customers in bulk: give an owner's customers to another agent or a team."),
):
    cli.add_command(_command)


def main(argv: Any = None) -> None:
    try:
        cli.main(args=argv, prog_name="rapport")
    except Exception as exc:
        # A key problem, not a bug: say what to do instead of printing a traceback. (Only
        # code that imported core.crypto can raise its DecryptionError.)
        crypto = sys.modules.get("core.crypto")
        if crypto is None or not isinstance(exc, crypto.DecryptionError):
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
