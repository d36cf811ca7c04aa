"""One error shape for every route that is not GraphQL.

``{"errors": [{"message": ..., "extensions": {"code": ...}}]}`` with the HTTP status, the
same shape GraphQL's top-level errors have, so a client parses one thing whether a report
link expired, a route does not exist or a body was too large. Flask's HTML error pages
never reach a client.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException

from core.crypto import DecryptionError
from core.errors import UserError

log = logging.getLogger("rapport.http")

#: Codes of the statuses Rapport answers; another status gets ``HTTP_<status>``.
STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "INTERNAL_SERVER_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


#: What a client is told when stored data does not decrypt (the details go to the log).
DECRYPTION_FAILED = "DECRYPTION_FAILED"
DECRYPTION_MESSAGE = ("Stored data could not be decrypted with the server's keys; the "
                      "operator has been told (see the server log).")


_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def json_response(payload: Any) -> Response:
    """``jsonify(payload)``, encoded by orjson: the same JSON with Flask's conversions
    (``Decimal`` and ``UUID`` as strings, dates as HTTP dates, dataclasses as objects) and
    its trailing newline. Differences: text outside ASCII is sent as UTF-8 rather than
    ``\\u`` escapes, and a float Python writes with an exponent (``1e-05``) may be written
    in another form of the same number (``0.00001``). What orjson refuses (a key that is not
    text, an integer over 64 bits, a lone surrogate) and debug mode's indented output go
    through Flask's encoder.
    """
    provider = current_app.json
    if not current_app.debug and getattr(provider, "compact", None) is not False:
        try:
            body = orjson.dumps(payload, default=provider.default,  # type: ignore[attr-defined]
                                option=_ORJSON_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError
            pass
        else:
            return current_app.response_class(
                body + b"\n", mimetype=provider.mimetype)  # type: ignore[attr-defined]
    return jsonify(payload)


def error_response(status: int, code: str, message: str, **extensions: Any
                   ) -> tuple[Response, int]:
    """The JSON error answer of a non-GraphQL route."""
    return jsonify(errors=[{"message": message,
                            "extensions": {"code": code, **extensions}}]), status


def user_error_response(exc: UserError, status: int = 400) -> tuple[Response, int]:
    """A ``UserError`` (bad input to a route) in the same shape, one error per field."""
    return jsonify(errors=[{"message": e.message,
                            "extensions": {"code": e.code, "field": e.field}}
                           for e in exc.errors]), status


def _http_error(exc: HTTPException) -> Any:
    status = exc.code or 500
    response, _ = error_response(status, STATUS_CODES.get(status, f"HTTP_{status}"),
                                 exc.description or exc.name)
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    for name, value in exc.get_headers():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response, status


def _decryption_error(exc: DecryptionError) -> Any:
    # A server-side fault (a key missing from RAPPORT_ENCRYPTION_KEYS, or data altered at
    # rest), but a known one: the operator's fix is in the log, the client gets its code.
    log.error("Decryption failed: %s", exc)
    return error_response(500, DECRYPTION_FAILED, DECRYPTION_MESSAGE)


def _internal_error(exc: Exception) -> Any:
    log.error("Unhandled error: %s", exc, exc_info=exc)
    return error_response(500, "INTERNAL_SERVER_ERROR", "Internal server error.")


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DecryptionError, _decryption_error)
    app.register_error_handler(Exception, _internal_error)
