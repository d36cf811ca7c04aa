"""Adversarial documents: how long Rapport takes to refuse each family, at its largest size.

For each family of hostile request (issue "Trust", part 2) the benchmark builds the
largest instance that fits under the body limit (RAPPORT_MAX_BODY_BYTES, 1 MiB) and, where
the token limit refuses that at once, also the largest instance under the token limit
(which the cost analysis then has to measure). It times the whole POST /graphql through
the test client with an admin API key (authentication, body read, parse, our limits,
standard validation, answer), with the document cache bypassed (each document is
prepared again, as a stream of distinct hostile documents would be), and prints the code
of the answer and the median and 90th percentile.

Goal: each refusal in under 50 ms (median). SQLite, every installed plugin.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

from bench import common

NAME = "adversarial"
REPEAT = int(os.environ.get("RAPPORT_BENCH_REPEAT", "15"))
GOAL_MS = 50.0
BODY_LIMIT = 1_048_576


def _fill(make: Callable[[int], str], budget: int) -> tuple[str, int]:
    """The largest ``make(n)`` whose JSON body fits ``budget`` bytes (binary search)."""
    low, high = 1, 1
    while len(_body(make(high))) <= budget:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if len(_body(make(middle))) <= budget:
            low = middle
        else:
            high = middle
    return make(low), low


def _body(query: str, variables: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"query": query, "variables": variables}).encode()


def fan_out(levels: int) -> str:
    parts = ["{ customers { edges { node { ...F0 } } } }"]
    parts += [f"fragment F{i} on Customer {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)]
    parts.append(f"fragment F{levels} on Customer {{ id }}")
    return "\n".join(parts)


def aliased_fan_out(levels: int) -> str:
    parts = ['{ node(id: "SW50ZXJhY3Rpb246MQ==") { ...F0 } }']
    parts += [f"fragment F{i} on Interaction {{ a: refersTo {{ ...F{i + 1} }} "
              f"b: refersTo {{ ...F{i + 1} }} }}" for i in range(levels)]
    parts.append(f"fragment F{levels} on Interaction {{ id }}")
    return "\n".join(parts)


def aliases(field: str) -> Callable[[int], str]:
    return lambda n: "{ " + " ".join(f"a{i}: {field}" for i in range(n)) + " }"


def repeated(n: int) -> str:
    return "{ customers(first: 1) { edges { node { " + "id " * n + "} } } }"


DEEP_SCHEMA = ("__schema { types { name fields { name args { name type { name ofType { name "
               "} } } type { name ofType { name ofType { name } } } } } }")


def _tokens(query: str) -> int:
    from graphql import Source
    from graphql.language.lexer import Lexer, TokenKind

    lexer, count = Lexer(Source(query)), 0
    while lexer.advance().kind != TokenKind.EOF:
        count += 1
    return count


def _under_tokens(make: Callable[[int], str], limit: int) -> tuple[str, int]:
    """The largest ``make(n)`` with at most ``limit`` tokens (binary search)."""
    low, high = 1, 2
    while _tokens(make(high)) <= limit:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if _tokens(make(middle)) <= limit:
            low = middle
        else:
            high = middle
    return make(low), low


def main(argv: list[str] | None = None) -> None:
    from api import limits
    from core.auth import create_api_key

    folder = tempfile.mkdtemp(prefix="rapport-bench-adversarial-")
    app = common.make_app(f"sqlite:///{folder}/bench.db", plugins=common.ALL_PLUGINS)
    with app.app_context():
        _, token = create_api_key("bench", ["admin"], rate_limit="unlimited")
    client = app.test_client()
    service = app.extensions["rapport_graphql"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    budget = BODY_LIMIT - 64
    cases: list[tuple[str, str, bytes]] = []

    def add(family: str, size: str, body: bytes) -> None:
        cases.append((family, size, body))

    for family, make in [
        ("fragment fan-out", fan_out),
        ("aliased fan-out (doubling objects)", aliased_fan_out),
        ("alias flood: __typename", aliases("__typename")),
        ("alias flood: totalCount", aliases("customers(first: 0) { totalCount }")),
        ("alias flood: search totalCount",
         aliases('customers(first: 0, filter: {search: "a"}) { totalCount }')),
        ("deep introspection aliases", aliases(DEEP_SCHEMA)),
        ("one field repeated", repeated),
    ]:
        query, n = _fill(make, budget)
        add(family, f"n={n:,} (body limit)", _body(query))
        query, n = _under_tokens(make, limits.MAX_TOKENS)
        add(family, f"n={n:,} (token limit)", _body(query))
    add("fragment fan-out", "30 levels", _body(fan_out(30)))

    cities = [f"c{i}" for i in range(10_000)]
    add("10,000-item list (variables)", "10,000 items", _body(
        "query($f: CustomerFilterInput) { customers(filter: $f) { totalCount } }",
        {"f": {"city": cities}}))
    literal, n = _fill(lambda k: "{ customers(filter: {city: [" + ",".join(
        f'"c{i}"' for i in range(k)) + "]}) { totalCount } }", budget)
    add("long list (literal)", f"{n:,} items", _body(literal))
    nested: Any = "x"
    for _ in range(400):
        nested = {"a": [nested]}
    add("deeply nested variables", "800 levels", _body(
        "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) "
        "{ customer { id } } }", {"input": {"name": "x", "attributes": nested}}))
    add("deeply nested literal", "300 levels", _body(
        'mutation { createCustomer(input: {name: "x", attributes: '
        + "{a: " * 300 + "1" + "}" * 300 + "}) { customer { id } } }"))
    add("body over the limit", "1 MiB + 1", _body("{ plugins { name } }" + " " * BODY_LIMIT))

    rows = []
    for family, size, body in cases:
        outcome: dict[str, Any] = {}

        def run() -> None:
            with service._lock:
                service._cache.clear()
                service._cache_bytes = 0
            response = client.post("/graphql", data=body, headers=headers)
            payload = response.get_json()
            errors = payload.get("errors") or [{}]
            outcome["answer"] = (f"{response.status_code} "
                                 f"{errors[0].get('extensions', {}).get('code', 'ok')}")
            outcome["cost"] = errors[0].get("extensions", {}).get("cost", "")

        timing = common.timeit(run, repeat=REPEAT, warmup=2)
        rows.append([family, size, f"{len(body) / 1024:,.0f}", outcome["answer"],
                     f"{outcome['cost']:.3g}" if outcome["cost"] != "" else "",
                     timing.median_ms, timing.p90_ms,
                     common.verdict(timing.median_ms, GOAL_MS)])
    common.print_table(
        ["family", "size", "KiB", "answer", "cost", "median ms", "p90 ms", f"< {GOAL_MS:.0f} ms"],
        rows, title=f"Refusing adversarial requests (POST /graphql, SQLite, all plugins, "
                    f"{REPEAT} runs, cache bypassed)")


if __name__ == "__main__":
    main()
