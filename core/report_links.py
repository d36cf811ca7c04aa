"""Signed report links: open an HTML report in a browser, where no Bearer header can be sent.

GraphQL gives a link (``Survey.reportLink``, ``churnReportLink``) to a caller holding the
report's read scope; the link's token (``core.signing``, purpose ``report``, lifetime
``RAPPORT_SIGNED_LINK_TTL``) carries which report, which object, the report's parameters
and the API key that asked. Opening it acts as that key: a key revoked since, an agent
deactivated or a scope taken away closes every link it made. The parameters come from the
token only, so a link cannot be edited into another report.

A route accepts either (``report_access``): ``Authorization: Bearer`` with its query
parameters, or ``?token=``. An expired token answers 410 ``LINK_EXPIRED``, a forged or
altered one 403 ``FORBIDDEN``, both in the ``core.http`` error shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from flask import g, request
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from core import context, roles
from core.app import rapport
from core.auth import DEV_ADMIN, Principal, require_scope
from core.context import Actor
from core.db import db
from core.http import error_response
from core.models import Agent, ApiKey
from core.signing import LinkError, sign, unsign

PURPOSE = "report"
_ARGS = "rapport_report_args"

F = TypeVar("F", bound=Callable[..., Any])


class LinkRefused(Exception):
    """The token is valid but its key may no longer open the report."""


def report_link(principal: Principal, report: str, path: str, target: int | None = None,
                args: Mapping[str, str | Sequence[str] | None] | None = None
                ) -> dict[str, Any]:
    """``{url, expiresAt}``: a link to ``path`` that opens ``report`` (about ``target``,
    e.g. the survey's database id) with ``args`` (the route's query parameters) as
    ``principal``. Empty arguments are left out."""
    kept: dict[str, list[str]] = {}
    for name, value in (args or {}).items():
        values = [value] if isinstance(value, str) else list(value or [])
        if values:
            kept[name] = [str(v) for v in values]
    signed = sign(PURPOSE, {"report": report, "target": target, "args": kept,
                            "key": principal.api_key_id,
                            "onBehalfOf": principal.actor.on_behalf_of_agent_id})
    return {"url": f"{path}?token={signed.token}", "expiresAt": signed.expires_at}


def _principal(value: Mapping[str, Any], scope: str) -> Principal:
    key_id, on_behalf = value.get("key"), value.get("onBehalfOf")
    if key_id is None:
        # Made by the local developer (development mode, no key): only opens there.
        if not rapport().settings.is_development:
            raise LinkRefused("This link was made in development mode.")
        return Principal("local development", frozenset({"admin"}), agent_id=on_behalf,
                         actor=Actor(service=DEV_ADMIN, on_behalf_of_agent_id=on_behalf))
    key = db.session.get(ApiKey, int(key_id))
    if key is None or key.revoked_at is not None:
        raise LinkRefused("The API key that made this link was revoked.")
    scopes = frozenset(key.scopes)
    if key.agent_id is not None:
        agent = db.session.execute(select(Agent.active, Agent.role).where(
            Agent.id == key.agent_id)).one()
        if not agent.active:
            raise LinkRefused("The agent who made this link is deactivated.")
        scopes = roles.effective_scopes(scopes, agent.role, rapport().scopes)
    principal = Principal(
        key.name, scopes, api_key_id=key.id,
        agent_id=on_behalf if on_behalf is not None else key.agent_id,
        actor=Actor(agent_id=key.agent_id, service=key.service, api_key_prefix=key.prefix,
                    on_behalf_of_agent_id=on_behalf))
    if not principal.allows(scope):
        raise LinkRefused(f"The API key that made this link no longer has the {scope} "
                          "scope.")
    return principal


def report_args() -> Any:
    """The report's parameters: the signed link's, or the query string's (Bearer)."""
    return g.get(_ARGS, request.args)


def report_access(scope: str, report: str,
                  target: Callable[[Mapping[str, Any]], int | None] = lambda kwargs: None
                  ) -> Callable[[F], F]:
    """Protect a report route with ``scope``: a Bearer key holding it, or a signed link
    made for this ``report`` and the ``target`` computed from the route's arguments
    (``target`` raises ``LookupError`` when they name nothing: 404)."""

    def decorator(view: F) -> F:
        with_header = require_scope(scope)(view)

        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            token = request.args.get("token")
            if token is None:
                return with_header(*args, **kwargs)
            try:
                value = unsign(PURPOSE, token)
                if not isinstance(value, dict) or value.get("report") != report:
                    raise LinkError("This link is not valid.")
                try:
                    wanted = target(kwargs)
                except LookupError:
                    raise LinkError("This link is not valid.") from None
                if value.get("target") != wanted:
                    raise LinkError("This link is not valid.")
                principal = _principal(value, scope)
            except LinkError as exc:
                if exc.expired:
                    return error_response(410, "LINK_EXPIRED", str(exc))
                return error_response(403, "FORBIDDEN", str(exc))
            except LinkRefused as exc:
                return error_response(403, "FORBIDDEN", str(exc))
            g.rapport_principal = principal
            setattr(g, _ARGS, MultiDict([(name, v) for name, values in
                                           dict(value.get("args") or {}).items()
                                           for v in values]))
            with context.use(actor=principal.actor, operation=request.endpoint):
                return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator

