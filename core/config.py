"""Settings from ``RAPPORT_*`` environment variables, with safe defaults.

``create_app(config)`` takes a mapping whose keys are the same names as the environment
variables (``{"RAPPORT_DATABASE_URL": ...}``); a key given there wins over the environment.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ENVIRONMENTS = ("production", "development", "test")


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    env: str = "production"
    database_url: str | None = None
    plugins: tuple[str, ...] | None = None  # None: every installed plugin
    trace_plugins: bool = False
    secret_key: str = ""
    timezone: str = "UTC"
    base_currency: str = "USD"
    cors_origins: tuple[str, ...] = ()
    graphiql: bool = False
    graphql_max_depth: int = 15
    graphql_max_complexity: int = 50_000
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_development(self) -> bool:
        return self.env == "development"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _csv(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(v.strip() for v in str(value).split(",") if v.strip())


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read settings from the environment, then apply ``overrides`` (same key names)."""
    source: dict[str, Any] = {k: v for k, v in os.environ.items() if k.startswith("RAPPORT_")}
    source.update(overrides or {})

    env = str(source.get("RAPPORT_ENV", "production")).strip().lower()
    if env not in ENVIRONMENTS:
        raise ConfigError(f"RAPPORT_ENV={env!r}: use one of {', '.join(ENVIRONMENTS)}")

    secret = str(source.get("RAPPORT_SECRET_KEY", "") or "")
    if not secret:
        if env == "production":
            raise ConfigError(
                "RAPPORT_SECRET_KEY is required in production; set it to a long random string "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))'), "
                "or set RAPPORT_ENV=development for a local server"
            )
        secret = secrets.token_urlsafe(32)

    timezone = str(source.get("RAPPORT_TIMEZONE", "UTC"))
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"RAPPORT_TIMEZONE={timezone!r} is not an IANA time zone name") from exc

    currency = str(source.get("RAPPORT_BASE_CURRENCY", "USD")).strip().upper()
    if len(currency) != 3 or not currency.isalpha():
        raise ConfigError(f"RAPPORT_BASE_CURRENCY={currency!r}: use an ISO 4217 code such as USD")

    plugins_raw = source.get("RAPPORT_PLUGINS")
    # Unset means every installed plugin; an empty value means none beyond the always-on API.
    plugins = None if plugins_raw is None else _csv(plugins_raw)

    def _int(name: str, default: int) -> int:
        raw = source.get(name, default)
        try:
            value = int(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}={raw!r} must be an integer") from exc
        if value <= 0:
            raise ConfigError(f"{name}={raw!r} must be positive")
        return value

    known = {
        "RAPPORT_ENV", "RAPPORT_SECRET_KEY", "RAPPORT_TIMEZONE", "RAPPORT_BASE_CURRENCY",
        "RAPPORT_PLUGINS", "RAPPORT_DATABASE_URL", "RAPPORT_TRACE_PLUGINS",
        "RAPPORT_CORS_ORIGINS", "RAPPORT_GRAPHIQL", "RAPPORT_GRAPHQL_MAX_DEPTH",
        "RAPPORT_GRAPHQL_MAX_COMPLEXITY",
    }
    return Settings(
        env=env,
        database_url=source.get("RAPPORT_DATABASE_URL") or None,
        plugins=plugins,
        trace_plugins=_flag(source.get("RAPPORT_TRACE_PLUGINS", False)),
        secret_key=secret,
        timezone=timezone,
        base_currency=currency,
        cors_origins=_csv(source.get("RAPPORT_CORS_ORIGINS", "")),
        graphiql=_flag(source.get("RAPPORT_GRAPHIQL", env == "development")),
        graphql_max_depth=_int("RAPPORT_GRAPHQL_MAX_DEPTH", 15),
        graphql_max_complexity=_int("RAPPORT_GRAPHQL_MAX_COMPLEXITY", 50_000),
        extra={k: v for k, v in source.items() if k not in known},
    )
