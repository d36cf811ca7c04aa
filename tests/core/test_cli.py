"""The `rapport` command: plugins, API keys, schema, clear errors."""

from __future__ import annotations

import pytest
from flask import Flask

from core.cli import cli
from core.models import ApiKey
from tests.conftest import AppFactory


def test_plugins_lists_version_state_and_hooks(make_app: AppFactory) -> None:
    app = make_app(enabled=["referrals"])
    result = app.test_cli_runner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "api 0.1.0: enabled" in result.output
    assert "referrals 0.1.0: enabled" in result.output
    assert "rapport_graphql_customer_fields" in result.output
    disabled = make_app(enabled=[]).test_cli_runner().invoke(cli, ["plugins"])
    assert "referrals 0.1.0: disabled (not listed in RAPPORT_PLUGINS)" in disabled.output


def test_apikey_create_list_revoke(app: Flask) -> None:
    runner = app.test_cli_runner()
    created = runner.invoke(cli, ["apikey", "create", "--name", "shop",
                                  "--scopes", "customers:read, interactions:write"])
    assert created.exit_code == 0, created.output
    secret = created.output.strip().splitlines()[-1]
    assert secret.startswith("rpk_")
    key = ApiKey.query.one()
    assert key.scopes == ["customers:read", "interactions:write"]
    assert secret not in key.secret_hash
    listed = runner.invoke(cli, ["apikey", "list"])
    assert (f"{key.prefix}  service shop  [customers:read, interactions:write]  active"
            in listed.output)
    assert secret not in listed.output
    revoked = runner.invoke(cli, ["apikey", "revoke", key.prefix])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    response = app.test_client().post("/graphql", json={"query": "{ plugins { name } }"},
                                      headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401


def test_apikey_errors_are_messages_not_tracebacks(app: Flask) -> None:
    runner = app.test_cli_runner()
    bad = runner.invoke(cli, ["apikey", "create", "--name", "x", "--scopes", "customers:rw"])
    assert bad.exit_code == 1
    assert "Unknown scope(s) customers:rw" in bad.output and "Traceback" not in bad.output
    missing = runner.invoke(cli, ["apikey", "revoke", "deadbeef"])
    assert missing.exit_code == 1 and "No API key with prefix 'deadbeef'" in missing.output
    usage = runner.invoke(cli, ["apikey", "create", "--name", "x"])
    assert usage.exit_code == 2 and "--scopes" in usage.output
    assert ApiKey.query.count() == 0


def test_schema_prints_the_sdl_with_enabled_plugins(make_app: AppFactory) -> None:
    app = make_app(enabled=["referrals"])
    result = app.test_cli_runner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    assert "type Query {" in result.output
    assert "referrals: [Referral!]!" in result.output


def test_a_value_no_key_opens_is_an_error_message_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from core import cli as cli_module
    from core.crypto import DecryptionError

    def undecryptable(*args: object, **kwargs: object) -> None:
        raise DecryptionError("A stored personal value cannot be decrypted: put the old key "
                              "back after the new one.")

    monkeypatch.setattr(cli_module.cli, "main", undecryptable)
    with pytest.raises(SystemExit) as exited:
        cli_module.main(["audit", "export", "--out", "x.csv"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: A stored personal value cannot be decrypted")
    assert "Traceback" not in err
