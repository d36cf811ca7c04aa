"""A checkout where `make run` ran just works: one secret per instance folder, the
development marker, .env files, and a `rapport --help` that needs no configuration and
imports no statistics library (issue 13, item 3)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from core import create_app
from core.app import rapport
from core.cli import INSTANCE_CONFIG_FILE, cli

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "scipy", "sklearn", "matplotlib")


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh folder as the working directory, with no RAPPORT_* or FLASK_* settings;
    the environment as it was comes back after the test (the CLI writes what it loads
    from .env and instance/rapport.env into os.environ)."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith(("RAPPORT_", "FLASK_")):
            del os.environ[key]
    monkeypatch.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.sqlite_only
def test_every_app_of_an_instance_folder_signs_with_the_same_secret(tmp_path: Path) -> None:
    config = {"RAPPORT_ENV": "development", "RAPPORT_PLUGINS": [],
              "RAPPORT_DATABASE_URL": "sqlite://", "RAPPORT_INSTANCE_PATH": str(tmp_path)}
    first, second = create_app(config), create_app(config)
    secret = rapport(first).settings.secret_key
    assert len(secret) >= 32
    assert rapport(second).settings.secret_key == secret == second.config["SECRET_KEY"]
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    other = create_app({**config, "RAPPORT_INSTANCE_PATH": str(tmp_path / "other")})
    assert rapport(other).settings.secret_key != secret
    given = create_app({**config, "RAPPORT_SECRET_KEY": "x" * 40})
    assert rapport(given).settings.secret_key == "x" * 40


@pytest.mark.sqlite_only
def test_db_upgrade_in_development_marks_the_checkout(checkout: Path) -> None:
    runner = CliRunner()
    production = runner.invoke(cli, ["plugins"], env={"RAPPORT_PLUGINS": ""})
    assert production.exit_code == 1
    assert "RAPPORT_SECRET_KEY is required in production" in production.output
    assert "Traceback" not in production.output

    os.environ.update(RAPPORT_ENV="development", RAPPORT_PLUGINS="")
    created = runner.invoke(cli, ["db", "upgrade"])
    assert created.exit_code == 0, created.output
    assert "database created at core_" in created.output
    assert "up to date" not in created.output
    marker = checkout / "instance" / INSTANCE_CONFIG_FILE
    assert "RAPPORT_ENV=development" in marker.read_text()

    del os.environ["RAPPORT_ENV"]
    again = runner.invoke(cli, ["db", "upgrade"])
    assert again.exit_code == 0, again.output
    assert "database already up to date" in again.output
    assert os.environ["RAPPORT_ENV"] == "development"  # from the instance folder
    os.environ["RAPPORT_ENV"] = "test"  # the environment wins over the marker
    listed = runner.invoke(cli, ["plugins"])
    assert listed.exit_code == 0, listed.output
    assert os.environ["RAPPORT_ENV"] == "test"

    # From a subfolder of the checkout (docs/), the checkout's instance folder is found
    # upwards, as .env is: same mode, same keys and database.
    del os.environ["RAPPORT_ENV"]
    (checkout / "docs").mkdir()
    os.chdir(checkout / "docs")
    below = runner.invoke(cli, ["db", "upgrade"])
    assert below.exit_code == 0, below.output
    assert "database already up to date" in below.output
    assert os.environ["RAPPORT_INSTANCE_PATH"] == str(checkout / "instance")
    assert not (checkout / "docs" / "instance").exists()


@pytest.mark.sqlite_only
def test_dot_env_and_env_file_configure_the_cli(checkout: Path) -> None:
    (checkout / ".env").write_text("RAPPORT_ENV=development\nRAPPORT_PLUGINS=\n")
    runner = CliRunner()
    from_dot_env = runner.invoke(cli, ["plugins"])
    assert from_dot_env.exit_code == 0, from_dot_env.output
    assert "loyalty 0.1.0: disabled (not listed in RAPPORT_PLUGINS)" in from_dot_env.output

    (checkout / ".env").unlink()
    for key in ("RAPPORT_ENV", "RAPPORT_PLUGINS"):
        os.environ.pop(key, None)
    env_file = checkout / "elsewhere.env"
    env_file.write_text("RAPPORT_ENV=development\nRAPPORT_PLUGINS=loyalty\n")
    from_file = runner.invoke(cli, ["--env-file", str(env_file), "plugins"])
    assert from_file.exit_code == 0, from_file.output
    assert "loyalty 0.1.0: enabled" in from_file.output


@pytest.mark.sqlite_only
def test_help_lists_every_command_without_configuration_or_statistics(tmp_path: Path) -> None:
    """In a subprocess: a clean interpreter shows what `rapport --help` imports."""
    probe = ("import atexit, sys\n"
             f"atexit.register(lambda: print('LOADED', [m for m in {HEAVY!r} "
             "if m in sys.modules], file=sys.stderr))\n"
             "from core.cli import main\n"
             "main(['--help'])\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPPORT_", "FLASK_"))}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    commands = result.stdout.split("Commands:", 1)[1]
    names = {line.split()[0] for line in commands.splitlines() if line.strip()}
    assert {"serve", "db", "import", "keys", "audit", "schema", "worker", "churn",
            "loyalty", "complaints", "surveys"} <= names
    assert "limiter" not in names
    assert "LOADED []" in result.stderr


class _EntryPointOfAnExtra:
    """A plugin whose module imports fine (its heavy dependencies load on first use) but
    whose extra names a distribution that is not installed."""

    name = "gauges"
    value = "core.lazy"
    group = "rapport.plugins"
    extras = ["gauges"]
    dist = SimpleNamespace(name="rapport-crm", version="0.1.0", requires=[
        "flask==3.1.3", 'numpy==2.4.6; extra == "gauges"',
        'no-such-distribution-h9>=1; extra == "gauges"', 'absent-elsewhere; extra == "x"'])

    def load(self) -> Any:
        import core.lazy

        return core.lazy


def test_a_plugin_whose_extra_is_not_installed_is_unavailable() -> None:
    from core import plugins

    loaded, reason, hint = plugins._load(_EntryPointOfAnExtra())  # type: ignore[arg-type]
    assert loaded is None
    assert reason == "missing dependency 'no-such-distribution-h9'"
    assert hint == 'pip install "rapport-crm[gauges]"'


@pytest.mark.sqlite_only
def test_the_app_starts_without_the_statistics_stack(tmp_path: Path) -> None:
    """Building the app with every plugin and its GraphQL schema loads none of it: churn
    and surveys import it when a statistical operation runs."""
    probe = ("import sys\n"
             "from core import create_app\n"
             "from api.schema import build_schema\n"
             "app = create_app({'RAPPORT_ENV': 'test', 'RAPPORT_DATABASE_URL': 'sqlite://',"
             f" 'RAPPORT_INSTANCE_PATH': {str(tmp_path)!r}}})\n"
             "with app.app_context():\n"
             "    build_schema(app.extensions['rapport'].pm)\n"
             f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPPORT_", "FLASK_"))}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout
