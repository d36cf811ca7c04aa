"""Keyset pagination: page 1 vs page 1,000 of ``customers(first: 50)`` over 100,000 rows.

The customers are loaded with COPY on PostgreSQL (several customers share each
created_at second and many share a name, so the id tie-breaker matters). For each order
(CREATED_AT, NAME) the benchmark follows the cursors once from page 1 to page 999, checks
page 1,000 against an OFFSET query, then times page 1 against page 1,000 (``after`` =
page 999's endCursor) through /graphql with an admin API key, interleaved.

Goal: page 1,000 median / page 1 median <= 1.2.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from typing import Any

from flask import Flask
from graphql_relay import from_global_id
from sqlalchemy import event, func, select

from bench import common

NAME = "pagination"
ROWS = int(os.environ.get("RAPPORT_BENCH_PAGINATION_ROWS", "100000"))
PAGE = 50
TARGET_PAGE = 1000
REPEAT = int(os.environ.get("RAPPORT_BENCH_REPEAT", "50"))
RATIO_GOAL = 1.2

QUERY = """
query Page($after: String, $order: CustomerOrder) {
  customers(first: %d, after: $after, orderBy: $order) {
    edges { node { id name } }
    pageInfo { endCursor hasNextPage }
  }
}""" % PAGE

_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia",
          "Ken", "Margaret", "Dennis", "Hedy", "Tim", "Sophie", "Linus", "Katherine", "Niklaus"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus",
         "Perlman", "Thompson", "Hamilton", "Ritchie", "Lamarr", "Berners-Lee", "Wilson",
         "Torvalds", "Johnson", "Wirth", "Müller", "Øberg", "de la Cruz", "O'Neil"]


def seed(app: Flask) -> float:
    """COPY ``ROWS`` customers; returns rows per second."""
    from core.crypto import keyring
    from core.db import db
    from core.services.customers import normalise_name

    rnd = random.Random(1000)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    columns = ("name", "email", "name_normalized", "email_blind_index", "attributes",
               "lifecycle_stage", "status", "created_at", "updated_at")
    # COPY bypasses the column type: encrypt as the app would, so rows are as wide.
    keys = keyring(app)
    began = time.perf_counter()
    with app.app_context():
        raw = db.engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                with cursor.copy(f"COPY customers ({', '.join(columns)}) FROM STDIN") as copy:
                    for i in range(ROWS):
                        name = f"{rnd.choice(_FIRST)} {rnd.choice(_LAST)}"
                        if i % 97 == 0:
                            name = None  # some customers have no name: sorted as ''
                        email = f"c{i}@example.com"
                        # Imports stamp many rows with the same second: 8 per timestamp.
                        created = start + dt.timedelta(seconds=i // 8)
                        copy.write_row((name, keys.encrypt(email), normalise_name(name),
                                        keys.blind_index("email", email), "{}",
                                        "customer", "active", created, created))
            raw.commit()
        finally:
            raw.close()
        common.analyze(db.engine)
    return ROWS / (time.perf_counter() - began)


def _plan(app: Flask, statement: str, parameters: Any) -> str:
    """The node types of the customers query's plan, e.g. 'Limit > Index Scan (ix_...)'."""
    from core.db import db

    with app.app_context():
        conn = db.engine.raw_connection()
        try:
            with conn.cursor() as cursor:
                cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
                plan = cursor.fetchone()[0][0]["Plan"]
        finally:
            conn.close()
    parts = []
    while plan:
        label = plan["Node Type"]
        if plan.get("Index Name"):
            label += f" ({plan['Index Name']})"
        parts.append(label)
        plan = (plan.get("Plans") or [None])[0]
    return " > ".join(parts)


def measure(app: Flask, order: str, secret: str) -> list[Any]:
    from core.db import db
    from core.models import Customer

    client = app.test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    variables: dict[str, Any] = {"order": {"field": order, "direction": "ASC"}}

    def page(after: str | None) -> dict[str, Any]:
        response = client.post("/graphql", headers=headers, json={
            "query": QUERY, "variables": {**variables, "after": after}})
        body = response.get_json()
        assert response.status_code == 200 and "errors" not in body, body
        return body["data"]["customers"]  # type: ignore[no-any-return]

    walk_started = time.perf_counter()
    cursor = None
    for _ in range(TARGET_PAGE - 1):
        data = page(cursor)
        assert data["pageInfo"]["hasNextPage"]
        cursor = data["pageInfo"]["endCursor"]
    walk = time.perf_counter() - walk_started

    # Honesty check: page 1,000 by cursor is page 1,000 by OFFSET.
    sort = {"CREATED_AT": Customer.created_at,
            "NAME": func.coalesce(Customer.name_normalized, "")}[order]
    with app.app_context():
        expected = db.session.scalars(select(Customer.id).order_by(sort, Customer.id).offset(
            (TARGET_PAGE - 1) * PAGE).limit(PAGE)).all()
        db.session.remove()
    got = [int(from_global_id(e["node"]["id"])[1]) for e in page(cursor)["edges"]]
    assert got == list(expected), f"page {TARGET_PAGE} by cursor differs from OFFSET"

    engine = common.engine_of(app)
    plans = {}
    for label, after in (("first", None), ("last", cursor)):
        captured: list[tuple[str, Any]] = []

        def capture(conn: Any, cur: Any, statement: str, parameters: Any, *args: Any) -> None:
            if "FROM customers" in statement and "LIMIT" in statement:
                captured.append((statement, parameters))

        event.listen(engine, "before_cursor_execute", capture)
        try:
            page(after)
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        plans[label] = _plan(app, *captured[-1])

    timings = common.compare({"first": lambda: page(None), "last": lambda: page(cursor)},
                             repeat=REPEAT, warmup=3)
    first, last = timings["first"], timings["last"]
    r = common.ratio(last.median, first.median)
    return [order, first.median_ms, first.p90_ms, last.median_ms, last.p90_ms, r,
            common.verdict(r, RATIO_GOAL), walk / (TARGET_PAGE - 1) * 1000,
            plans["first"], plans["last"]]


def main() -> None:
    print(__doc__.strip().splitlines()[0])
    rows = []
    with common.fresh_database(NAME) as url:
        app = common.make_app(url, plugins=common.ALL_PLUGINS)
        try:
            rate = seed(app)
            print(f"{ROWS:,} customers loaded with COPY at {rate:,.0f} rows/s; plugins: "
                  f"{', '.join(common.enabled_plugins(app))}; {REPEAT} timed requests per "
                  f"page, interleaved.\n")
            secret = common.admin_key(app)
            for order in ("CREATED_AT", "NAME"):
                rows.append(measure(app, order, secret))
        finally:
            common.dispose(app)
    common.print_table(
        ["orderBy", "page 1 ms", "p90", f"page {TARGET_PAGE:,} ms", "p90", "ratio",
         f"<= {RATIO_GOAL}", "walk ms/page"],
        [row[:8] for row in rows])
    for row in rows:
        print(f"plan {row[0]}: page 1: {row[8]}; page {TARGET_PAGE:,}: {row[9]}")


if __name__ == "__main__":
    main()
