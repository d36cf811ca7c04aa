"""The compiled execution plan (api/execution.py ``DocumentPlan``) gives what graphql-core's
own executor gives: data and errors (messages, paths, locations), on many shapes.

Each document runs through graphql-core's ``ExecutionContext`` (the reference), then through
the planned context of one ``PlanCache`` several times: the first run builds the plan, the
later ones reuse it, with other variable values where the document has variables (@skip and
@include with variables make one plan variant per combination). Resolvers here misbehave on
purpose (raise, return null on non-null fields, wrong types, awaitables, lists with holes)
so the paths that hand a value back to graphql-core are compared too.
"""

from __future__ import annotations

import inspect
from typing import Any

import graphene
import pytest
from flask import Flask
from graphene import relay
from graphql import ExecutionContext, execute, parse

from api import scoped
from api.context import RequestContext
from api.execution import MAX_VARIANTS, PlanCache, is_awaitable, run
from api.loaders import CustomerByIdLoader
from api.types import CustomerType, Interaction, ctx
from core import hookimpl
from core.auth import Principal
from core.db import db
from core.models import Customer
from core.services.customers import create_customer, update_customer
from core.services.interactions import record_interactions
from core.services.staff import create_agent
from tests.api.test_execution import Quirks
from tests.conftest import AppFactory


def _customers() -> list[Customer]:
    return list(db.session.scalars(db.select(Customer).order_by(Customer.id)).all())


class Shapes:
    """Fields of every shape the plan handles, and of shapes it hands back."""

    __name__ = "shapes"

    @hookimpl
    def rapport_graphql_query_fields(self) -> dict[str, graphene.Field]:
        def fail(root: Any, info: Any) -> str:
            raise ValueError("resolver failed")

        async def later_customers(root: Any, info: Any) -> list[Customer]:
            return _customers()[:2]

        def loaded(root: Any, info: Any) -> list[Any]:
            loader = ctx(info).loader(CustomerByIdLoader)
            return [loader.load(c.id) for c in _customers()[:2]]

        customer = CustomerType
        # The misbehaving scalars of test_execution.py, plus lists and arguments.
        quirks = Quirks().rapport_graphql_query_fields()
        return {
            **{name: quirks[name] for name in ("failing", "nullRequired", "badInt",
                                               "awaited")},
            "echo": scoped(graphene.Field(graphene.String, text=graphene.String(),
                                          times=graphene.Int(default_value=1),
                                          resolver=lambda root, info, text=None, times=1:
                                          None if text is None else text * times), "admin"),
            "holes": scoped(graphene.Field(
                graphene.List(graphene.NonNull(customer)),
                resolver=lambda root, info: [_customers()[0], None]), "admin"),
            "nullableHoles": scoped(graphene.Field(
                graphene.List(customer), resolver=lambda root, info: [None, _customers()[1]]),
                "admin"),
            "requiredHoles": scoped(graphene.Field(
                graphene.List(graphene.NonNull(customer), required=True),
                resolver=lambda root, info: [None]), "admin"),
            "tupleList": scoped(graphene.Field(
                graphene.List(graphene.NonNull(customer)),
                resolver=lambda root, info: tuple(_customers()[:2])), "admin"),
            "notAList": scoped(graphene.Field(
                graphene.List(customer), resolver=lambda root, info: 42), "admin"),
            "asyncList": scoped(graphene.Field(graphene.List(graphene.NonNull(customer)),
                                               resolver=later_customers), "admin"),
            "loadedList": scoped(graphene.Field(graphene.List(graphene.NonNull(customer)),
                                                resolver=loaded), "admin"),
            "wrongTypes": scoped(graphene.Field(
                graphene.List(graphene.NonNull(Interaction)),
                resolver=lambda root, info: _customers()[:1]), "admin"),
            "failingList": scoped(graphene.Field(graphene.List(customer), resolver=fail),
                                  "admin"),
        }

    @hookimpl
    def rapport_graphql_customer_fields(self) -> dict[str, graphene.Field]:
        def boom(root: Customer, info: Any) -> str:
            if root.name == "C1":
                raise RuntimeError("boom")
            return f"ok {root.name}"

        return {
            "boom": scoped(graphene.Field(graphene.String, resolver=boom), "customers:read"),
            "boomRequired": scoped(graphene.Field(graphene.String, required=True,
                                                  resolver=boom), "customers:read"),
        }


CONNECTION = ("{ customers(first: 10) { totalCount pageInfo { hasNextPage endCursor } "
              "edges { cursor node { id name email tags status lifecycleStage birthDate "
              "attributes createdAt owner { name } externalIds { source externalId } "
              "interactions(first: 3) { totalCount edges { cursor node { id kind occurredAt "
              "amount { amount currency } payload refersTo { kind } customer { name } } } } "
              "} } } }")

#: (document, [variables, ...]) run through both executors.
DOCUMENTS: list[tuple[str, list[dict[str, Any] | None]]] = [
    (CONNECTION, [None]),
    # aliases, the same field twice under two names, and merged selections
    ("{ a: customers(first: 1) { edges { node { n: name name } } } "
     "b: customers(first: 2, orderBy: {field: NAME, direction: DESC}) { edges { node { name "
     "} } } c: customers(first: 2) { edges { node { name } node { id } } } }", [None]),
    # named fragments, nested and spread twice; inline fragments with and without a type
    ("query Q { customers(first: 3) { ...Page } } fragment Page on CustomerConnection { "
     "edges { node { ...Who ...Who ... on Customer { email } ... { id } } } } "
     "fragment Who on Customer { name interactions(first: 2) { edges { node { kind } } } }",
     [None]),
    # interfaces: node(id:), __typename, inline fragments on the interface's types
    ("query($id: ID!) { node(id: $id) { __typename id ... on Customer { name "
     "interactions(first: 1) { totalCount } } ... on Interaction { kind } ... on Node { "
     "id } } }", ["customer", "interaction", "agent", {"id": "bm9wZQ=="}]),
    ("{ customers(first: 3) { edges { node { __typename ... on Node { id } ... on Customer "
     "{ name } } } } }", [None]),
    # variables: arguments, input objects, defaults
    ("query($n: Int, $after: String, $f: CustomerFilterInput) { customers(first: $n, after: "
     "$after, filter: $f) { edges { cursor node { name } } } }",
     [{"n": 2}, {"n": 1, "f": {"search": "C2"}}, {"n": 5}, None]),
    ("query($t: String, $k: Int = 2) { echo(text: $t, times: $k) literal: echo(text: \"x\") "
     "none: echo }", [{"t": "ab"}, {"t": "cd", "k": 3}, {}]),
    # @skip / @include with variables (plan variants) and literals
    ("query($yes: Boolean!, $no: Boolean = false) { customers(first: 2) { edges { node { "
     "name @include(if: $yes) email @skip(if: $yes) id @include(if: true) tags @skip(if: "
     "true) ... on Customer @include(if: $no) { status } ...F @skip(if: $no) } } } } "
     "fragment F on Customer { lifecycleStage }",
     [{"yes": True}, {"yes": False}, {"yes": True, "no": True}, {"yes": True}]),
    # errors in resolvers, nulls on non-null fields, values a scalar refuses, awaitables
    ("{ failing nullRequired }", [None]),
    ("{ badInt awaited plugins { name enabled hooks } }", [None]),
    ("{ customers(first: 3) { edges { node { name boom } } } }", [None]),
    ("{ customers(first: 3) { edges { node { name boomRequired } } } }", [None]),
    ("{ c: customers(first: 3) { edges { node { boomRequired } } } failing }", [None]),
    # lists of objects: holes, non-null holes, other iterables, awaitables, wrong types
    ("{ holes { name } nullableHoles { name } tupleList { name } notAList { name } }",
     [None]),
    ("{ requiredHoles { name } }", [None]),
    ("{ asyncList { name interactions(first: 1) { edges { node { kind } } } } "
     "loadedList { name boom } }", [None]),
    ("{ wrongTypes { kind } failingList { name } }", [None]),
    ("{ interactionKinds { name description } customerDuplicates { reason customers { name "
     "} } agents(first: 5) { edges { node { name role } } } }", [None]),
    # a value of another domain behind an interface: FORBIDDEN at its path (run-time check)
    ("{ __typename customers(first: 1) { edges { node { id } } } }", [None]),
]


def _principal(scopes: tuple[str, ...]) -> Principal:
    return Principal("test", frozenset(scopes))


def _execute(app: Flask, document: Any, context_class: type[ExecutionContext],
             variables: dict[str, Any] | None, scopes: tuple[str, ...] = ("admin",),
             operation_name: str | None = None) -> tuple[Any, list[Any]]:
    schema = app.extensions["rapport_graphql"].schema.graphql_schema
    context = RequestContext(principal=_principal(scopes))

    async def go() -> Any:
        result = execute(schema, document, context_value=context, variable_values=variables,
                         operation_name=operation_name, execution_context_class=context_class,
                         is_awaitable=is_awaitable)
        return await result if inspect.isawaitable(result) else result

    result = run(go())
    db.session.rollback()
    return result.data, [e.formatted for e in result.errors or []]


def _seed() -> dict[str, str]:
    agent = create_agent({"name": "Kim", "email": "kim@shop.io"})
    ids = [create_customer({"name": f"C{i}", "email": f"c{i}@x.io", "tags": ["t"],
                            "source": "s", "external_id": str(i)}).id for i in range(4)]
    update_customer(ids[0], {"owner_id": agent.id})
    batch = record_interactions([
        {"customer_id": cid, "kind": "purchase", "amount": "1.50", "currency": "EUR",
         "occurred_at": f"2026-01-0{day + 1}T00:00:00Z", "payload": {"sku": day}}
        for cid in ids for day in range(4)])
    record_interactions([{"customer_id": ids[0], "kind": "refund", "amount": "1.50",
                          "currency": "EUR", "occurred_at": "2026-01-09T00:00:00Z",
                          "refers_to_id": batch.recorded_ids[0]}])
    return {"customer": relay.Node.to_global_id("Customer", ids[1]),
            "interaction": relay.Node.to_global_id("Interaction", batch.recorded_ids[2]),
            "agent": relay.Node.to_global_id("Agent", agent.id)}


def _variables(raw: dict[str, Any] | str | None, ids: dict[str, str]) -> Any:
    return {"id": ids[raw]} if isinstance(raw, str) else raw


def test_same_results_as_graphql_core_on_every_shape(make_app: AppFactory) -> None:
    app = make_app(plugins=(Shapes(),))
    with app.app_context():
        ids = _seed()
        ran_errors = 0
        for text, variable_sets in DOCUMENTS:
            document = parse(text)
            plans = PlanCache(document)
            for scopes in (("admin",), ("customers:read", "interactions:read")):
                for raw in variable_sets * 2:  # the second round reuses every plan variant
                    variables = _variables(raw, ids)
                    reference = _execute(app, document, ExecutionContext, variables, scopes)
                    compiled = _execute(app, document, plans.context_class(None), variables,
                                        scopes)
                    assert compiled == reference, (text, variables, scopes)
                    assert reference[0] is not None or reference[1], text  # it really ran
                    ran_errors += bool(reference[1])
        assert ran_errors > 20  # the error shapes above do give errors


def test_runtime_authorization_on_the_compiled_path(make_app: AppFactory) -> None:
    """A type of a domain the key may not read, reached through ``node(id:)``: null and
    FORBIDDEN at that path, with the plan built by a key that could read it (plans are
    cached per scopes in the view; the run-time check must not depend on that)."""
    app = make_app()
    with app.app_context():
        ids = _seed()
        document = parse("query($id: ID!) { node(id: $id) { id ... on Interaction { kind } "
                         "} }")
        plans = PlanCache(document)
        variables = {"id": ids["interaction"]}
        allowed = _execute(app, document, plans.context_class(None), variables,
                           ("admin",))
        assert allowed[0]["node"]["kind"] == "purchase"
        for scopes in (("customers:read",), ("customers:read", "interactions:read")):
            reference = _execute(app, document, ExecutionContext, variables, scopes)
            compiled = _execute(app, document, plans.context_class(None), variables, scopes)
            assert compiled == reference
        refused = _execute(app, document, plans.context_class(None), variables,
                           ("customers:read",))
        assert refused[0] == {"node": None}
        assert [(e["path"], e["extensions"]["code"]) for e in refused[1]] == [
            (["node"], "FORBIDDEN")]


def test_mutations_and_named_operations(make_app: AppFactory) -> None:
    app = make_app()
    with app.app_context():
        ids = _seed()
        text = ("mutation Rename($id: ID!, $name: String) { first: updateCustomer(input: "
                "{id: $id, name: $name}) { customer { name } errors { field code ... on Error "
                "{ message } } } second: updateCustomer(input: {id: $id, email: \"nope\"}) { "
                "customer { name } errors { field code message } } } "
                "query Read($id: ID!) { node(id: $id) { ... on Customer { name } } }")
        document = parse(text)
        plans = PlanCache(document)
        for name in ("Zoe", "Yan", None):
            variables = {"id": ids["customer"], "name": name}
            for operation in ("Rename", "Read"):
                reference = _execute(app, document, ExecutionContext, variables,
                                     operation_name=operation)
                compiled = _execute(app, document, plans.context_class(operation), variables,
                                    operation_name=operation)
                assert compiled == reference, (operation, variables)
                db.session.commit()
        assert compiled[0] == {"node": {"name": None}}  # the last rename cleared it
        # An operation name the document does not have: graphql-core's error, no plan kept.
        unknown = _execute(app, document, plans.context_class("Nope"), {},
                           operation_name="Nope")
        assert unknown == (None, [{"message": "Unknown operation named 'Nope'."}])
        assert set(plans._plans) == {"Rename", "Read"}


def test_plan_variants_are_bounded(make_app: AppFactory) -> None:
    app = make_app()
    with app.app_context():
        _seed()
        names = [f"v{i}" for i in range(6)]  # 2**6 = 64 combinations > MAX_VARIANTS
        text = ("query(" + ", ".join(f"${n}: Boolean!" for n in names) + ") { customers("
                "first: 1) { edges { node { " + " ".join(
                    f"{n}: name @include(if: ${n})" for n in names) + " } } } }")
        document = parse(text)
        plans = PlanCache(document)
        plan = plans.plan(None)
        assert plan.directive_variables == tuple(sorted(names))
        for bits in range(2 ** len(names)):
            variables = {n: bool(bits >> i & 1) for i, n in enumerate(names)}
            reference = _execute(app, document, ExecutionContext, variables)
            compiled = _execute(app, document, plans.context_class(None), variables)
            assert compiled == reference
            assert len(compiled[0]["customers"]["edges"][0]["node"]) == bin(bits).count("1")
        assert len(plan._variants) == MAX_VARIANTS


def test_the_view_reuses_the_plan_of_a_cached_document(make_app: AppFactory) -> None:
    from tests.conftest import GraphQL, admin_token

    app = make_app()
    with app.app_context():
        _seed()
        gql = GraphQL(app, admin_token(app))
        query = "query($n: Int) { customers(first: $n) { edges { node { name } } } }"
        first = gql(query, {"n": 2})
        service = app.extensions["rapport_graphql"]
        (prepared,) = [p for p in service._cache.values() if p.plans is not None
                       and p.document is not None and "customers(first: $n)" in
                       (p.document.loc.source.body if p.document.loc else "")]
        plan = prepared.plans.plan(None)
        variant = plan.variant({})
        assert variant.subfields and variant.plans and variant.root_fields is not None
        kept = dict(variant.subfields)
        assert gql(query, {"n": 3}) != first
        assert gql(query, {"n": 2}) == first
        assert {k: id(v) for k, v in variant.subfields.items()} == {
            k: id(v) for k, v in kept.items()}  # nothing collected again


@pytest.mark.parametrize("literal", ['search: "C1"', 'tagsAny: ["t"]'])
def test_literal_arguments_are_coerced_once_and_not_shared_when_mutable(
        make_app: AppFactory, literal: str) -> None:
    app = make_app()
    with app.app_context():
        _seed()
        document = parse("{ customers(first: 2, filter: {%s}) { edges { node { name } } } "
                         "c: customers(first: 1) { totalCount } }" % literal)
        plans = PlanCache(document)
        for _ in range(2):
            compiled = _execute(app, document, plans.context_class(None), None)
            assert compiled == _execute(app, document, ExecutionContext, None)
            assert compiled[0]["customers"]["edges"] and compiled[0]["c"]["totalCount"] == 4
        arguments = plans.plan(None).variant({}).arguments
        shared = [v for v in arguments.values() if v is not None]
        assert [v[1] for v in shared] == [{"first": 1}]  # the filter (a dict) is per request
        assert len(arguments) == 2


# --- Plain rows in the interactions loader --------------------------------------------------

ALL_INTERACTION_FIELDS = ("id kind channel occurredAt amount { amount currency } payload "
                          "source externalId refersTo { id } customer { id name } agent { "
                          "name } recordedAt")


def test_every_interaction_field_names_its_columns(app: Flask) -> None:
    from api.loaders import INTERACTION_FIELD_COLUMNS

    schema = app.extensions["rapport_graphql"].schema.graphql_schema
    assert set(schema.get_type("Interaction").fields) == set(INTERACTION_FIELD_COLUMNS)


@pytest.mark.parametrize("selection", [
    ALL_INTERACTION_FIELDS, "kind", "amount { currency }", "payload customer { name }",
    "... on Interaction { refersTo { kind } recordedAt } ...I", "id"])
def test_plain_rows_read_what_the_orm_reads(make_app: AppFactory, selection: str) -> None:
    """Each interaction read through the customers' timelines (plain rows of the selected
    columns, one query) equals the same interaction read through ``node(id:)`` (an ORM
    object): same types, same conversions (UTC datetimes, exact money, JSON)."""
    from tests.conftest import GraphQL, admin_token

    app = make_app()
    with app.app_context():
        agent = create_agent({"name": "Kim", "email": "kim@shop.io"})
        ids = [create_customer({"name": f"C{i}", "email": f"c{i}@x.io"}).id for i in range(3)]
        batch = record_interactions([
            {"customer_id": cid, "kind": kind, "amount": amount, "currency": currency,
             "occurred_at": f"2026-01-0{day + 1}T0{day}:30:00+02:00", "channel": "web",
             "payload": {"sku": day, "nested": {"ü": [1, 2.5, None]}}, "agent_id": agent.id,
             "source": "shop", "external_id": f"{cid}-{day}"}
            for cid in ids for day, (kind, amount, currency) in enumerate([
                ("purchase", "12.30", "EUR"), ("call", None, None),
                ("purchase", "1000", "JPY"), ("note", None, None)])])
        record_interactions([{"customer_id": ids[0], "kind": "refund", "amount": "12.30",
                              "currency": "EUR", "occurred_at": "2026-01-09T00:00:00Z",
                              "refers_to_id": batch.recorded_ids[0]}])
        gql = GraphQL(app, admin_token(app))
        fragment = "fragment I on Interaction { id kind }"
        page = gql("{ customers(first: 5) { edges { node { interactions(first: 10) { edges { "
                   "node { id __typename %s } } } } } } } %s" % (
                       selection, fragment if "...I" in selection else ""))
        nodes = [e["node"] for c in page["customers"]["edges"]
                 for e in c["node"]["interactions"]["edges"]]
        assert len(nodes) == 13
        for node in nodes:
            one = gql("query($id: ID!) { node(id: $id) { id __typename ... on Interaction { "
                      "%s } } } %s" % (selection, fragment if "...I" in selection else ""),
                      {"id": node["id"]})["node"]
            assert one == node
