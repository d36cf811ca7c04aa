"""The plugin's settings (docs/webhooks.md lists them with their defaults).

| variable | meaning | default |
|---|---|---|
| ``RAPPORT_WEBHOOK_ALLOWED_HOSTS`` | hosts a webhook may target even if they resolve to a private or loopback address | none |
| ``RAPPORT_WEBHOOK_TIMEOUT_SECONDS`` | time limit of one HTTP attempt (connect + answer) | ``5`` |
| ``RAPPORT_WEBHOOK_MAX_ATTEMPTS`` | attempts before a delivery is dead-lettered | ``12`` |
| ``RAPPORT_WEBHOOK_RETRY_BASE_SECONDS`` | first retry delay; each retry doubles it (with jitter), capped at 6 hours | ``10`` |
| ``RAPPORT_WEBHOOK_DISABLE_AFTER_FAILURES`` | consecutive failed attempts that disable an endpoint | ``50`` |
| ``RAPPORT_WEBHOOK_MAX_CONCURRENCY`` | attempts in flight at once per endpoint | ``4`` |
| ``RAPPORT_WEBHOOK_SECRET_OVERLAP_SECONDS`` | how long the old secret still signs after a rotation (default of the mutation) | ``86400`` |
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from core.app import rapport
from core.config import ConfigError

EXTENSION = "rapport_webhooks"


@dataclass(frozen=True)
class WebhookSettings:
    allowed_hosts: frozenset[str]
    timeout: float
    max_attempts: int
    retry_base: float
    disable_after: int
    max_concurrency: int
    secret_overlap: int
    #: Private/loopback targets are refused everywhere except in development.
    enforce_safe_targets: bool


def _number(extra: dict[str, object], name: str, default: float, kind: type = int) -> float:
    raw = extra.get(name, default)
    try:
        value = kind(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={raw!r} must be a number") from exc
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value  # type: ignore[no-any-return]


def read_settings(app: Flask) -> WebhookSettings:
    settings = rapport(app).settings
    extra = dict(settings.extra)
    hosts = str(extra.get("RAPPORT_WEBHOOK_ALLOWED_HOSTS", "") or "")
    return WebhookSettings(
        allowed_hosts=frozenset(h.strip().lower().strip("[]") for h in hosts.split(",")
                                if h.strip()),
        timeout=_number(extra, "RAPPORT_WEBHOOK_TIMEOUT_SECONDS", 5.0, float),
        max_attempts=int(_number(extra, "RAPPORT_WEBHOOK_MAX_ATTEMPTS", 12)),
        retry_base=_number(extra, "RAPPORT_WEBHOOK_RETRY_BASE_SECONDS", 10.0, float),
        disable_after=int(_number(extra, "RAPPORT_WEBHOOK_DISABLE_AFTER_FAILURES", 50)),
        max_concurrency=int(_number(extra, "RAPPORT_WEBHOOK_MAX_CONCURRENCY", 4)),
        secret_overlap=int(_number(extra, "RAPPORT_WEBHOOK_SECRET_OVERLAP_SECONDS", 86400)),
        enforce_safe_targets=not settings.is_development,
    )


def webhook_settings() -> WebhookSettings:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
