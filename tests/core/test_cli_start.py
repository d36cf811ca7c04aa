"""Lean processes: `rapport --help` lists every command without importing the models, the
GraphQL types or the statistics stack; an app with every plugin serves requests that do no
statistics without numpy, scipy, scikit-learn, matplotlib or pandas (issue #13, #15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from core.cli import cli
from core.lazy_cli import LazyCommand, lazy_command
from tests.conftest import AppFactory

ROOT = Path(__file__).resolve().parents[2]
STATISTICS = ("numpy", "scipy", "sklearn", "matplotlib", "pandas")
#: What `rapport --help` needs none of: the database layer, the models, GraphQL, the
#: services behind the commands.
NOT_FOR_HELP = (*STATISTICS, "sqlalchemy", "flask_sqlalchemy", "graphene", "graphql",
                "marshmallow", "core.models", "core.app", "api.types", "plugins.loyalty.cli",
                "plugins.churn.service", "rapport_referrals")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPPORT_", "FLASK_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _every_command(make_app: AppFactory) -> dict[str, click.Command]:
    """Core's commands and those of every installed plugin, from a built app."""
    app = make_app(enabled=None, RAPPORT_PLUGINS=None)
    ctx = click.Context(cli)
    commands = {name: cli.commands[name] for name in cli.commands}
    commands.update({name: app.cli.get_command(ctx, name)  # type: ignore[misc]
                     for name in app.cli.list_commands(ctx)})
    return commands


@pytest.mark.sqlite_only
def test_help_lists_every_command_and_imports_nothing_heavy(make_app: AppFactory,
                                                            tmp_path: Path) -> None:
    expected = _every_command(make_app)
    assert {"serve", "db", "import", "demo", "keys", "audit", "schema", "worker", "outbox",
            "loyalty", "complaints", "surveys", "churn"} <= set(expected)
    probe = ("import atexit, json, sys\n"
             f"atexit.register(lambda: print('LOADED', json.dumps([m for m in {NOT_FOR_HELP!r}"
             " if m in sys.modules]), file=sys.stderr))\n"
             "from core.cli import main\n"
             "main(['--help'])\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=_clean_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    listed = {}
    for line in result.stdout.split("Commands:", 1)[1].splitlines():
        if line.strip():
            name, _, short = line.strip().partition(" ")
            listed[name] = short.strip()
    assert set(listed) == set(expected)
    for name, short in listed.items():  # each with its own one-line help
        assert short and short[:20] == expected[name].get_short_help_str(200)[:20], name
    loaded = json.loads(result.stderr.rsplit("LOADED", 1)[1])
    assert loaded == []


def test_a_declared_help_is_the_real_commands_help(make_app: AppFactory) -> None:
    """Each lazily loaded command shows, in `rapport --help`, what the real one would."""
    lazy = {name: c for name, c in _every_command(make_app).items()
            if isinstance(c, LazyCommand)}
    assert {"import", "demo", "keys", "audit", "worker", "scheduler", "outbox", "loyalty",
            "complaints", "surveys", "churn"} <= set(lazy)
    for name, command in lazy.items():
        real = command.load()
        assert real.name == name, command.target
        assert real.hidden == command.hidden
        for limit in (30, 45, 60, 200):
            assert command.get_short_help_str(limit) == real.get_short_help_str(limit), (
                name, limit)


def test_a_lazy_command_imports_its_module_only_when_it_runs(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = tmp_path / "lazy_cli_target_h1.py"
    module.write_text("import click\n\n"
                      "@click.group('things')\n"
                      "def group():\n    'Things: count them.'\n\n"
                      "@group.command('count')\n@click.option('--n', type=int, default=2)\n"
                      "def count(n):\n    'Count to N.'\n    click.echo(f'counted {n}')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazy_cli_target_h1", raising=False)

    @click.group()
    def top() -> None:
        """Top."""

    top.add_command(lazy_command("things", "lazy_cli_target_h1:group", "Things: count them."))
    runner = CliRunner()
    shown = runner.invoke(top, ["--help"])
    assert shown.exit_code == 0 and "things  Things: count them." in shown.output
    assert "lazy_cli_target_h1" not in sys.modules
    ran = runner.invoke(top, ["things", "count", "--n", "5"])
    assert ran.exit_code == 0, ran.output
    assert ran.output == "counted 5\n"
    assert "lazy_cli_target_h1" in sys.modules
    sub_help = runner.invoke(top, ["things", "--help"])
    assert "count  Count to N." in sub_help.output
    bad = runner.invoke(top, ["things", "count", "--n", "x"])
    assert bad.exit_code == 2 and "'x' is not a valid integer" in bad.output
    with pytest.raises(ValueError):
        lazy_command("broken", "no_attribute_given", "Broken.")


def test_help_does_not_import_a_plugin_that_adds_no_command() -> None:
    """The example partner plugin implements no `rapport_cli_commands`: found by its entry
    point's source, it is not imported for the help."""
    from core.config import Settings
    from core.plugins import build_plugin_manager

    pm, infos = build_plugin_manager(Settings(), only_implementing="rapport_cli_commands")
    skipped = {i.name: i.reason for i in infos if not i.enabled}
    assert "referrals" in skipped and "webhooks" in skipped
    assert pm.get_plugin("referrals") is None
    assert {"api", "loyalty", "complaints", "surveys", "churn"} <= {
        name for name, _ in pm.list_name_plugin()}


@pytest.mark.sqlite_only
def test_an_app_with_every_plugin_serves_requests_without_the_statistics_stack(
        tmp_path: Path) -> None:
    """As a gunicorn worker does: build the app with every plugin, answer GraphQL reads and
    writes that do no statistics (loyalty earning and churn reactivation run on the
    purchase); numpy, scipy, scikit-learn, matplotlib and pandas stay out."""
    probe = f"""
import json, sys
from sqlalchemy import Engine, event
from core import create_app, db
from core.auth import create_api_key
from core.db import tables_for_plugins

# A throw-away database: no fsync at each commit and CREATE (as in tests/conftest.py).
event.listen(Engine, "connect", lambda conn, record: conn.execute("PRAGMA synchronous=OFF"))
app = create_app({{"RAPPORT_ENV": "test", "RAPPORT_DATABASE_URL": "sqlite:///{tmp_path}/w.db",
                   "RAPPORT_INSTANCE_PATH": {str(tmp_path)!r}}})
with app.app_context():
    state = app.extensions["rapport"]
    db.metadata.create_all(db.engine, tables=tables_for_plugins(state.enabled_plugins))
    _, secret = create_api_key("probe", ["admin"])
client = app.test_client()

def gql(query, variables=None):
    response = client.post("/graphql", json={{"query": query, "variables": variables}},
                           headers={{"Authorization": "Bearer " + secret}})
    body = response.get_json()
    assert response.status_code == 200 and "errors" not in body, body
    return body["data"]

customer = gql('mutation {{ createCustomer(input: {{name: "Ada"}}) {{ customer {{ id }} }} }}'
               )["createCustomer"]["customer"]["id"]
gql('''mutation($c: ID!) {{ recordInteraction(input: {{customerId: $c, kind: "purchase",
    occurredAt: "2026-11-01T10:00:00Z", amount: "40.00", currency: "USD"}}) {{
    interaction {{ id }} errors {{ message }} }} }}''', {{"c": customer}})
gql('''{{ customers(first: 5) {{ edges {{ node {{ id name loyalty {{ balance }}
    complaints(first: 5) {{ totalCount }} churnRecords {{ id }} }} }} }}
    plugins {{ name enabled }} loyaltyProgram {{ __typename }}
    surveys(first: 5) {{ totalCount }} complaints(first: 5) {{ totalCount }}
    webhooks(first: 5) {{ totalCount }} winbackCampaigns(first: 5) {{ totalCount }} }}''')
enabled = sorted(p.name for p in state.plugins if p.enabled)
print("RESULT", json.dumps({{"enabled": enabled,
                            "loaded": [m for m in {STATISTICS!r} if m in sys.modules]}}))
"""
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=_clean_env(),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.rsplit("RESULT", 1)[1])
    assert {"api", "churn", "complaints", "loyalty", "surveys", "webhooks"} <= set(
        report["enabled"])
    assert report["loaded"] == []
