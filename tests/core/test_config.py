from __future__ import annotations

import pytest

from core.config import ConfigError, load_settings


PRODUCTION_KEYS = {"RAPPORT_SECRET_KEY": "s3cret",
                   "RAPPORT_ENCRYPTION_KEYS": "kjQ8M5fB9hJt3nVYbq6f1cQ0m0pA3F0w7Xb0S1m2Y4E=",
                   "RAPPORT_BLIND_INDEX_KEY": "b" * 40}


def test_production_is_the_default_and_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RAPPORT_ENV", *PRODUCTION_KEYS):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="RAPPORT_SECRET_KEY is required in production"):
        load_settings()
    settings = load_settings(PRODUCTION_KEYS)
    assert settings.env == "production"
    assert settings.graphiql is False


@pytest.mark.parametrize("missing", ["RAPPORT_ENCRYPTION_KEYS", "RAPPORT_BLIND_INDEX_KEY"])
def test_production_needs_the_keys_of_personal_data(monkeypatch: pytest.MonkeyPatch,
                                                    missing: str) -> None:
    for key in ("RAPPORT_ENV", *PRODUCTION_KEYS):
        monkeypatch.delenv(key, raising=False)
    given = {k: v for k, v in PRODUCTION_KEYS.items() if k != missing}
    with pytest.raises(ConfigError, match=f"{missing} is required in production"):
        load_settings(given)


def test_development_leaves_the_secret_to_the_instance_folder_and_has_graphiql() -> None:
    settings = load_settings({"RAPPORT_ENV": "development"})
    assert settings.secret_key == ""  # core.crypto.secret_key: kept in the instance folder
    assert settings.graphiql is True


def test_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAPPORT_BASE_CURRENCY", "EUR")
    settings = load_settings({"RAPPORT_ENV": "test", "RAPPORT_BASE_CURRENCY": "gbp"})
    assert settings.base_currency == "GBP"


@pytest.mark.parametrize(("raw", "expected"), [
    (None, None), ("", ()), ("loyalty, churn", ("loyalty", "churn")), (["a"], ("a",)),
])
def test_plugin_list(raw: object, expected: object) -> None:
    overrides = {"RAPPORT_ENV": "test"}
    if raw is not None:
        overrides["RAPPORT_PLUGINS"] = raw  # type: ignore[assignment]
    assert load_settings(overrides).plugins == expected


@pytest.mark.parametrize(("key", "value", "message"), [
    ("RAPPORT_ENV", "staging", "use one of"),
    ("RAPPORT_TIMEZONE", "Mars/Olympus", "IANA"),
    ("RAPPORT_BASE_CURRENCY", "dollars", "ISO 4217"),
    ("RAPPORT_GRAPHQL_MAX_DEPTH", "deep", "integer"),
    ("RAPPORT_GRAPHQL_MAX_DEPTH", "0", "positive"),
    ("RAPPORT_GRAPHQL_INTROSPECTION", "yes", "on, off or scope"),
    ("RAPPORT_MAX_BODY_BYTES", "big", "integer"),
    ("RAPPORT_STATEMENT_TIMEOUT_MS", "soon", "milliseconds"),
    ("RAPPORT_JOB_STATEMENT_TIMEOUT_MS", "-5", "positive"),
])
def test_bad_settings_say_what_to_fix(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"RAPPORT_ENV": "test", key: value})
