"""Mutation throughput with the audit log on and off, on PostgreSQL.

Each round sends the same mix of GraphQL mutations through the Flask test client with an
admin API key and every installed plugin enabled: createCustomer, updateCustomer (two
fields, so the entry carries before/after values, one of them an encrypted phone) and
recordInteraction of a purchase (the loyalty plugin earns points on it: a second entry
and event). "On" is the product as shipped: each mutation writes its audit entries,
their object rows and the outbox events in its own transaction. "Off" is the same
process with ``core.changes.suspended_for_benchmark()`` making ``record`` return at once:
everything else (the mutation's transaction, validation, hooks) is unchanged, so the
difference is what the audit log and the outbox cost. A and B rounds are interleaved.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

from bench import common

NAME = "audit"
ROUNDS = int(os.environ.get("RAPPORT_BENCH_AUDIT_ROUNDS", "15"))
CUSTOMERS_PER_ROUND = 10      # 3 mutations each
GOAL = 0.8                    # throughput on / off

CREATE = """mutation($input: CreateCustomerInput!) {
  createCustomer(input: $input) { customer { id } errors { code } } }"""
UPDATE = """mutation($input: UpdateCustomerInput!) {
  updateCustomer(input: $input) { customer { id } errors { code } } }"""
PURCHASE = """mutation($input: RecordInteractionInput!) {
  recordInteraction(input: $input) { interaction { id } errors { code } } }"""


def _writes(statement: str) -> bool:
    """An INSERT, or a statement whose data-modifying CTEs insert (one per audit record)."""
    head = statement.lstrip().upper()
    return head.startswith("INSERT") or (head.startswith("WITH") and "INSERT INTO" in head)


def _round(client: Any, headers: dict[str, str], counter: Any) -> Callable[[], int]:
    def post(query: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = client.post("/graphql", json={"query": query, "variables": variables},
                               headers=headers)
        body = response.get_json()
        if response.status_code != 200 or "errors" in body:
            raise RuntimeError(f"mutation failed: {body}")
        (payload,) = body["data"].values()
        if payload["errors"]:
            raise RuntimeError(f"mutation refused: {payload['errors']}")
        return payload  # type: ignore[no-any-return]

    def run() -> int:
        for _ in range(CUSTOMERS_PER_ROUND):
            n = next(counter)
            customer = post(CREATE, {"input": {
                "name": f"Bench {n}", "email": f"bench{n}@example.com", "city": "Rome",
                "tags": ["bench"]}})["customer"]["id"]
            post(UPDATE, {"input": {"id": customer, "city": "Milan",
                                    "phone": f"+39 02 {n:08d}"}})
            post(PURCHASE, {"input": {"customerId": customer, "kind": "purchase",
                                      "occurredAt": "2026-11-30T10:00:00+00:00",
                                      "amount": "25.00", "currency": "USD"}})
        return CUSTOMERS_PER_ROUND * 3

    return run


def main() -> None:
    from sqlalchemy import func, select

    from core import changes
    from core.db import db
    from core.ratelimit import set_key_rate_limit
    from core.models import AuditEntry, OutboxEvent

    print(__doc__.strip().splitlines()[0])
    print(f"PostgreSQL {common.postgres_version()}; {common.machine()}")
    with common.fresh_database(NAME) as url:
        app = common.make_app(url, plugins=common.ALL_PLUGINS)
        try:
            secret = common.admin_key(app)
            headers = {"Authorization": f"Bearer {secret}"}
            with app.app_context():  # the benchmark's key is exempt from the rate limit
                set_key_rate_limit(secret.split("_")[1], "unlimited")
            counter = itertools.count()
            with app.app_context():
                client = app.test_client()
                on = _round(client, headers, counter)

                def off() -> int:
                    with changes.suspended_for_benchmark():
                        return on()

                with common.count_statements(common.engine_of(app)) as statements:
                    on()
                writes_on = sum(_writes(s) for s in statements)
                audit_on = sum("INSERT INTO audit_entries" in s for s in statements)
                with common.count_statements(common.engine_of(app)) as statements:
                    off()
                writes_off = sum(_writes(s) for s in statements)
                timings = common.compare({"audit on": on, "audit off": off},
                                         repeat=ROUNDS, warmup=2)
                entries = db.session.scalar(select(func.count()).select_from(AuditEntry))
                events = db.session.scalar(select(func.count()).select_from(OutboxEvent))
            mutations = CUSTOMERS_PER_ROUND * 3
            rows = []
            for name, timing in timings.items():
                rows.append([name, timing.median_ms / mutations, timing.p90_ms / mutations,
                             mutations / timing.median])
            ratio = timings["audit off"].median / timings["audit on"].median
            common.print_table(["", "ms / mutation (median)", "p90", "mutations / s"], rows,
                               title=f"{ROUNDS} interleaved rounds of {mutations} mutations, "
                                     f"plugins: {', '.join(common.enabled_plugins(app))}")
            print(f"writing statements per round (INSERT, or WITH ... INSERT): {writes_on} "
                  f"with the audit log, {writes_off} without; {audit_on} of them write audit "
                  f"entries (entry, object rows and events in one statement on PostgreSQL)")
            print(f"audit entries written: {entries}, outbox events: {events}")
            print(f"throughput with the audit log / without: {ratio:.2f}x (goal >= {GOAL}x: "
                  f"{'meets' if ratio >= GOAL else 'MISSES'})")
        finally:
            common.dispose(app)


if __name__ == "__main__":
    main()
