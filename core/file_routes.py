"""``POST /files`` (upload a job's input) and ``GET /files/<token>`` (download by signed link).

An upload is streamed (never held in memory whole) and encrypted as it comes
(``core.files``), limited to RAPPORT_MAX_UPLOAD_BYTES, and needs the write scope of the job
kind it is for (``?kind=core.import_customers``).
The answer carries the file id to pass as the job's ``file`` parameter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request, stream_with_context

from core import context, files, jobs
from core.auth import AuthError, authenticate
from core.crypto import DecryptionError
from core.errors import UserError
from core.http import error_response
from core.services import transaction
from core.signing import LinkError

blueprint = Blueprint("rapport_files", __name__)
log = logging.getLogger("rapport.files")


def _body_chunks() -> Iterator[bytes]:
    stream = request.stream
    while chunk := stream.read(1 << 20):
        yield chunk


@blueprint.route("/files", methods=["POST"])
def upload() -> Any:
    try:
        principal = authenticate(request.headers.get("Authorization"), request.remote_addr,
                                 request.headers.get("X-Rapport-Agent"))
    except AuthError as exc:
        return error_response(exc.status, exc.code, exc.message)
    kind_name = request.args.get("kind", "")
    try:
        kind = jobs.kind_of(kind_name)
    except UserError as exc:
        return error_response(400, "BAD_USER_INPUT",
                      f"Name the job the file is for with ?kind=...: {exc.errors[0].message}")
    if not principal.allows(kind.write_scope):
        return error_response(403, "FORBIDDEN",
                              f"This API key lacks the {kind.write_scope} scope.")
    limit = files.max_upload_bytes()
    if request.content_length is not None and request.content_length > limit:
        return error_response(413, "PAYLOAD_TOO_LARGE", f"Files are limited to {limit} bytes.")
    name = request.args.get("name") or request.headers.get("X-File-Name") or "upload"
    content_type = (request.mimetype or "application/octet-stream")
    try:
        with context.use(actor=principal.actor, operation="upload"), transaction():
            row = files.store_stream(name, content_type, _body_chunks(), limit=limit)
    except files.TooLarge:
        return error_response(413, "PAYLOAD_TOO_LARGE", f"Files are limited to {limit} bytes.")
    return jsonify(id=files.file_id(row), name=row.name, size=row.size,
                   sha256=row.sha256), 201


@blueprint.route("/files/<token>", methods=["GET"])
def download(token: str) -> Any:
    try:
        row = files.from_token(token)
    except LinkError as exc:
        return error_response(410 if exc.expired else 404, "LINK_EXPIRED" if exc.expired
                      else "NOT_FOUND", str(exc))
    if row is None:
        return error_response(404, "NOT_FOUND", "This file no longer exists.")
    try:
        chunks = files.read_chunks(row)
    except UserError as exc:  # kept in a shared folder this process does not mount
        return error_response(404, "NOT_FOUND", exc.errors[0].message)
    # The first frame is opened before the answer starts: a key that does not open the
    # file is a DECRYPTION_FAILED error (core.http), not a 200 with a broken body.
    first = next(chunks)

    def stream() -> Iterator[bytes]:
        yield first
        try:
            yield from chunks
        except DecryptionError as exc:
            # Headers are sent: stopping short of Content-Length tells the client.
            log.error("download of %s stopped: %s", files.file_id(row), exc)

    response = Response(stream_with_context(stream()), mimetype=row.content_type)
    response.headers["Content-Length"] = str(row.size)
    # HTTP headers are Latin-1: an ASCII fallback, and the exact name per RFC 6266.
    fallback = row.name.encode("ascii", "replace").decode().replace("?", "_")
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(row.name)}")
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
