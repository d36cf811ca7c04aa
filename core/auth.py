"""API keys and the principal of a request. No GraphQL here: HTTP routes use it too."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask, current_app, g, has_app_context, has_request_context, request
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from core import changes, context, roles
from core.app import rapport
from core.context import Actor
from core.db import MAX_ID, db, utcnow
from core.errors import ErrorCode, UserError
from core.http import error_response
from core.ids import global_id
from core.models import Agent, AgentRole, ApiKey
from core.ratelimit import parse_rate_limit
from core.services import transaction

KEY_PREFIX = "rpk"
_LAST_USED_RESOLUTION = dt.timedelta(minutes=5)

#: The scope a key needs for its ``X-Rapport-Agent`` header to be honoured.
ACT_AS = "agents:act-as"
#: The service name of the local developer (development mode, loopback, no key).
DEV_ADMIN = "dev-admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key (or the local developer) and its actor.

    ``agent_id`` is the staff member the change is made by: the key's agent, or the
    agent a service acts for (``X-Rapport-Agent``); ``actor`` is what the audit log
    and events record.
    """

    name: str
    scopes: frozenset[str]
    api_key_id: int | None = None
    agent_id: int | None = None
    actor: Actor = field(default_factory=Actor)

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


class AuthError(Exception):
    """``UNAUTHENTICATED`` (HTTP 401) or ``FORBIDDEN`` (403, see ``status``)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return 403 if self.code == "FORBIDDEN" else 401


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --- What a worker remembers about keys ------------------------------------------------------

#: How long a process trusts what it read about a key and its agent. A revocation, a scope
#: or role change or an agent's deactivation made elsewhere (another worker, the CLI) takes
#: effect within this many seconds on every worker; one made in this process, at once.
KEY_CACHE_SECONDS = 5.0
#: At most this many keys are remembered per app (the whole cache is dropped when full).
KEY_CACHE_SIZE = 10_000
#: The clock of the cache (monotonic seconds); tests replace it.
clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class _KeyRecord:
    """A key's row (and its agent's state) as read at ``read_at`` (``clock()``)."""

    id: int
    name: str
    prefix: str
    secret_hash: str
    scopes: frozenset[str]
    agent_id: int | None
    service: str | None
    revoked: bool
    agent_active: bool
    agent_role: AgentRole | None
    read_at: float


class _KeyCache:
    """Key records by the digest of the secret presented (never the secret itself)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, _KeyRecord] = {}
        #: last_used_at of each key as this process last read or wrote it, by key id.
        self.last_used: dict[int, dt.datetime | None] = {}

    def get(self, digest: str) -> _KeyRecord | None:
        record = self._records.get(digest)
        if record is None or clock() - record.read_at >= KEY_CACHE_SECONDS:
            return None
        return record

    def put(self, digest: str, record: _KeyRecord) -> None:
        with self._lock:
            if len(self._records) >= KEY_CACHE_SIZE:
                self._records.clear()
                self.last_used.clear()
            self._records[digest] = record

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


def _key_cache(app: Flask | None = None) -> _KeyCache:
    target = app if app is not None else current_app
    cache = target.extensions.get("rapport_key_cache")
    if cache is None:
        cache = target.extensions.setdefault("rapport_key_cache", _KeyCache())
    return cache  # type: ignore[no-any-return]


_KEYS_CHANGED = "rapport_keys_changed"


@event.listens_for(Session, "after_flush")
def _note_key_changes(session: Session, flush_context: Any) -> None:
    """A key or an agent written in this session: forget every cached key at commit."""
    if any(isinstance(obj, (ApiKey, Agent))
           for obj in (*session.new, *session.dirty, *session.deleted)):
        session.info[_KEYS_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _forget_changed_keys(session: Session) -> None:
    if session.info.pop(_KEYS_CHANGED, False) and has_app_context():
        _key_cache().clear()


@event.listens_for(Session, "after_rollback")
def _keep_keys(session: Session) -> None:
    session.info.pop(_KEYS_CHANGED, None)


def _read_key(prefix: str) -> tuple[_KeyRecord, dt.datetime | None] | None:
    row = db.session.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.prefix, ApiKey.secret_hash, ApiKey.scopes,
               ApiKey.agent_id, ApiKey.service, ApiKey.revoked_at, ApiKey.last_used_at,
               Agent.active, Agent.role)
        .outerjoin(Agent, Agent.id == ApiKey.agent_id)
        .where(ApiKey.prefix == prefix)).first()
    if row is None:
        return None
    record = _KeyRecord(
        id=row.id, name=row.name, prefix=row.prefix, secret_hash=row.secret_hash,
        scopes=frozenset(row.scopes), agent_id=row.agent_id, service=row.service,
        revoked=row.revoked_at is not None, agent_active=bool(row.active),
        agent_role=row.role,
        read_at=clock())
    return record, row.last_used_at


def create_api_key(name: str, scopes: Iterable[str], *, agent_email: str | None = None,
                   service: str | None = None, rate_limit: str | None = None
                   ) -> tuple[ApiKey, str]:
    """Create a key for an agent (by e-mail) or a named service (default: the key's name).

    The returned secret is shown once and only its digest is stored. An agent's key
    never does more than the agent's role allows, whatever scopes it holds.
    ``rate_limit``: its own budget (``1000/minute``, ``unlimited``; see core.ratelimit).
    """
    own_limit = parse_rate_limit(rate_limit)
    wanted = sorted(set(scopes))
    known = rapport().scopes
    unknown = [s for s in wanted if s not in known]
    if not name.strip():
        raise UserError.single("Give the key a name.", ErrorCode.REQUIRED, "name")
    if agent_email is not None and service is not None:
        raise UserError.single("A key belongs to an agent or to a service, not both.",
                               ErrorCode.INVALID, "agent")
    if service is not None and not service.strip():
        raise UserError.single("Give the service a name.", ErrorCode.REQUIRED, "service")
    if not wanted:
        raise UserError.single("Give at least one scope.", ErrorCode.REQUIRED, "scopes")
    if unknown:
        raise UserError.single(f"Unknown scope(s) {', '.join(unknown)}; known: "
                               f"{', '.join(sorted(known))}.", ErrorCode.INVALID, "scopes")
    prefix = secrets.token_hex(4)
    secret = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    with transaction():
        agent_id = None
        if agent_email is not None:
            agent_id = db.session.scalar(select(Agent.id).where(
                Agent.email == agent_email.strip().lower()))
            if agent_id is None:
                raise UserError.single(f"No agent with e-mail {agent_email!r}.",
                                       ErrorCode.NOT_FOUND, "agent")
        key = ApiKey(name=name.strip(), prefix=prefix, secret_hash=_digest(secret),
                     scopes=wanted, agent_id=agent_id, rate_limit=own_limit,
                     service=None if agent_id is not None else (service or name).strip())
        db.session.add(key)
        db.session.flush()
        _record_key("apikey.create", key, {"apiKeyPrefix": [None, prefix],
                                           "scopes": [None, wanted],
                                           "service": [None, key.service]})
    return key, secret


def _record_key(operation: str, key: ApiKey, changed: dict[str, list[Any]]) -> None:
    objects = [] if key.agent_id is None else [global_id("Agent", key.agent_id)]
    changes.record(operation, objects, changed)


def revoke_api_key(prefix: str) -> ApiKey:
    with transaction():
        key = db.session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        if key is None:
            raise UserError.single(f"No API key with prefix {prefix!r}.", ErrorCode.NOT_FOUND,
                                   "prefix")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            _record_key("apikey.revoke", key, {"apiKeyPrefix": [prefix, prefix],
                                               "revokedAt": [None, key.revoked_at]})
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
    """Resolve the caller of a request or raise ``AuthError``.

    UNAUTHENTICATED: no, a malformed, unknown or revoked key, or a key of a deactivated
    agent. FORBIDDEN: an ``X-Rapport-Agent`` header from a key without ``agents:act-as``.
    The agent header is looked up only once the caller is known and allowed to send it:
    nobody else may learn which e-mail addresses belong to active agents.
    """
    if not authorization:
        if rapport().settings.is_development and _is_local_caller(remote_addr):
            scopes = frozenset({"admin"})
            on_behalf = _on_behalf_of(scopes, agent_header)
            return Principal("local development", scopes, agent_id=on_behalf,
                             actor=Actor(service=DEV_ADMIN, on_behalf_of_agent_id=on_behalf))
        raise AuthError("UNAUTHENTICATED",
                        "Send 'Authorization: Bearer <api key>' (create one with "
                        "'rapport apikey create --service NAME --scopes SCOPES').")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    parts = token.split("_")
    if (scheme.lower() != "bearer" or len(parts) < 3 or parts[0] != KEY_PREFIX
            or "\x00" in token):
        raise AuthError("UNAUTHENTICATED", "Malformed Authorization header; expected "
                                           "'Bearer rpk_...'.")
    digest = _digest(token)
    cache = _key_cache()
    key = cache.get(digest)
    if key is None:
        read = _read_key(parts[1])
        if read is None or not hmac.compare_digest(read[0].secret_hash, digest):
            raise AuthError("UNAUTHENTICATED", "Unknown API key.")
        key = read[0]
        cache.last_used[key.id] = read[1]
        cache.put(digest, key)
    if key.revoked:
        raise AuthError("UNAUTHENTICATED", "This API key was revoked.")
    scopes = key.scopes
    if key.agent_id is not None:
        if not key.agent_active:
            raise AuthError("UNAUTHENTICATED", "This API key's agent is deactivated.")
        scopes = roles.effective_scopes(scopes, key.agent_role or "", rapport().scopes)
    on_behalf = _on_behalf_of(scopes, agent_header)
    principal = Principal(
        key.name, scopes, api_key_id=key.id,
        agent_id=on_behalf if on_behalf is not None else key.agent_id,
        actor=Actor(agent_id=key.agent_id, service=key.service, api_key_prefix=key.prefix,
                    on_behalf_of_agent_id=on_behalf))
    # last_used_at is kept to _LAST_USED_RESOLUTION: each process writes it when what it
    # last read or wrote is older than that (a cached key's value is re-read with the key).
    now = utcnow()
    last_used = cache.last_used.get(key.id)
    if last_used is None or now - last_used > _LAST_USED_RESOLUTION:
        db.session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        db.session.commit()
        cache.last_used[key.id] = now
    return principal


def _on_behalf_of(scopes: frozenset[str], agent_header: str | None) -> int | None:
    if not agent_header:
        return None
    if ACT_AS not in scopes and "admin" not in scopes:
        raise AuthError("FORBIDDEN", f"X-Rapport-Agent needs a key with the {ACT_AS} scope; "
                                     "send the request with the agent's own key instead.")
    return _agent_id(agent_header)


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
                return error_response(exc.status, exc.code, exc.message)
            if not principal.allows(scope):
                return error_response(403, "FORBIDDEN", f"This key lacks the {scope} scope.")
            g.rapport_principal = principal
            with context.use(actor=principal.actor, operation=request.endpoint):
                return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator
