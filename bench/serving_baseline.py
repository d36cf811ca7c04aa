"""The hand-written reference service of ``bench serving``: Flask, psycopg 3, plain SQL.

What a developer would write by hand to answer the benchmark's two questions with the
same JSON Rapport gives, as fast as honestly possible, and nothing else: no ORM, no GraphQL,
no plugins. Each request checks the API key the way Rapport does (a lookup of the key's
prefix, a constant-time comparison of the SHA-256 digest of the secret, revoked keys and
keys without the scope refused), then runs plain SQL on one autocommit connection per
worker process (with the same per-statement time limit), decrypts the e-mail addresses
(Fernet, as Rapport stores them) and encodes with orjson.

    GET /customers?first=100&nested=5    the page of customers with their newest interactions
    GET /customer?id=<global id>         one customer's name

It imports nothing from Rapport: the benchmark runs it as
``gunicorn -c python:core.gunicorn_conf bench.serving_baseline:app`` with
``BENCH_DATABASE_URL``, ``RAPPORT_ENCRYPTION_KEYS`` and ``RAPPORT_STATEMENT_TIMEOUT_MS``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from cryptography.fernet import Fernet, MultiFernet
from flask import Flask, Response, request

app = Flask(__name__)

_FERNET = MultiFernet([Fernet(k.strip().encode()) for k in
                       os.environ.get("RAPPORT_ENCRYPTION_KEYS", "").split(",") if k.strip()]
                      or [Fernet(Fernet.generate_key())])
_TIMEOUT_MS = int(os.environ.get("RAPPORT_STATEMENT_TIMEOUT_MS") or 10_000)
#: ISO 4217 minor units where they are not 2 (amounts are stored in 1/10,000ths).
_MINOR_UNITS = {"BHD": 3, "CLP": 0, "IQD": 3, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0,
                "KWD": 3, "LYD": 3, "OMR": 3, "PYG": 0, "TND": 3, "UGX": 0, "VND": 0,
                "XAF": 0, "XOF": 0}
_STORED_UNIT = Decimal(10_000)
_connection: psycopg.Connection[Any] | None = None


def _db() -> psycopg.Connection[Any]:
    """This process's connection (opened again if the server closed it)."""
    global _connection
    if _connection is None or _connection.closed or _connection.broken:
        _connection = psycopg.connect(
            os.environ["BENCH_DATABASE_URL"], autocommit=True,
            options=f"-c TimeZone=UTC -c statement_timeout={_TIMEOUT_MS}")
    return _connection


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload) + b"\n", status=status, mimetype="application/json")


def _refused(status: int, code: str, message: str) -> Response:
    return _json({"errors": [{"message": message, "extensions": {"code": code}}]}, status)


def _key_allows(conn: psycopg.Connection[Any], scope: str) -> Response | None:
    """None if the Authorization header holds a live key with ``scope``, else the refusal."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    parts = token.split("_")
    if scheme.lower() != "bearer" or len(parts) < 3 or parts[0] != "rpk" or "\x00" in token:
        return _refused(401, "UNAUTHENTICATED", "Send 'Authorization: Bearer <api key>'.")
    row = conn.execute("SELECT secret_hash, revoked_at, scopes FROM api_keys WHERE prefix = %s",
                       (parts[1],)).fetchone()
    digest = hashlib.sha256(token.encode()).hexdigest()
    if row is None or not hmac.compare_digest(row[0], digest) or row[1] is not None:
        return _refused(401, "UNAUTHENTICATED", "Unknown or revoked API key.")
    if "admin" not in row[2] and scope not in row[2]:
        return _refused(403, "FORBIDDEN", f"This key lacks the {scope} scope.")
    return None


def _gid(type_name: str, pk: int) -> str:
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode("ascii")


def _amount(stored: int | None, currency: str | None) -> dict[str, str] | None:
    if stored is None or currency is None:
        return None
    places = _MINOR_UNITS.get(currency.upper(), 2)
    value = (Decimal(stored) / _STORED_UNIT).quantize(Decimal(1).scaleb(-places))
    return {"amount": str(value), "currency": currency}


@app.get("/customers")
def customers() -> Response:
    conn = _db()
    refused = _key_allows(conn, "customers:read")
    if refused is not None:
        return refused
    try:
        first = min(max(int(request.args.get("first", 100)), 0), 100)
        nested = min(max(int(request.args.get("nested", 5)), 0), 100)
    except ValueError:
        return _refused(400, "BAD_REQUEST", "first and nested are integers.")
    page = conn.execute("SELECT id, name, email FROM customers ORDER BY created_at, id "
                        "LIMIT %s", (first,)).fetchall()
    ids = [row[0] for row in page]
    # One index range scan per customer (ix_interactions_customer_time), newest first.
    rows = conn.execute(
        "SELECT c.id, i.id, i.kind, i.occurred_at, i.amount, i.currency "
        "FROM unnest(%s::bigint[]) AS c(id) CROSS JOIN LATERAL ("
        " SELECT id, kind, occurred_at, amount, currency FROM interactions"
        " WHERE customer_id = c.id ORDER BY occurred_at DESC, id DESC LIMIT %s) AS i",
        (ids, nested)).fetchall()
    by_customer: dict[int, list[dict[str, Any]]] = {pk: [] for pk in ids}
    for customer_id, pk, kind, occurred_at, amount, currency in rows:
        by_customer[customer_id].append({"node": {
            "id": _gid("Interaction", pk), "kind": kind,
            "occurredAt": occurred_at.isoformat(), "amount": _amount(amount, currency)}})
    return _json({"data": {"customers": {"edges": [{"node": {
        "id": _gid("Customer", pk), "name": name,
        "email": None if email is None else _FERNET.decrypt(email.encode()).decode(),
        "interactions": {"edges": by_customer[pk]},
    }} for pk, name, email in page]}}})


@app.get("/customer")
def customer() -> Response:
    conn = _db()
    refused = _key_allows(conn, "customers:read")
    if refused is not None:
        return refused
    try:
        type_name, _, pk = base64.b64decode(request.args.get("id", ""), validate=True
                                            ).decode().partition(":")
        number = int(pk) if type_name == "Customer" else None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        number = None
    if number is None or not 0 < number < 2**63:
        return _refused(400, "BAD_USER_INPUT", "Not a Customer id.")
    row = conn.execute("SELECT name FROM customers WHERE id = %s", (number,)).fetchone()
    return _json({"data": {"customer": None if row is None else {"name": row[0]}}})


@app.get("/healthz")
def healthz() -> Response:
    return _json({"status": "ok"})
