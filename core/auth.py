"""API keys and the principal of a request. No GraphQL here: HTTP routes use it too."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import g, has_request_context, jsonify, request
from sqlalchemy import select, update

from core.app import rapport
from core.db import MAX_ID, db, utcnow
from core.errors import ErrorCode, UserError
from core.models import Agent, ApiKey
from core.services import transaction

KEY_PREFIX = "rpk"
_LAST_USED_RESOLUTION = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key (or the local developer) and, optionally, an agent."""

    name: str
    scopes: frozenset[str]
    api_key_id: int | None = None
    agent_id: int | None = None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


class AuthError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """Create a key; the returned secret is shown once and only its digest is stored."""
    wanted = sorted(set(scopes))
    known = rapport().scopes
    unknown = [s for s in wanted if s not in known]
    if not name.strip():
        raise UserError.single("Give the key a name.", ErrorCode.REQUIRED, "name")
    if not wanted:
        raise UserError.single("Give at least one scope.", ErrorCode.REQUIRED, "scopes")
    if unknown:
        raise UserError.single(f"Unknown scope(s) {', '.join(unknown)}; known: "
                               f"{', '.join(sorted(known))}.", ErrorCode.INVALID, "scopes")
    prefix = secrets.token_hex(4)
    secret = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    with transaction():
        key = ApiKey(name=name.strip(), prefix=prefix, secret_hash=_digest(secret),
                     scopes=wanted)
        db.session.add(key)
    return key, secret


def revoke_api_key(prefix: str) -> ApiKey:
    with transaction():
        key = db.session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        if key is None:
            raise UserError.single(f"No API key with prefix {prefix!r}.", ErrorCode.NOT_FOUND,
                                   "prefix")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
    return key


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _is_local_caller(remote_addr: str | None) -> bool:
    """A loopback peer that is really this machine's user, not a proxied or rebound request.

    A reverse proxy on the same machine connects from loopback on behalf of anyone (it adds
    a forwarding header), and a web page whose DNS name was rebound to 127.0.0.1 reaches
    us with its own Host: neither may act as the local admin.
    """
    if not _is_loopback(remote_addr):
        return False
    if not has_request_context():
        return True
    if any(name in request.headers for name in _PROXY_HEADERS):
        return False
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return host.strip("[]").lower() in _LOCAL_HOSTS


def _agent_id(header: str | None) -> int | None:
    if not header:
        return None
    ref = header.strip()
    if "\x00" in ref:
        raise AuthError("UNAUTHENTICATED", "X-Rapport-Agent names no active agent.")
    stmt = select(Agent.id).where(Agent.active.is_(True))
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    number = int(ref) if ref.isascii() and ref.isdigit() else None
    if number is not None and not 0 < number <= MAX_ID:
        raise AuthError("UNAUTHENTICATED", f"X-Rapport-Agent names no active agent ({ref}).")
    stmt = stmt.where(Agent.id == number) if number is not None else stmt.where(
        Agent.email == ref.lower())
    agent_id = db.session.scalar(stmt)
    if agent_id is None:
        raise AuthError("UNAUTHENTICATED", f"X-Rapport-Agent names no active agent ({ref}).")
    return agent_id


def authenticate(authorization: str | None, remote_addr: str | None,
                 agent_header: str | None = None) -> Principal:
    """Resolve the caller of a request or raise ``AuthError`` (code UNAUTHENTICATED).

    The agent header is looked up only once the caller is known: an anonymous request
    must not learn which e-mail addresses belong to active agents.
    """
    if not authorization:
        if rapport().settings.is_development and _is_local_caller(remote_addr):
            return Principal("local development", frozenset({"admin"}),
                             agent_id=_agent_id(agent_header))
        raise AuthError("UNAUTHENTICATED",
                        "Send 'Authorization: Bearer <api key>' (create one with "
                        "'rapport apikey create --name NAME --scopes SCOPES').")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    parts = token.split("_")
    if (scheme.lower() != "bearer" or len(parts) < 3 or parts[0] != KEY_PREFIX
            or "\x00" in token):
        raise AuthError("UNAUTHENTICATED", "Malformed Authorization header; expected "
                                           "'Bearer rpk_...'.")
    key = db.session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if key is None or not hmac.compare_digest(key.secret_hash, _digest(token)):
        raise AuthError("UNAUTHENTICATED", "Unknown API key.")
    if key.revoked_at is not None:
        raise AuthError("UNAUTHENTICATED", "This API key was revoked.")
    principal = Principal(key.name, frozenset(key.scopes), api_key_id=key.id,
                          agent_id=_agent_id(agent_header))
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        db.session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        db.session.commit()
    return principal


F = TypeVar("F", bound=Callable[..., Any])


def require_scope(scope: str) -> Callable[[F], F]:
    """Protect a plain Flask route (report pages, exports) with an API-key scope."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                principal = authenticate(request.headers.get("Authorization"),
                                         request.remote_addr,
                                         request.headers.get("X-Rapport-Agent"))
            except AuthError as exc:
                return jsonify(error={"code": exc.code, "message": exc.message}), 401
            if not principal.allows(scope):
                return jsonify(error={"code": "FORBIDDEN",
                                      "message": f"This key lacks the {scope} scope."}), 403
            g.rapport_principal = principal
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator
