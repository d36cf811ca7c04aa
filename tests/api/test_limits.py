"""Every request is bounded before and while it runs: adversarial documents are refused
for what they would cost (asserted as a cost, not a time), bodies and lists have limits,
introspection and suggestions follow RAPPORT_GRAPHQL_INTROSPECTION, statements time out."""

from __future__ import annotations

import io
import json
from typing import Any

import graphene
import pytest
from flask import Flask
from graphql import get_introspection_query, parse
from sqlalchemy import text

from api import limits, scoped
from api import view as graphql_view
from core import hookimpl
from core.auth import authenticate
from core.config import ConfigError, load_settings
from core.db import db
from core.models import Customer
from core.timeouts import is_statement_timeout, statement_timeout
from tests.conftest import AppFactory, GraphQL, admin_token

COUNTING = "customers(first: 0) { totalCount }"
SEARCH_COUNTING = 'customers(first: 0, filter: {search: "ann"}) { totalCount }'


def _error(response: Any) -> tuple[int, dict[str, Any]]:
    body = response.get_json()
    assert body["errors"], body
    return response.status_code, body["errors"][0]


def _too_complex(response: Any) -> dict[str, Any]:
    status, error = _error(response)
    assert (status, error["extensions"]["code"]) == (400, "QUERY_TOO_COMPLEX"), error
    return error["extensions"]  # type: ignore[no-any-return]


def fan_out(levels: int) -> str:
    """Each fragment spreads the next twice."""
    parts = ["{ customers { edges { node { ...F0 } } } }"]
    for i in range(levels):
        parts.append(f"fragment F{i} on Customer {{ ...F{i + 1} ...F{i + 1} }}")
    parts.append(f"fragment F{levels} on Customer {{ id }}")
    return "\n".join(parts)


def aliased_fan_out(levels: int) -> str:
    """Each fragment spreads the next inside two aliased objects: the answer really doubles
    at each level."""
    parts = ['{ node(id: "SW50ZXJhY3Rpb246MQ==") { ...F0 } }']
    for i in range(levels):
        parts.append(f"fragment F{i} on Interaction {{ a: refersTo {{ ...F{i + 1} }} "
                     f"b: refersTo {{ ...F{i + 1} }} }}")
    parts.append(f"fragment F{levels} on Interaction {{ id }}")
    return "\n".join(parts)


# --- Fragment fan-out -------------------------------------------------------------------


@pytest.mark.parametrize("levels", [12, 20, 30])
def test_fragment_fan_out_is_refused_for_its_cost(app: Flask, gql: GraphQL,
                                                  levels: int) -> None:
    extensions = _too_complex(gql.raw(fan_out(levels)))
    # customers (1 + a page query) + edges (1) + 20 nodes x (node + 2^levels ids)
    assert extensions["cost"] == 1 + limits.PAGE_QUERY_COST + 1 + 20 * (1 + 2 ** levels)


def test_fragment_fan_out_within_the_limit_runs(app: Flask, gql: GraphQL) -> None:
    assert gql(fan_out(10)) == {"customers": {"edges": []}}


@pytest.mark.parametrize("levels", [15, 30])
def test_aliased_fan_out_that_really_doubles_is_refused(app: Flask, gql: GraphQL,
                                                        levels: int) -> None:
    extensions = _too_complex(gql.raw(aliased_fan_out(levels)))
    # node, then 2^i objects at level i, then 2^levels ids
    assert extensions["cost"] == 1 + sum(2 ** i for i in range(1, levels + 1)) + 2 ** levels


def test_analysis_is_linear_in_the_document(app: Flask) -> None:
    """A chain of 1,500 fragments (deeper than Python recurses) fanning out twice each:
    summarised fragment by fragment, it comes back at once, its cost saturated."""
    schema = app.extensions["rapport_graphql"].schema.graphql_schema
    tables = app.extensions["rapport_graphql"].cost_tables
    assert limits.measure(schema, parse(fan_out(1_500)), tables)[0].cost == \
        limits.MAX_COUNTED_COST
    assert limits.measure(schema, parse(fan_out(40)), tables)[0].cost == \
        1 + limits.PAGE_QUERY_COST + 1 + 20 * (1 + 2 ** 40)
    # Averages (introspection) times an exponential fan-out stay finite.
    document = "{ __schema { types { ...T0 } } } " + " ".join(
        f"fragment T{i} on __Type {{ fields {{ type {{ ...T{i + 1} ...T{i + 1} }} }} }}"
        for i in range(1_000)) + " fragment T1000 on __Type { name }"
    assert limits.measure(schema, parse(document), tables)[0].cost == limits.MAX_COUNTED_COST


def test_a_fragment_cycle_is_still_reported(app: Flask, gql: GraphQL) -> None:
    status, error = _error(gql.raw(
        "{ customers { edges { node { ...A } } } } fragment A on Customer { id ...B } "
        "fragment B on Customer { name ...A }"))
    assert (status, error["extensions"]["code"]) == (400, "GRAPHQL_VALIDATION_FAILED")
    assert "Cannot spread fragment" in error["message"]


# --- Alias floods -------------------------------------------------------------------------


def test_alias_flood_of_cheap_fields_is_refused_by_cost(app: Flask, gql: GraphQL) -> None:
    aliases = " ".join(f"a{i}: id" for i in range(499))  # under MAX_SELECTIONS
    extensions = _too_complex(gql.raw(f"{{ customers(first: 100) {{ edges {{ node {{ "
                                      f"{aliases} }} }} }} }}"))
    assert extensions["cost"] == 1 + limits.PAGE_QUERY_COST + 1 + 100 * (1 + 499)


def test_alias_flood_of_typenames_is_refused_by_the_token_limit(app: Flask,
                                                                gql: GraphQL) -> None:
    document = "{ " + " ".join(f"a{i}: __typename" for i in range(4_000)) + " }"
    status, error = _error(gql.raw(document))
    assert (status, error["extensions"]["code"]) == (400, "QUERY_TOO_COMPLEX")
    assert f"{limits.MAX_TOKENS}" in error["message"]


def test_long_documents_are_refused_before_parsing(app: Flask, gql: GraphQL) -> None:
    document = "{ plugins { name } }" + " " * limits.MAX_DOCUMENT_CHARS
    status, error = _error(gql.raw(document))
    assert (status, error["extensions"]["code"]) == (400, "QUERY_TOO_COMPLEX")
    assert "variables" in error["message"]


def test_same_field_repeated_does_not_reach_quadratic_validation(app: Flask,
                                                                  gql: GraphQL) -> None:
    """3,200 fields sharing one response name, spread from 8 fragments so that no
    selection set is wider than the limit, cost 3,200: under the cost limit, so the
    standard rules run, and the overlap rule stops at its bounded budget."""
    fragments = " ".join(f"fragment F{i} on Customer {{ {'id ' * 400}}}" for i in range(8))
    spreads = " ".join(f"...F{i}" for i in range(8))
    document = ("{ customers(first: 1) { edges { node { " + spreads + " } } } } "
                + fragments)
    status, error = _error(gql.raw(document))
    assert (status, error["extensions"]["code"]) == (400, "QUERY_TOO_COMPLEX")
    assert error["message"] == "Validation aborted."


def test_each_alias_of_a_count_pays_its_count(app: Flask, gql: GraphQL) -> None:
    one = 1 + limits.PAGE_QUERY_COST + 1 + limits.COUNT_COST
    fits = 50_000 // one
    ok = gql("{ " + " ".join(f"c{i}: {COUNTING}" for i in range(fits)) + " }")
    assert len(ok) == fits
    extensions = _too_complex(gql.raw(
        "{ " + " ".join(f"c{i}: {COUNTING}" for i in range(fits + 1)) + " }"))
    assert extensions["cost"] == (fits + 1) * one


def test_a_search_is_charged_for_the_page_and_for_the_count(app: Flask, gql: GraphQL) -> None:
    one = 1 + limits.PAGE_QUERY_COST + 2 * limits.SEARCH_COST + 1 + limits.COUNT_COST
    count = 50_000 // one + 1  # a handful of aliases, well under the token limit
    extensions = _too_complex(gql.raw(
        "{ " + " ".join(f"c{i}: {SEARCH_COUNTING}" for i in range(count)) + " }"))
    assert extensions["cost"] == count * one
    # A filter given as a variable may hold a search: charged as one.
    schema = gql.client.application.extensions["rapport_graphql"]
    variable = parse("query($f: CustomerFilterInput) { customers(first: 0, filter: $f) "
                     "{ totalCount } }")
    assert limits.measure(schema.schema.graphql_schema, variable,
                          schema.cost_tables)[0].cost == one


def test_a_selection_set_wider_than_the_limit_is_refused_before_validation(
        app: Flask, gql: GraphQL) -> None:
    widest = "{ " + " ".join(f"t{i}: __typename" for i in range(limits.MAX_SELECTIONS)) + " }"
    assert gql(widest)["t0"] == "Query"
    flood = "{ " + " ".join("name" for _ in range(limits.MAX_SELECTIONS + 1)) + " }"
    extensions = _too_complex(gql.raw("{ customers(first: 1) { edges { node " + flood
                                      + " } } }"))
    assert extensions["maxSelections"] == limits.MAX_SELECTIONS


def test_alias_flood_of_mutations_is_refused_and_writes_nothing(make_app: AppFactory) -> None:
    # A cost limit low enough that the flood fits the token limit: the cost refuses it.
    app = make_app(RAPPORT_GRAPHQL_MAX_COMPLEXITY="20000")
    gql = GraphQL(app, admin_token(app))
    service = app.extensions["rapport_graphql"]
    create = 'createCustomer(input: {name: "Flood"}) { customer { id } }'
    one = limits.measure(service.schema.graphql_schema, parse(f"mutation {{ {create} }}"),
                         service.cost_tables)[0].cost
    assert one == 1 + limits.MUTATION_COST + 1 + 1
    count = 20_000 // one + 1
    extensions = _too_complex(gql.raw(
        "mutation { " + " ".join(f"m{i}: {create}" for i in range(count)) + " }"))
    assert extensions["cost"] == count * one
    with app.app_context():
        assert db.session.query(Customer).count() == 0


def test_nested_counts_are_charged_once_per_selection(app: Flask, gql: GraphQL) -> None:
    """A nested totalCount is one batched query (a DataLoader), not one per parent."""
    service = app.extensions["rapport_graphql"]
    document = parse("{ customers(first: 100) { edges { node { interactions(first: 5) "
                     "{ totalCount } } } } }")
    cost = limits.measure(service.schema.graphql_schema, document, service.cost_tables)[0].cost
    page = 1 + limits.PAGE_QUERY_COST
    assert cost == page + 1 + 100 * (1 + 1 + 1) + limits.PAGE_QUERY_COST + limits.COUNT_COST


def test_reports_declare_their_cost(make_app: AppFactory) -> None:
    app = make_app(enabled=["loyalty", "complaints", "churn", "surveys"])
    declared = app.extensions["rapport_graphql"].cost_tables.declared
    for field in ("loyaltyReport", "complaintStats", "churnReport", "winbackStats",
                  "churnByOwner", "customerDuplicates"):
        assert declared[("Query", field)] == limits.REPORT_COST, field
    assert declared[("Survey", "analysis")] == limits.ANALYSIS_COST
    gql = GraphQL(app, admin_token(app))
    report = 'loyaltyReport(from: "2026-01-01", to: "2026-01-31") { __typename }'
    fits = 50_000 // (1 + limits.REPORT_COST + 1)
    extensions = _too_complex(gql.raw(
        "{ " + " ".join(f"r{i}: {report}" for i in range(fits + 1)) + " }"))
    assert extensions["cost"] == (fits + 1) * (1 + limits.REPORT_COST + 1)
    # Once per survey returned: 100 surveys' analyses are 100 analyses.
    extensions = _too_complex(gql.raw(
        "{ surveys(first: 100) { edges { node { analysis { responsesUsed } } } } }"))
    assert extensions["cost"] >= 100 * limits.ANALYSIS_COST


# --- Introspection ------------------------------------------------------------------------


def test_deep_introspection_costs_like_any_selection(app: Flask, gql: GraphQL) -> None:
    deep = ("__schema { types { name fields { name args { name type { name ofType { name "
            "ofType { name } } } } type { name ofType { name ofType { name } } } } } }")
    service = app.extensions["rapport_graphql"]
    one = limits.measure(service.schema.graphql_schema, parse("{ " + deep + " }"),
                         service.cost_tables)[0].cost
    assert one > len(service.schema.graphql_schema.type_map) * 3
    count = 50_000 // one + 1
    extensions = _too_complex(gql.raw("{ " + " ".join(f"s{i}: {deep}" for i in range(count))
                                      + " }"))
    assert abs(extensions["cost"] - count * one) <= count  # each rounded up on its own
    # 500 of them do not even fit the token limit.
    too_long = _too_complex(gql.raw("{ " + " ".join(f"s{i}: {deep}" for i in range(500))
                                    + " }"))
    assert "cost" not in too_long
    # The full introspection query (GraphiQL's) stays under the default limits.
    assert gql(get_introspection_query(descriptions=True))["__schema"]["types"]


def test_introspection_defaults() -> None:
    production = {"RAPPORT_ENV": "production", "RAPPORT_SECRET_KEY": "s" * 40,
                  "RAPPORT_ENCRYPTION_KEYS": "k" * 44, "RAPPORT_BLIND_INDEX_KEY": "b" * 40}
    assert load_settings(production).graphql_introspection == "off"
    assert load_settings({**production, "RAPPORT_GRAPHQL_INTROSPECTION": "scope"}
                         ).graphql_introspection == "scope"
    assert load_settings({"RAPPORT_ENV": "development"}).graphql_introspection == "on"
    assert load_settings({"RAPPORT_ENV": "test"}).graphql_introspection == "on"
    with pytest.raises(ConfigError, match="RAPPORT_GRAPHQL_INTROSPECTION"):
        load_settings({"RAPPORT_ENV": "test", "RAPPORT_GRAPHQL_INTROSPECTION": "maybe"})


def test_introspection_off_hides_the_schema_and_suggestions(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_GRAPHQL_INTROSPECTION="off")
    gql = GraphQL(app, admin_token(app))
    for document in ("{ __schema { queryType { name } } }",
                     '{ __type(name: "Customer") { name } }',
                     "{ plugins { name } ... on Query { __schema { types { name } } } }"):
        status, error = _error(gql.raw(document))
        assert (status, error["extensions"]["code"]) == (400, "GRAPHQL_VALIDATION_FAILED")
        assert "Introspection is disabled" in error["message"]
    assert gql("{ plugins { __typename } }")  # __typename is not introspection
    status, error = _error(gql.raw("{ customers { edges { node { nme } } } }"))
    assert status == 400 and "Did you mean" not in error["message"]
    status, error = _error(gql.raw("query($s: [CustomerStatus!]) { customers(filter: "
                                   "{status: $s}) { totalCount } }", {"s": ["ACTVE"]}))
    assert "Did you mean" not in error["message"], error


def test_introspection_on_keeps_suggestions(app: Flask, gql: GraphQL) -> None:
    status, error = _error(gql.raw("{ customers { edges { node { nme } } } }"))
    assert status == 400 and "Did you mean 'name'?" in error["message"]


def test_introspection_by_scope(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_GRAPHQL_INTROSPECTION="scope")
    reader = GraphQL(app, admin_token(app, ("customers:read",)))
    status, error = _error(reader.raw("{ __schema { queryType { name } } }"))
    assert (status, error["extensions"]["code"]) == (403, "FORBIDDEN")
    assert "schema:read" in error["message"]
    status, error = _error(reader.raw("{ customers { edges { node { nme } } } }"))
    assert "Did you mean" not in error["message"]
    tooling = GraphQL(app, admin_token(app, ("customers:read", "schema:read")))
    assert tooling("{ __schema { queryType { name } } }")["__schema"]["queryType"] == {
        "name": "Query"}
    status, error = _error(tooling.raw("{ customers { edges { node { nme } } } }"))
    assert "Did you mean 'name'?" in error["message"]


# --- Bodies, lists, nesting ---------------------------------------------------------------


def test_body_over_the_limit_is_413(app: Flask, gql: GraphQL) -> None:
    padding = " " * (1_048_576 + 1)
    response = gql.client.post("/graphql", data=json.dumps({"query": "{ plugins { name } }"
                                                             + padding}),
                               headers={"Authorization": f"Bearer {gql.token}",
                                        "Content-Type": "application/json"})
    status, error = _error(response)
    assert (status, error["extensions"]["code"]) == (413, "PAYLOAD_TOO_LARGE")


def test_chunked_body_over_the_limit_is_413(make_app: AppFactory) -> None:
    app = make_app(RAPPORT_MAX_BODY_BYTES=1_000)
    gql = GraphQL(app, admin_token(app))
    body = json.dumps({"query": "{ plugins { name } }" + " " * 2_000}).encode()
    response = gql.client.post("/graphql", input_stream=io.BytesIO(body),
                               headers={"Authorization": f"Bearer {gql.token}",
                                        "Content-Type": "application/json",
                                        "Transfer-Encoding": "chunked"},
                               environ_overrides={"wsgi.input_terminated": True})
    status, error = _error(response)
    assert (status, error["extensions"]["code"]) == (413, "PAYLOAD_TOO_LARGE")
    assert gql("{ plugins { name } }")  # under the limit


@pytest.mark.parametrize("items", [1_001, 10_000, 70_000])
def test_long_lists_in_variables_are_bad_input(app: Flask, gql: GraphQL, items: int) -> None:
    cities = [f"c{i}" for i in range(items)]
    status, error = _error(gql.raw(
        "query($f: CustomerFilterInput) { customers(filter: $f) { totalCount } }",
        {"f": {"city": cities}}))
    assert (status, error["extensions"]["code"]) == (400, "BAD_USER_INPUT")
    assert "1,000" in error["message"]


def test_a_thousand_items_are_accepted(app: Flask, gql: GraphQL) -> None:
    db.session.add(Customer(name="Ann", city="c999"))
    db.session.commit()
    cities = [f"c{i}" for i in range(1_000)]
    data = gql("query($f: CustomerFilterInput) { customers(filter: $f) { totalCount } }",
               {"f": {"city": cities}})
    assert data["customers"]["totalCount"] == 1


def test_long_literal_list_is_bad_input(app: Flask, gql: GraphQL) -> None:
    cities = ", ".join(f'"c{i}"' for i in range(1_001))
    status, error = _error(gql.raw(
        f"{{ customers(filter: {{city: [{cities}]}}) {{ totalCount }} }}"))
    assert (status, error["extensions"]["code"]) == (400, "BAD_USER_INPUT")


def test_deeply_nested_variables_are_bad_input(app: Flask, gql: GraphQL) -> None:
    nested: Any = "x"
    for _ in range(300):  # 600 levels: under the test client's own JSON recursion
        nested = {"a": [nested]}
    status, error = _error(gql.raw(
        "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) "
        "{ customer { id } } }", {"input": {"name": "Deep", "attributes": nested}}))
    assert (status, error["extensions"]["code"]) == (400, "BAD_USER_INPUT")
    assert db.session.query(Customer).count() == 0


def test_deeply_nested_document_is_refused(app: Flask, gql: GraphQL) -> None:
    literal = "{a: " * 300 + "1" + "}" * 300
    status, error = _error(gql.raw(
        f'mutation {{ createCustomer(input: {{name: "x", attributes: {literal}}}) '
        f'{{ customer {{ id }} }} }}'))
    assert status == 400
    assert error["extensions"]["code"] in ("QUERY_TOO_COMPLEX", "GRAPHQL_PARSE_FAILED")


# --- The document cache -------------------------------------------------------------------


def test_document_cache_is_bounded_in_bytes(app: Flask, gql: GraphQL,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graphql_view, "CACHE_BYTES", 3_000_000)
    service = app.extensions["rapport_graphql"]
    with app.test_request_context():
        principal = authenticate(f"Bearer {gql.token}", "10.0.0.1", None)
    # 480 selections (under MAX_SELECTIONS), 12 kB: about 1.2 MB parsed.
    padding = " ".join(f"alias_number_{j:04d}: name" for j in range(480))
    for i in range(6):
        prepared = service.prepare(f"query Q{i} {{ customers(first: 1) {{ edges {{ node {{ "
                                   f"{padding} }} }} }} }}", principal)
        assert prepared.document is not None, prepared.errors
        assert service.cache_bytes <= 3_000_000
    # Each entry counts its parsed document and the execution plans it may keep
    # (api/execution.py): as many of the newest as fit in 3 MB stay, the oldest went.
    assert len(service._cache) == 3_000_000 // prepared.size < 6
    assert all(isinstance(key[0], bytes) and len(key[0]) == 32 for key in service._cache)
    # Over MAX_CACHED_QUERY: prepared for each request, never kept.
    before = dict(service._cache)
    huge = '{ customers(first: 1, filter: {search: "' + "x" * 40_000 + '"}) { totalCount } }'
    assert len(huge) > graphql_view.MAX_CACHED_QUERY
    assert service.prepare(huge, principal).document is not None
    assert dict(service._cache) == before


# --- Statement timeout --------------------------------------------------------------------


class Slow:
    """A test-only plugin with a field whose query runs for seconds."""

    __name__ = "slow"

    @hookimpl
    def rapport_graphql_query_fields(self) -> dict[str, graphene.Field]:
        return {"slowQuery": scoped(graphene.Field(graphene.Int, resolver=_slow),
                                    "customers:read")}


def _slow_statement() -> Any:
    if db.engine.dialect.name == "postgresql":
        return text("SELECT 1 FROM pg_sleep(10)")
    # About 10^8 rows of a recursive CTE: seconds of SQLite's virtual machine.
    return text("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                "WHERE i < 100000000) SELECT count(*) FROM n")


def _slow(root: Any, info: Any) -> int:
    return int(db.session.execute(_slow_statement()).scalar_one())


def test_a_slow_statement_in_a_request_is_a_typed_error(make_app: AppFactory) -> None:
    app = make_app(plugins=(Slow(),), RAPPORT_STATEMENT_TIMEOUT_MS=200)
    gql = GraphQL(app, admin_token(app))
    response = gql.raw("{ slowQuery }")
    assert response.status_code == 200
    body = response.get_json()
    assert body["data"] == {"slowQuery": None}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["STATEMENT_TIMEOUT"]
    assert body["errors"][0]["path"] == ["slowQuery"]
    # The connection went back to the pool clean: the next request works.
    assert gql("{ customers { totalCount } }") == {"customers": {"totalCount": 0}}


def test_jobs_and_the_cli_have_their_own_limit(make_app: AppFactory) -> None:
    # Long enough for the fixture's own clean-up (TRUNCATE), which runs as job code too.
    app = make_app(RAPPORT_STATEMENT_TIMEOUT_MS=60_000, RAPPORT_JOB_STATEMENT_TIMEOUT_MS=2_000)
    with app.app_context():
        with pytest.raises(Exception) as caught:
            db.session.execute(_slow_statement())
        assert is_statement_timeout(caught.value)
        db.session.rollback()
        with statement_timeout(None):  # a block may lift it
            assert db.session.execute(text("SELECT 1")).scalar_one() == 1
        db.session.rollback()
