"""Rate limits per API key (flask-limiter): one budget per key across every API route.

The budget is keyed by the prefix of a key whose secret checked out, so a caller cannot
spend another key's budget by naming its prefix, nor escape its own with made-up keys:
requests without a valid key share their remote address's budget. A key's own
``rate_limit`` wins over ``RAPPORT_RATE_LIMIT``; ``unlimited`` exempts it (benchmarks).

Counters live in ``RAPPORT_RATE_LIMIT_STORAGE``: ``memory://`` counts per process (each
gunicorn worker has its own budget), ``redis://host:6379/0`` shares them between workers
and machines, as production needs. If Redis is unreachable, counting falls back to
memory rather than refusing traffic.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from threading import Lock
from flask import Blueprint, Flask, Response, g, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse_many
from sqlalchemy import select

from core import changes
from core.db import db
from core.errors import ErrorCode, UserError
from core.http import error_response
from core.ids import global_id
from core.models import ApiKey
from core.services import transaction

#: A key with this rate limit is never limited.
UNLIMITED = "unlimited"
#: How long a checked key's budget is remembered before the database is read again: a
#: changed ``rate_limit`` applies within this time (authentication is not cached).
_KEY_CACHE_SECONDS = 10.0
_KEY_CACHE_SIZE = 10_000
_EXTENSION = "rapport_rate_limits"


def parse_rate_limit(value: str | None) -> str | None:
    """A key's ``rate_limit`` as given on the CLI: ``None`` (the default), ``unlimited``
    or a limit such as ``1000/minute`` (several: ``10/second;1000/minute``)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.lower() == UNLIMITED:
        return UNLIMITED
    try:
        parse_many(text)
    except ValueError:
        raise UserError.single(
            f"Rate limit {text!r}: use e.g. 1000/minute, 10/second;1000/minute or "
            f"{UNLIMITED}.", ErrorCode.INVALID, "rateLimit") from None
    if len(text) > 64:
        raise UserError.single("Rate limit: at most 64 characters.", ErrorCode.INVALID,
                               "rateLimit")
    return text


def set_key_rate_limit(prefix: str, value: str | None) -> ApiKey:
    """Give the key ``prefix`` its own limit (``None``: back to ``RAPPORT_RATE_LIMIT``)."""
    limit = parse_rate_limit(value)
    with transaction():
        key = db.session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        if key is None:
            raise UserError.single(f"No API key with prefix {prefix!r}.", ErrorCode.NOT_FOUND,
                                   "prefix")
        if key.rate_limit != limit:
            objects = [] if key.agent_id is None else [global_id("Agent", key.agent_id)]
            changes.record("apikey.limit", objects, {"apiKeyPrefix": [key.prefix, key.prefix],
                                                     "rateLimit": [key.rate_limit, limit]})
            key.rate_limit = limit
    return key


@dataclass(frozen=True)
class _Budget:
    bucket: str
    limit: str  # a limits string, or UNLIMITED


class RateLimits:
    """The app's limiter and a short-lived memory of which secret is which key."""

    def __init__(self, app: Flask, default: str, storage: str):
        self.default = default
        self._keys: dict[str, tuple[float, _Budget | None]] = {}
        self._lock = Lock()
        self.limiter = Limiter(
            key_func=lambda: self.budget().bucket, storage_uri=storage,
            strategy="moving-window", headers_enabled=True, key_prefix="rapport",
            in_memory_fallback_enabled=True)
        # Registered before the limiter's own hook, so it runs after it (Flask runs these
        # in reverse): flask-limiter writes Retry-After on every response it counted.
        app.after_request(_retry_after_only_when_limited)
        self.limiter.init_app(app)
        app.register_error_handler(RateLimitExceeded, _too_many_requests)

    def limit(self, blueprints: Iterable[Blueprint]) -> None:
        """One shared budget over every route of ``blueprints``."""
        # flask-limiter reads an empty limit as "no limit": that is how a key is exempt.
        shared = self.limiter.shared_limit(
            lambda: "" if self.budget().limit == UNLIMITED else self.budget().limit,
            scope="api", key_func=lambda: self.budget().bucket)
        for blueprint in blueprints:
            shared(blueprint)

    def budget(self) -> _Budget:
        if "rapport_budget" not in g:
            key = self._key_budget(request.headers.get("Authorization"))
            g.rapport_budget = key or _Budget(f"address:{request.remote_addr}", self.default)
        return g.rapport_budget  # type: ignore[no-any-return]

    def _key_budget(self, authorization: str | None) -> _Budget | None:
        """The budget of the key this header proves, or None (no key, a bad one)."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        parts = token.split("_")
        if scheme.lower() != "bearer" or len(parts) < 3 or "\x00" in token:
            return None
        # The digest core.auth stores (tests fail if the two drift apart).
        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._keys.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = db.session.execute(select(ApiKey.prefix, ApiKey.secret_hash, ApiKey.rate_limit,
                                        ApiKey.revoked_at)
                                 .where(ApiKey.prefix == parts[1])).first()
        budget = None
        if (row is not None and hmac.compare_digest(row.secret_hash, digest)
                and row.revoked_at is None):
            budget = _Budget(f"key:{row.prefix}", row.rate_limit or self.default)
        with self._lock:
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[digest] = (now + _KEY_CACHE_SECONDS, budget)
        return budget


def _retry_after_only_when_limited(response: Response) -> Response:
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
    return response


def _too_many_requests(error: RateLimitExceeded) -> tuple[Response, int]:
    message = (f"Too many requests: the limit is {error.description}. Retry after the "
               f"number of seconds in the Retry-After header.")
    return error_response(429, "RATE_LIMITED", message)


def init_app(app: Flask, blueprints: Iterable[Blueprint], default: str, storage: str) -> None:
    """Limit the API routes (``blueprints``: those plugins registered); other routes (health
    probes, metrics) stay unlimited."""
    limits = RateLimits(app, default, storage)
    limits.limit(blueprints)
    app.extensions[_EXTENSION] = limits
