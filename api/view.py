"""The /graphql endpoint: authenticate -> parse -> validate (cached) -> execute -> shape errors.

Our own thin view rather than a third-party one: the validation rules (scopes, depth,
cost) and the error shaping are ours, and parsed + validated documents are cached by
query text and the caller's scopes.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from graphql import (
    BREAK, DocumentNode, ExecutionResult, GraphQLError, GraphQLSyntaxError, StringValueNode,
    Visitor, execute, parse, specified_rules, validate, visit,
)

from api.context import RequestContext
from api.execution import RapportExecutionContext, is_awaitable, run as run_coroutine
from api.rules import limits_rule, scope_rule
from api.schema import RapportSchema
from core.app import rapport
from core.auth import AuthError, Principal, authenticate
from core.config import Settings

log = logging.getLogger("rapport.graphql")
blueprint = Blueprint("graphql", __name__, template_folder="templates")
_CACHE_SIZE = 512


@dataclass
class Prepared:
    document: DocumentNode | None
    errors: list[GraphQLError]
    status: int


class GraphQLService:
    """The app's schema plus a bounded cache of validated documents."""

    def __init__(self, schema: RapportSchema, settings: Settings):
        self.schema = schema
        self.settings = settings
        self._cache: OrderedDict[tuple[str, frozenset[str]], Prepared] = OrderedDict()
        self._lock = Lock()

    def prepare(self, query: str, principal: Principal) -> Prepared:
        key = (query, principal.scopes)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        prepared = self._prepare(query, principal)
        with self._lock:
            self._cache[key] = prepared
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return prepared

    def _prepare(self, query: str, principal: Principal) -> Prepared:
        try:
            document = parse(query)
        except GraphQLSyntaxError as exc:
            exc.extensions = {"code": "GRAPHQL_PARSE_FAILED"}
            return Prepared(None, [exc], 400)
        nul = _NulLiterals()
        visit(document, nul)
        if nul.found is not None:
            return Prepared(None, [GraphQLError(_NUL_MESSAGE, nul.found, extensions={
                "code": "BAD_USER_INPUT"})], 400)
        schema = self.schema.graphql_schema
        errors = validate(schema, document, specified_rules)
        if not errors:
            errors = validate(schema, document, [
                limits_rule(self.settings.graphql_max_depth,
                            self.settings.graphql_max_complexity),
                scope_rule(principal, self.schema.field_scopes)])
        for error in errors:
            if not error.extensions:
                error.extensions = {"code": "GRAPHQL_VALIDATION_FAILED"}
        if any(e.extensions.get("code") == "FORBIDDEN" for e in errors):
            return Prepared(None, list(errors), 403)
        return Prepared(None if errors else document, list(errors), 400 if errors else 200)

    def execute(self, document: DocumentNode, principal: Principal,
                variables: dict[str, Any] | None, operation_name: str | None
                ) -> ExecutionResult:
        context = RequestContext(principal=principal)

        async def run() -> ExecutionResult:
            result = execute(self.schema.graphql_schema, document, context_value=context,
                             variable_values=variables, operation_name=operation_name,
                             execution_context_class=RapportExecutionContext,
                             is_awaitable=is_awaitable)
            if inspect.isawaitable(result):
                result = await result
            return result  # type: ignore[return-value]

        return run_coroutine(run())


_NUL = "\x00"
_NUL_MESSAGE = ("Text may not contain the NUL character (\\u0000): PostgreSQL cannot "
                "store it.")
_UNSTORABLE_MESSAGE = ("Variables may not contain the NUL character (\\u0000) nor NaN or "
                       "Infinity (not JSON; PostgreSQL cannot store them).")


def _unstorable(value: Any) -> bool:
    """Whether a JSON value holds text with NUL or a NaN/Infinity (Python's JSON accepts
    them); iterative, any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _NUL in item:
                return True
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class _NulLiterals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found: StringValueNode | None = None

    def enter_string_value(self, node: StringValueNode, *args: Any) -> Any:
        if _NUL in node.value:
            self.found = node
            return BREAK
        return None


def format_error(error: GraphQLError) -> dict[str, Any]:
    """Shape an error for the client; anything unexpected is logged and told without detail.

    Our own GraphQLErrors (bad input, forbidden) carry a code. An error with a path and no
    code of ours is a server fault (a resolver raised, a non-null field came back null).
    Errors without a path come from coercing the request's variables: the caller's input.
    """
    original = error.original_error
    ours = isinstance(original, GraphQLError) and bool(original.extensions)
    if not ours and not error.extensions and error.path:
        log.error("GraphQL execution failed at %s: %s", error.path, error.message,
                  exc_info=original)
        shaped: dict[str, Any] = {"message": "Internal server error.",
                                  "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
        if error.path:
            shaped["path"] = error.path
        return shaped
    if isinstance(original, GraphQLError) and original.extensions:
        error.extensions = original.extensions
    formatted = error.formatted
    formatted.setdefault("extensions", {})
    formatted["extensions"].setdefault("code", "BAD_USER_INPUT")
    return formatted


def _errors(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(errors=[{"message": message, "extensions": {"code": code}}]), status


def service() -> GraphQLService:
    return current_app.extensions["rapport_graphql"]  # type: ignore[no-any-return]


@blueprint.route("/graphql", methods=["GET", "POST"])
def graphql_endpoint() -> Any:
    settings = rapport().settings
    if request.method == "GET":
        if settings.graphiql and "text/html" in request.headers.get("Accept", ""):
            return render_template("graphiql.html")
        return _errors(405, "METHOD_NOT_ALLOWED",
                       "POST a JSON body {\"query\": ..., \"variables\": ...} to /graphql.")
    try:
        principal = authenticate(request.headers.get("Authorization"), request.remote_addr,
                                 request.headers.get("X-Rapport-Agent"))
    except AuthError as exc:
        return _errors(401, exc.code, exc.message)

    try:
        body = request.get_json(silent=True)
    except RecursionError:  # JSON nested deeper than Python's parser recurses
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return _errors(400, "BAD_REQUEST",
                       "The body must be JSON with a string 'query' (and optionally "
                       "'variables' and 'operationName').")
    variables = body.get("variables")
    operation_name = body.get("operationName")
    if variables is not None and not isinstance(variables, dict):
        return _errors(400, "BAD_REQUEST", "'variables' must be a JSON object.")
    if operation_name is not None and not isinstance(operation_name, str):
        return _errors(400, "BAD_REQUEST", "'operationName' must be a string.")
    if _unstorable(variables):
        return _errors(400, "BAD_USER_INPUT", _UNSTORABLE_MESSAGE)

    graphql = service()
    prepared = graphql.prepare(body["query"], principal)
    if prepared.document is None:
        return jsonify(errors=[format_error(e) for e in prepared.errors]), prepared.status
    result = graphql.execute(prepared.document, principal, variables, operation_name)
    payload: dict[str, Any] = {}
    if result.errors:
        payload["errors"] = [format_error(e) for e in result.errors]
    payload["data"] = result.data
    return jsonify(payload), 200


@blueprint.after_request
def cors(response: Response) -> Response:
    origin = request.headers.get("Origin")
    if origin and origin in rapport().settings.cors_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Headers"] = \
            "Authorization, Content-Type, X-Rapport-Agent"
        response.headers["Access-Control-Allow-Methods"] = "POST, GET, OPTIONS"
    return response
