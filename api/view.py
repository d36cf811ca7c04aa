"""The /graphql endpoint: authenticate -> parse -> validate (cached) -> execute -> shape errors.

Our own thin view rather than a third-party one: the validation rules (scopes, depth,
cost) and the error shaping are ours, and parsed + validated documents are cached by a
digest of the query text and the caller's scopes, within a memory bound (the checks that
do not depend on the scopes are shared by the entries of one text). The limits of
api/limits.py run before graphql-core's rules (docs/graphql.md, "Limits and the cost
model").
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge
from graphql import (
    BREAK, DocumentNode, ExecutionResult, FieldNode, GraphQLError, GraphQLSyntaxError,
    OperationDefinitionNode, OperationType, StringValueNode, Visitor, execute,
    get_operation_ast, parse, specified_rules, validate, visit,
)
from graphql.validation.validate import ValidationAbortedError

from api.context import RequestContext
from api.execution import (
    PlanCache, RapportExecutionContext, is_awaitable, run as run_coroutine,
)
from api.authorization import authorization_rule
from api import limits
from api.schema import RapportSchema
from core import context
from core.app import rapport
from core.auth import AuthError, Principal, authenticate
from core import metrics
from core.config import Settings
from core.timeouts import is_statement_timeout
from core.crypto import DecryptionError
from core.connections import begin_read_only, release_read_only
from core.http import (
    DECRYPTION_FAILED, DECRYPTION_MESSAGE, error_response, json_response,
)
from core.schemas import MAX_JSON_DEPTH, SURROGATE_MESSAGE, has_surrogate

log = logging.getLogger("rapport.graphql")
blueprint = Blueprint("graphql", __name__, template_folder="templates")
#: The validated-document cache holds at most this much (estimated) memory.
CACHE_BYTES = 16 * 1024 * 1024
#: Longer documents are prepared for each request rather than cached.
MAX_CACHED_QUERY = 32 * 1024
#: Memory of a parsed document per character of its text (measured: 55 to 85).
_AST_BYTES_PER_CHAR = 100


@dataclass
class Prepared:
    document: DocumentNode | None
    errors: list[GraphQLError]
    status: int
    size: int = 0  # estimated bytes held, for the cache's bound
    #: The compiled execution plans of a valid document (api/execution.py), kept with it.
    plans: PlanCache | None = None
    #: The document once every check but authorization passed (whether or not the
    #: authorization rule then refused it), and whether the caller could introspect (the
    #: one right those checks depend on): another key's request for the same text, kept in
    #: the service's ``_checked``, only runs the authorization rule.
    checked: DocumentNode | None = None
    introspection: bool = False


class GraphQLService:
    """The app's schema plus a bounded cache of validated documents."""

    def __init__(self, schema: RapportSchema, settings: Settings):
        self.schema = schema
        self.settings = settings
        self.cost_tables = limits.CostTables.of(schema.graphene_schema)
        # Keyed by a digest of the text, never the text; bounded in bytes, not entries.
        self._cache: OrderedDict[tuple[bytes, frozenset[str]], Prepared] = OrderedDict()
        self._cache_bytes = 0
        #: Documents that passed every scope-independent check, shared by the cached
        #: entries of the same text (counted: dropped with the last entry holding one).
        self._checked: dict[tuple[bytes, bool], tuple[DocumentNode, int]] = {}
        self._lock = Lock()
        limits.bound_overlap_validation()

    def introspection_allowed(self, principal: Principal) -> bool:
        mode = self.settings.graphql_introspection
        return mode == "on" or (mode == "scope" and principal.allows(limits.SCHEMA_READ))

    def prepare(self, query: str, principal: Principal) -> Prepared:
        if len(query) > MAX_CACHED_QUERY:
            return self._prepare(query, principal)
        digest = hashlib.sha256(query.encode("utf-8", "surrogatepass")).digest()
        key = (digest, principal.scopes)
        checked_key = (digest, self.introspection_allowed(principal))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            checked = self._checked.get(checked_key)
        prepared = self._prepare(query, principal, checked[0] if checked else None)
        prepared.size = _AST_BYTES_PER_CHAR * len(query) + 512 + (
            prepared.plans.estimated_bytes(len(query)) if prepared.plans else 0)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = prepared
                self._cache_bytes += prepared.size
                if prepared.checked is not None:
                    document, count = self._checked.get(checked_key, (prepared.checked, 0))
                    self._checked[checked_key] = (document, count + 1)
            while self._cache_bytes > CACHE_BYTES:
                evicted_key, evicted = self._cache.popitem(last=False)
                self._cache_bytes -= evicted.size
                if evicted.checked is not None:
                    held_key = (evicted_key[0], evicted.introspection)
                    document, count = self._checked[held_key]
                    if count > 1:
                        self._checked[held_key] = (document, count - 1)
                    else:
                        del self._checked[held_key]
        return prepared

    @property
    def cache_bytes(self) -> int:
        return self._cache_bytes

    def _prepare(self, query: str, principal: Principal,
                 checked: DocumentNode | None = None) -> Prepared:
        """Check a document for this principal; ``checked``: the same text, already through
        every check but authorization (for a principal with the same introspection right)."""
        allowed = self.introspection_allowed(principal)
        document = checked
        if document is None:
            outcome = self._check(query, allowed)
            if isinstance(outcome, Prepared):
                return outcome
            document = outcome
        errors = validate(self.schema.graphql_schema, document, [
            authorization_rule(principal, self.schema.field_scopes, self.schema.type_domains)])
        prepared = (_refused(errors) if errors
                    else Prepared(document, [], 200, plans=PlanCache(document)))
        prepared.checked, prepared.introspection = document, allowed
        return prepared

    def _check(self, query: str, allowed: bool) -> Prepared | DocumentNode:
        """Every check that does not depend on the caller's scopes (only on whether it may
        introspect): the parsed document, or the refusal."""
        if len(query) > limits.MAX_DOCUMENT_CHARS:
            return Prepared(None, [GraphQLError(
                f"The document is longer than {limits.MAX_DOCUMENT_CHARS:,} characters; "
                f"pass large values as variables.",
                extensions={"code": "QUERY_TOO_COMPLEX"})], 400)
        try:
            document = parse(query, max_tokens=limits.MAX_TOKENS)
        except GraphQLSyntaxError as exc:
            too_long = "tokens. Parsing aborted" in exc.message
            exc.extensions = {"code": "QUERY_TOO_COMPLEX" if too_long
                              else "GRAPHQL_PARSE_FAILED"}
            return Prepared(None, [exc], 400)
        except RecursionError:  # graphql-core's parser refuses nesting over 200 this way
            return Prepared(None, [GraphQLError(
                "The document nests too deeply to be parsed.",
                extensions={"code": "QUERY_TOO_COMPLEX"})], 400)
        schema = self.schema.graphql_schema
        # Our limits first: they are linear in the document, and a document they refuse
        # never reaches the other checks and the standard rules, some of which are not.
        analysis = limits.analyse(schema, document, self.cost_tables)
        errors = limits.input_errors(analysis, allowed,
                                     forbidden=self.settings.graphql_introspection == "scope")
        if not errors:
            errors = limits.limit_errors(analysis, self.settings.graphql_max_depth,
                                         self.settings.graphql_max_complexity)
        if errors:
            status = 403 if errors[0].extensions.get("code") == "FORBIDDEN" else 400
            return Prepared(None, errors, status)
        nul = _NulLiterals()
        visit(document, nul)
        if nul.found is not None:
            return Prepared(None, [GraphQLError(_NUL_MESSAGE, nul.found, extensions={
                "code": "BAD_USER_INPUT"})], 400)
        errors = validate(schema, document, specified_rules, hide_suggestions=not allowed)
        for error in errors:
            # Aborted for the work it needed (not for too many errors): too complex.
            if isinstance(error, ValidationAbortedError) and "limit" not in error.message:
                error.extensions = {"code": "QUERY_TOO_COMPLEX"}
        if errors:
            return _refused(errors)
        return document

    def execute(self, document: DocumentNode, principal: Principal,
                variables: dict[str, Any] | None, operation_name: str | None,
                plans: PlanCache | None = None) -> ExecutionResult:
        def document_cost() -> int:
            operation = get_operation_ast(document, operation_name)
            return next((m.cost for m in limits.measure(
                self.schema.graphql_schema, document, self.cost_tables)
                if m.operation is operation), 0)

        context = RequestContext(principal=principal, cost=limits.CostMeter(
            self.settings.graphql_max_complexity, document_cost))
        context_class = (plans.context_class(operation_name) if plans is not None
                         else RapportExecutionContext)

        async def run() -> ExecutionResult:
            result = execute(self.schema.graphql_schema, document, context_value=context,
                             variable_values=variables, operation_name=operation_name,
                             execution_context_class=context_class,
                             is_awaitable=is_awaitable,
                             hide_suggestions=not self.introspection_allowed(principal))
            if inspect.isawaitable(result):
                result = await result
            return result  # type: ignore[return-value]

        return run_coroutine(run())


def _refused(errors: list[GraphQLError]) -> Prepared:
    for error in errors:
        if not error.extensions:
            error.extensions = {"code": "GRAPHQL_VALIDATION_FAILED"}
    if any(e.extensions.get("code") == "FORBIDDEN" for e in errors):
        return Prepared(None, list(errors), 403)
    return Prepared(None, list(errors), 400)


_NUL = "\x00"
_NUL_MESSAGE = ("Text may not contain the NUL character (\\u0000): PostgreSQL cannot "
                "store it.")
_UNSTORABLE_MESSAGE = ("Variables may not contain the NUL character (\\u0000) nor NaN or "
                       "Infinity (not JSON; PostgreSQL cannot store them).")
#: Variables nest at most this deep: room for input objects and lists around a payload of
#: MAX_JSON_DEPTH levels, and far below the recursion graphql-core and graphene need to
#: coerce a value (a Python frame or more per level).
MAX_VARIABLES_DEPTH = 2 * MAX_JSON_DEPTH
_TOO_DEEP_MESSAGE = f"Variables may not nest deeper than {MAX_VARIABLES_DEPTH} levels."


def _unstorable(value: Any) -> str | None:
    """Why a request's variables cannot be taken: text with NUL or a lone surrogate, a
    NaN/Infinity (Python's JSON accepts them), or nesting too deep; iterative."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _NUL in item:
                return _UNSTORABLE_MESSAGE
            if has_surrogate(item):
                return SURROGATE_MESSAGE
        elif isinstance(item, float):
            if not math.isfinite(item):
                return _UNSTORABLE_MESSAGE
        elif isinstance(item, (dict, list)):
            if depth > MAX_VARIABLES_DEPTH:
                return _TOO_DEEP_MESSAGE
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


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
    if not ours and is_statement_timeout(original):
        timed_out: dict[str, Any] = {
            "message": "A database statement ran longer than the time limit of a request "
                       "(RAPPORT_STATEMENT_TIMEOUT_MS); ask for less (a narrower filter, a "
                       "shorter period) or run it as a job.",
            "extensions": {"code": "STATEMENT_TIMEOUT"}}
        if error.path:
            timed_out["path"] = error.path
        return timed_out
    if isinstance(original, DecryptionError):
        log.error("GraphQL execution failed at %s: %s", error.path, original)
        undecryptable: dict[str, Any] = {"message": DECRYPTION_MESSAGE,
                                         "extensions": {"code": DECRYPTION_FAILED}}
        if error.path:
            undecryptable["path"] = error.path
        return undecryptable
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


def _operation_label(operation: OperationDefinitionNode | None) -> str | None:
    """What the audit log calls the request: its operation name, else its first root
    field (``createCustomer``)."""
    if operation is None:
        return None
    if operation.name is not None:
        return operation.name.value
    for selection in operation.selection_set.selections:
        if isinstance(selection, FieldNode):
            return selection.name.value
    return None


def _errors(status: int, code: str, message: str) -> tuple[Response, int]:
    metrics.graphql_errors((code,))
    return error_response(status, code, message)


def service() -> GraphQLService:
    return current_app.extensions["rapport_graphql"]  # type: ignore[no-any-return]


@blueprint.route("/graphql", methods=["GET", "POST"])
def graphql_endpoint() -> Any:
    metrics.graphql_request()
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
        return _errors(exc.status, exc.code, exc.message)

    # Werkzeug refuses a Content-Length over its maximum; a chunked body it stops reading
    # at the maximum, without telling: one byte more than ours shows it was longer.
    request.max_content_length = settings.max_body_bytes + 1
    try:
        too_large = len(request.get_data(cache=True)) > settings.max_body_bytes
    except RequestEntityTooLarge:
        too_large = True
    if too_large:
        return _errors(413, "PAYLOAD_TOO_LARGE",
                       f"The body is larger than {settings.max_body_bytes:,} bytes "
                       f"(RAPPORT_MAX_BODY_BYTES); send fewer or smaller requests.")
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
    problem = _unstorable(variables)
    if problem is not None:
        return _errors(400, "BAD_USER_INPUT", problem)
    if limits.oversized_list(variables):
        return _errors(400, "BAD_USER_INPUT", limits.list_too_long_message("'variables'"))
    # Anywhere in the document (a literal, a comment): it cannot be encoded to be hashed,
    # logged or stored.
    if has_surrogate(body["query"]) or (operation_name and has_surrogate(operation_name)):
        return _errors(400, "BAD_USER_INPUT", SURROGATE_MESSAGE)

    graphql = service()
    prepared = graphql.prepare(body["query"], principal)
    if prepared.document is None:
        metrics.graphql_operation("invalid", None)
        errors = [format_error(e) for e in prepared.errors]
        metrics.graphql_errors(e["extensions"]["code"] for e in errors)
        return jsonify(errors=errors), prepared.status
    operation = get_operation_ast(prepared.document, operation_name)
    read_only = (operation is not None and operation.operation is OperationType.QUERY
                 and begin_read_only())  # no BEGIN/ROLLBACK round trips (core.connections)
    metrics.graphql_operation(operation.name.value if operation and operation.name else None,
                              operation.operation.value if operation else None)
    with context.use(actor=principal.actor, operation=_operation_label(operation),
                     request_id=context.sane_request_id(request.headers.get("X-Request-Id"))):
        result = graphql.execute(prepared.document, principal, variables, operation_name,
                                 prepared.plans)
    if read_only:
        release_read_only()
    payload: dict[str, Any] = {}
    if result.errors:
        payload["errors"] = [format_error(e) for e in result.errors]
        metrics.graphql_errors(e["extensions"]["code"] for e in payload["errors"])
    payload["data"] = result.data
    return json_response(payload), 200


@blueprint.after_request
def cors(response: Response) -> Response:
    origin = request.headers.get("Origin")
    if origin and origin in rapport().settings.cors_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Headers"] = \
            "Authorization, Content-Type, X-Rapport-Agent, X-Request-Id"
        response.headers["Access-Control-Allow-Methods"] = "POST, GET, OPTIONS"
        # A browser app can then quote the request id when it reports a failure, and
        # slow down before its key's rate limit refuses it.
        response.headers["Access-Control-Expose-Headers"] = (
            "X-Request-Id, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, "
            "X-RateLimit-Reset")
    return response
