"""Short-lived signed links: the one helper for job files and report links.

A link carries what it opens (a purpose and a small JSON value) signed with
``RAPPORT_SECRET_KEY``; it expires after ``RAPPORT_SIGNED_LINK_TTL`` seconds (default
600). Whoever holds the link may open it until then, without an API key, so a browser
can download a file: keep links out of logs that outlive them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from core.app import rapport
from core.config import ConfigError
from core.db import utcnow

DEFAULT_TTL_SECONDS = 600


class LinkError(Exception):
    """The token is not one of ours, was altered, is for another purpose, or expired."""

    def __init__(self, message: str, expired: bool = False):
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class SignedLink:
    token: str
    expires_at: dt.datetime


def link_ttl() -> int:
    raw = rapport().settings.extra.get("RAPPORT_SIGNED_LINK_TTL", DEFAULT_TTL_SECONDS)
    try:
        seconds = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"RAPPORT_SIGNED_LINK_TTL={raw!r} must be a number of seconds"
                          ) from None
    if seconds <= 0:
        raise ConfigError(f"RAPPORT_SIGNED_LINK_TTL={raw!r} must be positive")
    return seconds


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    # The purpose is the salt: a token made for one kind of link never opens another.
    return URLSafeTimedSerializer(rapport().settings.secret_key, salt=f"rapport.{purpose}")


def sign(purpose: str, value: Any) -> SignedLink:
    """A token for ``value`` (JSON-serialisable), valid for the configured lifetime."""
    return SignedLink(_serializer(purpose).dumps(value),
                      utcnow() + dt.timedelta(seconds=link_ttl()))


def unsign(purpose: str, token: str) -> Any:
    """The value behind ``token``; ``LinkError`` when it is not valid now."""
    try:
        return _serializer(purpose).loads(token, max_age=link_ttl())
    except SignatureExpired:
        raise LinkError("This link has expired; ask for a new one.", expired=True) from None
    except BadSignature:
        raise LinkError("This link is not valid.") from None
