"""Settings from ``RAPPORT_*`` environment variables, with safe defaults.

``create_app(config)`` takes a mapping whose keys are the same names as the environment
variables (``{"RAPPORT_DATABASE_URL": ...}``); a key given there wins over the environment.
"""

from __future__ import annotations

import os
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
    secret_key: str = ""  # empty outside production: the instance folder's key
    encryption_keys: tuple[str, ...] = ()  # newest first; empty: the instance folder's key
    blind_index_key: str = ""  # empty: the instance folder's key
    timezone: str = "UTC"
    base_currency: str = "USD"
    cors_origins: tuple[str, ...] = ()
    graphiql: bool = False
    graphql_max_depth: int = 15
    graphql_max_complexity: int = 50_000
    graphql_introspection: str = "off"  # on | off | scope (keys with schema:read)
    max_body_bytes: int = 1_048_576
    statement_timeout_ms: int | None = 10_000  # web requests; None: no limit
    job_statement_timeout_ms: int | None = None  # workers and the CLI
    rate_limit: str = "600/minute"  # per API key; a key's own rate_limit wins
    rate_limit_storage: str = "memory://"
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


def _rate_limit(value: Any) -> str:
    text = str(value).strip()
    if text.lower() == "unlimited":
        return "unlimited"
    from limits import parse_many  # here: `rapport --help` reads no rate limit

    try:
        parse_many(text)
    except ValueError as exc:
        raise ConfigError(f"RAPPORT_RATE_LIMIT={text!r}: use e.g. '600/minute' or "
                          f"'10/second;600/minute'") from exc
    return text


def _introspection(value: Any, env: str) -> str:
    """Unset: on in development and test (GraphiQL, schema tooling), off in production."""
    if value is None or str(value).strip() == "":
        return "off" if env == "production" else "on"
    mode = str(value).strip().lower()
    if mode not in ("on", "off", "scope"):
        raise ConfigError(f"RAPPORT_GRAPHQL_INTROSPECTION={value!r}: use on, off or scope "
                          f"(only keys with the schema:read scope)")
    return mode


def _milliseconds(source: Mapping[str, Any], name: str, default: int | None) -> int | None:
    """A time limit in milliseconds; empty, 0 or ``none`` means no limit."""
    raw = source.get(name, default)
    if raw is None or str(raw).strip().lower() in ("", "0", "none"):
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={raw!r} must be a number of milliseconds (0: none)") from exc
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must be positive (0: none)")
    return value


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
        # Outside production the app takes the instance folder's key (core.crypto), so
        # every process of a checkout signs alike (a model fitted by one is scored by
        # the next).

    encryption_keys = _csv(source.get("RAPPORT_ENCRYPTION_KEYS", ""))
    blind_index_key = str(source.get("RAPPORT_BLIND_INDEX_KEY", "") or "").strip()
    if env == "production" and not encryption_keys:
        raise ConfigError(
            "RAPPORT_ENCRYPTION_KEYS is required in production: a comma list of Fernet keys "
            "for personal data at rest, newest first (make one with 'rapport keys generate'), "
            "or set RAPPORT_ENV=development for a local server")
    if env == "production" and not blind_index_key:
        raise ConfigError(
            "RAPPORT_BLIND_INDEX_KEY is required in production: a random string of at least "
            "32 characters for e-mail and phone look-ups (make one with 'rapport keys "
            "generate --blind-index'); never change it once data is stored")

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
        "RAPPORT_GRAPHQL_MAX_COMPLEXITY", "RAPPORT_ENCRYPTION_KEYS", "RAPPORT_BLIND_INDEX_KEY",
        "RAPPORT_RATE_LIMIT", "RAPPORT_RATE_LIMIT_STORAGE",
        "RAPPORT_GRAPHQL_INTROSPECTION", "RAPPORT_MAX_BODY_BYTES",
        "RAPPORT_STATEMENT_TIMEOUT_MS", "RAPPORT_JOB_STATEMENT_TIMEOUT_MS",
    }
    return Settings(
        env=env,
        database_url=source.get("RAPPORT_DATABASE_URL") or None,
        plugins=plugins,
        trace_plugins=_flag(source.get("RAPPORT_TRACE_PLUGINS", False)),
        secret_key=secret,
        encryption_keys=encryption_keys,
        blind_index_key=blind_index_key,
        timezone=timezone,
        base_currency=currency,
        cors_origins=_csv(source.get("RAPPORT_CORS_ORIGINS", "")),
        graphiql=_flag(source.get("RAPPORT_GRAPHIQL", env == "development")),
        graphql_max_depth=_int("RAPPORT_GRAPHQL_MAX_DEPTH", 15),
        graphql_max_complexity=_int("RAPPORT_GRAPHQL_MAX_COMPLEXITY", 50_000),
        graphql_introspection=_introspection(source.get("RAPPORT_GRAPHQL_INTROSPECTION"), env),
        max_body_bytes=_int("RAPPORT_MAX_BODY_BYTES", 1_048_576),
        statement_timeout_ms=_milliseconds(source, "RAPPORT_STATEMENT_TIMEOUT_MS", 10_000),
        job_statement_timeout_ms=_milliseconds(source, "RAPPORT_JOB_STATEMENT_TIMEOUT_MS",
                                               None),
        rate_limit=_rate_limit(source.get("RAPPORT_RATE_LIMIT", "600/minute")),
        rate_limit_storage=str(source.get("RAPPORT_RATE_LIMIT_STORAGE") or "memory://").strip(),
        extra={k: v for k, v in source.items() if k not in known},
    )
