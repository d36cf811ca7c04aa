from __future__ import annotations

import pytest

from core.config import ConfigError, load_settings


def test_production_is_the_default_and_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RAPPORT_ENV", "RAPPORT_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="RAPPORT_SECRET_KEY is required in production"):
        load_settings()
    settings = load_settings({"RAPPORT_SECRET_KEY": "s3cret"})
    assert settings.env == "production"
    assert settings.graphiql is False


def test_development_gets_a_random_secret_and_graphiql() -> None:
    settings = load_settings({"RAPPORT_ENV": "development"})
    assert len(settings.secret_key) >= 32
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
])
def test_bad_settings_say_what_to_fix(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"RAPPORT_ENV": "test", key: value})
