"""Our executor's shortcuts give what graphql-core's own executor gives, data and errors.

``api.execution.RapportExecutionContext`` re-implements the common field shapes for speed;
this runs a set of documents through both and compares the results, so a graphql-core
upgrade that changes the internals it relies on fails here.
"""

from __future__ import annotations

import inspect
from typing import Any

import graphene
import pytest
from flask import Flask
from graphql import ExecutionContext, execute, parse

from api import scoped
from api.context import RequestContext
from api.execution import RapportExecutionContext, is_awaitable, run
from core import hookimpl
from core.auth import Principal
from core.services.customers import create_customer, update_customer
from core.services.interactions import record_interactions
from core.services.staff import create_agent
from tests.conftest import AppFactory


class Quirks:
    """Resolvers that misbehave in the ways the shortcuts must hand back to graphql-core."""

    __name__ = "quirks"

    @hookimpl
    def rapport_graphql_query_fields(self) -> dict[str, graphene.Field]:
        def fail(root: Any, info: Any) -> str:
            raise ValueError("resolver failed")

        async def later(root: Any, info: Any) -> str:
            return "awaited"

        return {
            "failing": scoped(graphene.Field(graphene.String, resolver=fail), "admin"),
            "nullRequired": scoped(graphene.Field(graphene.String, required=True,
                                                  resolver=lambda root, info: None), "admin"),
            "badInt": scoped(graphene.Field(graphene.Int, resolver=lambda root, info: "x"),
                             "admin"),
            "awaited": scoped(graphene.Field(graphene.String, resolver=later), "admin"),
            "dictValue": scoped(graphene.Field(graphene.String, resolver=lambda root, info:
                                               {"not": "a string"}), "admin"),
        }


DOCUMENTS = [
    "{ customers(first: 10) { totalCount pageInfo { hasNextPage endCursor } edges { cursor "
    "node { id name email tags status lifecycleStage birthDate attributes createdAt owner "
    "{ name } externalIds { source externalId } interactions(first: 3) { totalCount edges "
    "{ cursor node { id kind occurredAt amount { amount currency } payload refersTo { kind } "
    "customer { name } } } } } } } }",
    "{ customers(first: 3) { edges { node { __typename ... on Node { id } ... on Customer "
    "{ name } } } } }",
    "{ failing nullRequired }",
    "{ badInt awaited dictValue plugins { name enabled hooks } }",
    "{ interactionKinds { name description } customerDuplicates { reason customers { name } } }",
    "query { a: customers(first: 1) { edges { node { name } } } "
    "b: customers(first: 2, orderBy: {field: NAME, direction: DESC}) { edges { node { name } } } }",
]


def _run(app: Flask, document: str, context_class: type[ExecutionContext]) -> Any:
    schema = app.extensions["rapport_graphql"].schema.graphql_schema
    context = RequestContext(principal=Principal("test", frozenset({"admin"})))

    async def go() -> Any:
        result = execute(schema, parse(document), context_value=context,
                         execution_context_class=context_class, is_awaitable=is_awaitable)
        return await result if inspect.isawaitable(result) else result

    result = run(go())
    errors = sorted((str(e.message), tuple(e.path or ())) for e in result.errors or [])
    return result.data, errors


@pytest.mark.parametrize("document", DOCUMENTS, ids=[str(i) for i in range(len(DOCUMENTS))])
def test_same_result_as_graphql_core(make_app: AppFactory, document: str) -> None:
    app = make_app(plugins=(Quirks(),))
    with app.app_context():
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
        ours = _run(app, document, RapportExecutionContext)
        reference = _run(app, document, ExecutionContext)
    assert ours == reference
    assert ours[0] is not None or ours[1]  # the documents really ran
