"""A schema-driven fuzz run: queries and mutations generated from the app's own schema
(hypothesis-graphql), sent in-process through the Flask test client with an admin key and
with one key per single scope, against a database seeded with demo data of every plugin.

It fails on any 5xx, any exception escaping the view and any INTERNAL_SERVER_ERROR. Every
other answer (a typed error, FORBIDDEN, QUERY_TOO_COMPLEX, data) is what a server owes a
client that sends nonsense.

In ``make test`` the run is derandomized (the same documents every time) and stops
sending after ``RAPPORT_FUZZ_SECONDS`` (default 20) per database: a regression check on
the same documents. ``make fuzz`` is the search: it runs long (600 s per database) with a
random seed (``RAPPORT_FUZZ_SEED`` replays one; the seed is printed).
"""

from __future__ import annotations

import logging
import os
import random
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import graphql
import pytest
from flask import Flask
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis_graphql import from_schema, nodes

from core.demo import generate_demo
from core.ids import global_id
from core.plugins import builtin_plugin_names
from rapport_referrals.service import record_referral
from tests.conftest import AppFactory, admin_token

#: Seconds of generating and sending per database (seeding the data comes before, about
#: 4 s): the run stops when they are spent, so a slow machine sends fewer documents
#: instead of taking longer.
BUDGET = float(os.environ.get("RAPPORT_FUZZ_SECONDS") or 20)
LONG_RUN = "RAPPORT_FUZZ_SECONDS" in os.environ
#: More examples than any budget lets through: time, not a count, ends a run.
EXAMPLES = 1_000_000
#: Rows per type whose global ids the generator uses (demo data has at least this many of
#: most types), so ``node``, updates and transitions reach real objects.
IDS_PER_TYPE = 4

# Words the domain validates (kinds, currencies, statuses, vocabularies): random text alone
# rarely passes validation, and what lies behind validation is what is worth reaching.
VOCABULARY = [
    "purchase", "refund", "call", "email", "visit", "service", "chat", "note", "USD", "EUR",
    "JPY", "ada@example.com", "+33 1 23 45 67 89", "Paris", "FR", "web", "demo", "nps",
    "csat", "satisfaction", "delivery", "product", "billing", "phone", "store", "vip",
    "gold", "name", "email_domain", "number", "text", "boolean", "date", "category",
    "varimax", "oblimin", "month", "year", "admin", "customers:read", "loyalty:write",
    "", " ", "0", "-1", "1e400", "NaN", "x" * 300,
]
DATES = ["2024-01-31", "2025-06-15", "2026-02-28", "1900-01-01", "9998-12-31", "0001-01-01",
         "9999-12-31", "2024-02-30", "yesterday", ""]
DATETIMES = ["2025-06-15T10:00:00Z", "2026-01-01T00:00:00+05:00", "2024-02-29T23:59:59",
             "0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00", "1900-01-01T00:00:00Z",
             "2025-13-01T00:00:00Z", "now"]
DECIMALS = ["0", "1", "12.50", "-3", "0.001", "99999999999999.99", "1e400", "NaN",
            "Infinity", "-0", "abc"]


def _json_values() -> st.SearchStrategy[graphql.ValueNode]:
    scalars = st.one_of(
        st.sampled_from(VOCABULARY).map(nodes.String), st.integers(-2**70, 2**70).map(nodes.Int),
        st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
        st.booleans().map(nodes.Boolean), st.just(nodes.Null))
    return st.recursive(scalars, lambda children: st.one_of(
        st.lists(children, max_size=4).map(nodes.List),
        st.lists(st.tuples(st.sampled_from(["a", "b", "kind", "amount", "note", "x_1"]),
                           children), max_size=4, unique_by=lambda pair: pair[0])
        .map(lambda pairs: nodes.Object([
            graphql.ObjectFieldNode(name=graphql.NameNode(value=name), value=value)
            for name, value in pairs]))), max_leaves=12)


def _custom_scalars(schema: graphql.GraphQLSchema, ids: list[str]
                    ) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    text = st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=40)).map(nodes.String)
    known: dict[str, st.SearchStrategy[graphql.ValueNode]] = {
        "ID": st.one_of(st.sampled_from(ids), st.sampled_from(VOCABULARY),
                        st.text(max_size=20)).map(nodes.String),
        "String": text,
        "Date": st.one_of(st.sampled_from(DATES).map(nodes.String),
                          st.dates().map(lambda d: nodes.String(d.isoformat()))),
        "DateTime": st.one_of(st.sampled_from(DATETIMES).map(nodes.String),
                              st.datetimes().map(lambda d: nodes.String(d.isoformat()))),
        "Decimal": st.one_of(st.sampled_from(DECIMALS).map(nodes.String),
                             st.integers(-10**20, 10**20).map(nodes.Int),
                             st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float)),
        "GenericScalar": _json_values(),
    }
    builtin = {"Int", "Float", "Boolean"}
    scalars = [name for name, type_ in schema.type_map.items()
               if isinstance(type_, graphql.GraphQLScalarType) and not name.startswith("__")
               and name not in builtin]
    # A scalar a helper adds later is fuzzed as JSON until someone gives it its own values.
    return {name: known.get(name, _json_values()) for name in scalars}


def _plain_values(ids: list[str]) -> dict[str, st.SearchStrategy[Any]]:
    """JSON values for variables, by scalar name: what a client's JSON can carry, hostile
    text included (lone surrogates, NUL, any code point)."""
    hostile_text = st.one_of(st.sampled_from(VOCABULARY),
                             st.text(st.characters(codec=None), max_size=30))
    json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                          hostile_text)
    json = st.recursive(json_leaf, lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(hostile_text, children, max_size=3)), max_leaves=10)
    return {
        "String": hostile_text, "ID": st.one_of(st.sampled_from(ids), hostile_text),
        "Int": st.one_of(st.integers(-5, 200), st.integers(-2**70, 2**70), hostile_text),
        "Float": st.one_of(st.floats(), st.integers()),
        "Boolean": st.one_of(st.booleans(), st.sampled_from([0, "true"])),
        "Date": st.one_of(st.sampled_from(DATES), st.dates().map(lambda d: d.isoformat())),
        "DateTime": st.one_of(st.sampled_from(DATETIMES),
                              st.datetimes().map(lambda d: d.isoformat())),
        "Decimal": st.one_of(st.sampled_from(DECIMALS), st.integers(), st.floats()),
        "GenericScalar": json,
    }


def _variables_documents(schema: graphql.GraphQLSchema, ids: list[str]
                         ) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """One root field with every argument passed as a variable: the path where JSON
    values (not document literals) are coerced."""
    leaves = _plain_values(ids)
    json_any = leaves["GenericScalar"]
    cache: dict[str, st.SearchStrategy[Any]] = {}

    def value(type_: graphql.GraphQLInputType) -> st.SearchStrategy[Any]:
        if isinstance(type_, graphql.GraphQLNonNull):
            return inner(type_.of_type)
        return st.one_of(st.none(), inner(type_))

    def inner(type_: graphql.GraphQLInputType) -> st.SearchStrategy[Any]:
        if isinstance(type_, graphql.GraphQLList):
            item = value(type_.of_type)
            return st.one_of(st.lists(item, max_size=3), item)
        if isinstance(type_, graphql.GraphQLEnumType):
            return st.one_of(st.sampled_from(sorted(type_.values)), st.sampled_from(VOCABULARY))
        if isinstance(type_, graphql.GraphQLInputObjectType):
            if type_.name not in cache:
                cache[type_.name] = st.deferred(lambda: st.fixed_dictionaries(
                    {name: value(f.type) for name, f in type_.fields.items()
                     if isinstance(f.type, graphql.GraphQLNonNull)},
                    optional={name: value(f.type) for name, f in type_.fields.items()
                              if not isinstance(f.type, graphql.GraphQLNonNull)}))
            return cache[type_.name]
        return leaves.get(type_.name, json_any)

    def document(root: graphql.GraphQLObjectType, kind: str) -> list[Any]:
        made = []
        for name, root_field in sorted(root.fields.items()):
            if not root_field.args:
                continue
            declared = ", ".join(f"${arg}: {arg_field.type}"
                                 for arg, arg_field in root_field.args.items())
            passed = ", ".join(f"{arg}: ${arg}" for arg in root_field.args)
            target = graphql.get_named_type(root_field.type)
            selection = "" if graphql.is_leaf_type(target) else " { __typename }"
            text = f"{kind}({declared}) {{ {name}({passed}){selection} }}"
            made.append(st.fixed_dictionaries(
                {arg: value(arg_field.type) for arg, arg_field in root_field.args.items()}
            ).map(lambda variables, text=text: (text, variables)))
        return made

    roots = [*document(schema.query_type, "query")]
    if schema.mutation_type is not None:
        roots += document(schema.mutation_type, "mutation")
    return st.one_of(roots)


@dataclass
class Failure:
    document: str
    scopes: str
    status: int
    detail: str


@dataclass
class Run:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


class _BudgetSpent(Exception):
    """Ends a hypothesis run once the time budget is spent."""


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def summary(self) -> str:
        lines = []
        for record in self.records:
            exc = record.exc_info[1] if record.exc_info else None
            where = traceback.extract_tb(exc.__traceback__)[-1] if exc and exc.__traceback__ \
                else None
            lines.append(f"{record.getMessage()} [{type(exc).__name__}: {exc} at "
                         f"{where.filename}:{where.lineno}]" if where else record.getMessage())
        return " | ".join(lines)


@pytest.fixture
def fuzz_app(make_app: AppFactory) -> Iterator[Flask]:
    # Every plugin, and no rate limit: a 429 is not what this run looks for.
    app = make_app(enabled=[*builtin_plugin_names(), "referrals"],
                   RAPPORT_RATE_LIMIT="unlimited")
    with app.app_context():
        generate_demo(24, seed=7)
        # the example plugin has no demo data of its own
        record_referral({"referrer_id": 1, "referred_id": 2})
        record_referral({"referrer_id": 1, "referred_id": 3})
    yield app


def _keys(app: Flask) -> list[tuple[str, str]]:
    scopes = sorted(app.extensions["rapport"].scopes)
    admin = [("admin", admin_token(app))]
    return admin * len(scopes) + [(scope, admin_token(app, (scope,))) for scope in scopes]


def _ids(schema: graphql.GraphQLSchema) -> list[str]:
    node = schema.get_type("Node")
    types = [name for name, type_ in schema.type_map.items()
             if isinstance(type_, graphql.GraphQLObjectType) and node in type_.interfaces]
    return [global_id(name, pk) for name in types for pk in range(1, IDS_PER_TYPE + 1)]


def _check(app: Flask, run: Run, captured: _Captured, request: tuple[str, Any],
           scopes: str, token: str) -> None:
    document, variables = request
    if variables is not None:
        document = f"{document}\n# variables: {variables!r}"
    captured.records.clear()
    try:
        response = app.test_client().post(
            "/graphql", json={"query": request[0], "variables": variables},
            headers={"Authorization": f"Bearer {token}"})
    except Exception as exc:  # noqa: BLE001 - an exception escaping the view is the finding
        run.failures.append(Failure(document, scopes, 500, f"{type(exc).__name__}: {exc}"))
        return
    run.sent += 1
    run.statuses[response.status_code] = run.statuses.get(response.status_code, 0) + 1
    body = response.get_json(silent=True) or {}
    codes = [e.get("extensions", {}).get("code") for e in body.get("errors", [])]
    if response.status_code >= 500 or "INTERNAL_SERVER_ERROR" in codes:
        run.failures.append(Failure(document, scopes, response.status_code,
                                    captured.summary() or str(body)[:500]))


def _report(run: Run, elapsed: float, seed_used: int | None) -> str:
    distinct: dict[str, Failure] = {}
    for failure in run.failures:
        distinct.setdefault(failure.detail.split(" | ")[0][:200], failure)
    lines = [f"{run.sent} requests in {elapsed:.1f} s, statuses {run.statuses}, "
             f"seed {seed_used if seed_used is not None else 'derandomized'}: "
             f"{len(run.failures)} internal errors, {len(distinct)} distinct"]
    for failure in list(distinct.values())[:15]:
        lines.append(f"- [{failure.scopes}] {failure.status} {failure.detail}\n  "
                     f"{' '.join(failure.document.split())[:1500]}")
    return "\n".join(lines)


# graphql-core drops the sibling coroutines of a field whose error nulls their parent;
# Python warns for each, which says nothing about the server's answers.
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_fuzz_the_schema(fuzz_app: Flask, dialect: str, capsys: Any) -> None:
    schema = fuzz_app.extensions["rapport_graphql"].schema.graphql_schema
    keys = _keys(fuzz_app)
    ids = _ids(schema)
    # Half literal documents (any selection, arguments inline), half one root field with
    # its arguments as variables.
    documents = st.one_of(
        from_schema(schema, custom_scalars=_custom_scalars(schema, ids), allow_x00=False)
        .map(lambda document: (document, None)),
        _variables_documents(schema, ids))
    run = Run()
    captured = _Captured()
    logging.getLogger("rapport").addHandler(captured)
    start = time.monotonic()
    seed_used: int | None = None

    def one_batch(batch_seed: int | None) -> None:
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  derandomize=batch_seed is None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(document=documents, key=st.sampled_from(keys))
        def send(document: tuple[str, Any], key: tuple[str, str]) -> None:
            if time.monotonic() - start >= BUDGET:
                raise _BudgetSpent
            _check(fuzz_app, run, captured, document, *key)

        if batch_seed is not None:
            send = seed(batch_seed)(send)
        try:
            send()
        except _BudgetSpent:
            pass

    try:
        if not LONG_RUN and "RAPPORT_FUZZ_SEED" not in os.environ:
            one_batch(None)
        else:
            seed_used = int(os.environ.get("RAPPORT_FUZZ_SEED")
                            or random.SystemRandom().randrange(2**32))
            batches = random.Random(seed_used)
            while time.monotonic() - start < BUDGET:
                one_batch(batches.randrange(2**32))
    finally:
        logging.getLogger("rapport").removeHandler(captured)
    report = _report(run, time.monotonic() - start, seed_used)
    with capsys.disabled():
        print(f"\nfuzz [{dialect}]: {report.splitlines()[0]}")
    assert not run.failures, report
    # Every key is valid and nothing limits the rate: a 401 or 429 means the run tested
    # nothing (its keys were lost), not that the server is sound.
    assert run.statuses.get(200, 0) > run.sent // 2, report
    assert not {401, 429} & set(run.statuses), report
