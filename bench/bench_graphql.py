"""Nested GraphQL read vs a hand-written endpoint returning the same JSON.

100 customers with 5 to 8 interactions each on PostgreSQL. The GraphQL side is the real
/graphql view through the Flask test client with an admin API key (authentication,
cached validation with our rules, execution with DataLoaders, error shaping). The
baseline is a plain Flask route on the same app: the same API-key check, then SQLAlchemy
Core with one query for the customers page and one ROW_NUMBER() query for 5 interactions
per customer, the same JSON shape (global ids, ISO datetimes, quantized money) and
``jsonify``. Both payloads are compared once before timing.

Goals: GraphQL median / baseline median <= 2.0; SQL statements of one GraphQL request
<= 3 (the API-key lookup counts). The first line runs with the API plugin only
(RAPPORT_PLUGINS empty); a second line, when it differs, with every installed plugin
enabled (RAPPORT_PLUGINS unset), whose Customer fields and hooks are then in the schema.
A second table times the executor alone: the same request with the compiled plan kept with
the cached document, with the plan built per request, and with graphql-core's executor.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from decimal import Decimal
from typing import Any

from flask import Flask, jsonify, request
from graphql_relay import to_global_id
from sqlalchemy import func, insert, select

from bench import common

NAME = "graphql"
CUSTOMERS = 100
PAGE = 100
INTERACTIONS_PER_CUSTOMER = (5, 8)
NESTED = 5
REPEAT = int(os.environ.get("RAPPORT_BENCH_REPEAT", "50"))
RATIO_GOAL = 2.0
STATEMENTS_GOAL = 3

QUERY = """
query Bench {
  customers(first: %d) {
    edges { node { id name email
      interactions(first: %d) { edges { node { id kind occurredAt amount { amount currency } } } }
    } }
  }
}""" % (PAGE, NESTED)

_KINDS = ["purchase", "call", "email", "visit", "chat", "note", "refund", "service"]
_CURRENCIES = ["USD", "EUR", "JPY", "GBP"]


def seed(app: Flask) -> None:
    """100 customers, 5..8 interactions each (about half of them purchases/refunds)."""
    from core.crypto import keyring
    from core.db import db
    from core.models import Customer, CustomerStatus, Interaction, LifecycleStage

    keys = keyring(app)
    rnd = random.Random(20261123)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    customers = []
    for i in range(CUSTOMERS):
        name = f"Customer {i:03d} {rnd.choice(['Ada', 'Grace', 'Alan', 'Edsger'])}"
        email = f"customer{i}@example.com"
        created = start + dt.timedelta(minutes=7 * i)
        customers.append({
            "name": name, "email": email, "name_normalized": name.lower(),
            "email_blind_index": keys.blind_index("email", email), "attributes": {},
            "status": CustomerStatus.ACTIVE,
            "lifecycle_stage": LifecycleStage.CUSTOMER, "created_at": created,
            "updated_at": created})
    with app.app_context():
        with db.engine.begin() as conn:
            ids = conn.execute(insert(Customer.__table__).returning(
                Customer.__table__.c.id), customers).scalars().all()
            interactions = []
            for customer_id in ids:
                for j in range(rnd.randint(*INTERACTIONS_PER_CUSTOMER)):
                    kind = rnd.choice(_KINDS)
                    monetary = kind in ("purchase", "refund")
                    currency = rnd.choice(_CURRENCIES) if monetary else None
                    amount = (Decimal(rnd.randint(100, 99_999)) / 100 if currency != "JPY"
                              else Decimal(rnd.randint(100, 99_999))) if monetary else None
                    occurred = start + dt.timedelta(days=rnd.randint(0, 600),
                                                    seconds=rnd.randint(0, 86_399))
                    interactions.append({
                        "customer_id": customer_id, "kind": kind, "channel": "web",
                        "occurred_at": occurred, "amount": amount, "currency": currency,
                        "payload": {"n": j}, "recorded_at": occurred})
            conn.execute(insert(Interaction.__table__), interactions)
        common.analyze(db.engine)


def add_baseline_routes(app: Flask) -> None:
    """The hand-written endpoint: API key + two Core queries + jsonify (and a no-auth twin)."""
    from core.auth import require_scope
    from core.db import db
    from core.models import Customer, Interaction
    from core.money import quantize

    customers = Customer.__table__
    interactions = Interaction.__table__

    def payload() -> Any:
        first = min(int(request.args.get("first", PAGE)), 100)
        nested = min(int(request.args.get("nested", NESTED)), 100)
        with db.engine.connect() as conn:
            page = conn.execute(
                select(customers.c.id, customers.c.name, customers.c.email)
                .order_by(customers.c.created_at, customers.c.id).limit(first)).all()
            ids = [row.id for row in page]
            position = func.row_number().over(
                partition_by=interactions.c.customer_id,
                order_by=(interactions.c.occurred_at.desc(), interactions.c.id.desc())
            ).label("position")
            ranked = (select(interactions.c.id, interactions.c.customer_id,
                             interactions.c.kind, interactions.c.occurred_at,
                             interactions.c.amount, interactions.c.currency, position)
                      .where(interactions.c.customer_id.in_(ids)).subquery())
            rows = conn.execute(select(ranked).where(ranked.c.position <= nested).order_by(
                ranked.c.customer_id, ranked.c.position)).all()
        by_customer: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        for r in rows:
            by_customer[r.customer_id].append({"node": {
                "id": to_global_id("Interaction", r.id),
                "kind": r.kind,
                "occurredAt": r.occurred_at.isoformat(),
                "amount": None if r.amount is None else {
                    "amount": str(quantize(r.amount, r.currency)), "currency": r.currency},
            }})
        return jsonify({"data": {"customers": {"edges": [{"node": {
            "id": to_global_id("Customer", c.id), "name": c.name, "email": c.email,
            "interactions": {"edges": by_customer[c.id]},
        }} for c in page]}}})

    @require_scope("customers:read")
    def handwritten() -> Any:
        return payload()

    app.add_url_rule("/bench/customers", "bench_customers", handwritten)
    app.add_url_rule("/bench/customers-noauth", "bench_customers_noauth", payload)


def measure(app: Flask, label: str) -> list[Any]:
    """Check equality once, count statements, time; return the table row."""
    secret = common.admin_key(app)
    headers = {"Authorization": f"Bearer {secret}"}
    client = app.test_client()
    body = {"query": QUERY}

    def graphql() -> Any:
        response = client.post("/graphql", json=body, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response

    def handwritten() -> Any:
        response = client.get("/bench/customers", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response

    def bare() -> Any:
        return client.get("/bench/customers-noauth")

    expected = handwritten().get_json()
    got = graphql().get_json()
    assert "errors" not in got, got["errors"]
    assert got == expected, "GraphQL and the hand-written endpoint disagree"
    assert bare().get_json() == expected
    edges = got["data"]["customers"]["edges"]
    nested = sum(len(e["node"]["interactions"]["edges"]) for e in edges)
    assert len(edges) == CUSTOMERS and nested == CUSTOMERS * NESTED, (len(edges), nested)

    engine = common.engine_of(app)
    graphql()  # the key's last_used_at write happens at most every 5 minutes: keep it out
    with common.count_statements(engine) as statements:
        graphql()
    with common.count_statements(engine) as base_statements:
        handwritten()

    timings = common.compare({"graphql": graphql, "handwritten": handwritten, "bare": bare},
                             repeat=REPEAT, warmup=5)
    g, h, b = timings["graphql"], timings["handwritten"], timings["bare"]
    r = common.ratio(g.median, h.median)
    return [label, g.median_ms, g.p90_ms, h.median_ms, b.median_ms, r,
            common.verdict(r, RATIO_GOAL), len(statements),
            common.verdict(len(statements), STATEMENTS_GOAL), len(base_statements)]


class _Executor:
    """Stands in for a document's ``PlanCache`` in ``GraphQLService.execute``: every
    request runs with ``context_class`` (no plan kept across requests)."""

    def __init__(self, context_class: Any):
        self.cls = context_class

    def context_class(self, operation_name: str | None) -> Any:
        return self.cls


def measure_executors(app: Flask, label: str) -> list[Any]:
    """The same /graphql request three ways, interleaved in one process: as served (the
    compiled plan kept with the cached document), with our execution context building
    its plan per request (how it ran before plans were kept), and with graphql-core's
    own ``ExecutionContext``. Results are compared once; the loaders are the same."""
    from graphql import ExecutionContext

    from api.execution import RapportExecutionContext

    secret = common.admin_key(app)
    headers = {"Authorization": f"Bearer {secret}"}
    client = app.test_client()
    service = app.extensions["rapport_graphql"]
    served = service.execute

    def run_with(executor: Any) -> Any:
        def execute(document: Any, principal: Any, variables: Any, operation_name: Any,
                    plans: Any = None) -> Any:
            return served(document, principal, variables, operation_name,
                          plans if executor is None else executor)

        def request() -> Any:
            service.execute = execute
            try:
                response = client.post("/graphql", json={"query": QUERY}, headers=headers)
            finally:
                service.execute = served
            assert response.status_code == 200, response.get_data(as_text=True)
            return response

        return request

    cases = {"compiled": run_with(None),
             "per-request": run_with(_Executor(RapportExecutionContext)),
             "graphql-core": run_with(_Executor(ExecutionContext))}
    results = [case().get_json() for case in cases.values()]
    assert results[0] == results[1] == results[2], "the executors disagree"
    timings = common.compare(cases, repeat=REPEAT, warmup=5)
    c, p, g = (timings[name] for name in cases)
    return [label, c.median_ms, p.median_ms, g.median_ms,
            common.ratio(c.median, p.median), common.ratio(c.median, g.median)]


def main() -> None:
    print(__doc__.strip().splitlines()[0])
    print(f"{CUSTOMERS} customers x {INTERACTIONS_PER_CUSTOMER[0]}-"
          f"{INTERACTIONS_PER_CUSTOMER[1]} interactions on PostgreSQL; query "
          f"customers(first: {PAGE}) x interactions(first: {NESTED}); {REPEAT} timed "
          f"requests per path, interleaved, after 5 warm-up requests each.\n")
    headers = ["plugins", "graphql ms", "graphql p90", "baseline ms", "no-auth ms",
               "ratio", f"<= {RATIO_GOAL}", "SQL", f"<= {STATEMENTS_GOAL}", "baseline SQL"]
    rows = []
    with common.fresh_database(NAME) as url:
        api_app = common.make_app(url)
        env_app = common.make_app(url, plugins=common.ALL_PLUGINS)
        apps = [("api only", api_app)]
        env_plugins = common.enabled_plugins(env_app)
        if env_plugins != common.enabled_plugins(api_app):
            apps.append((f"all installed ({', '.join(env_plugins)})", env_app))
        try:
            seed(api_app)
            for label, app in apps:
                add_baseline_routes(app)
                rows.append(measure(app, label))
            executor_rows = [measure_executors(app, label) for label, app in apps]
        finally:
            common.dispose(api_app, env_app)
    common.print_table(headers, rows)
    print("ratio = GraphQL median / baseline median; baseline = the hand-written route with "
          "the same API-key check (\"no-auth ms\": the same route without it). SQL = "
          "statements of one GraphQL request, the API-key lookup included.")
    print("\nThe executor alone: the same /graphql request, same loaders, interleaved; the "
          "plan kept with the cached document, built per request, or graphql-core's own "
          "ExecutionContext:")
    common.print_table(["plugins", "compiled plan ms", "plan per request ms",
                        "graphql-core ms", "compiled / per request",
                        "compiled / graphql-core"], executor_rows)


if __name__ == "__main__":
    main()
