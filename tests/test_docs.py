"""The documentation is part of the contract: these tests fail when it drifts from the code.

- docs/plugin_hooks.md has a ``## <hook>`` heading for every hookspec of an app (core and
  API hooks), every such heading names a real hook, and the ``def`` line under it lists
  the hookspec's parameters in order.
- docs/graphql.md's table of top-level error codes and HTTP statuses is what the endpoint
  returns, and its batch error path example is the real one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import graphene
import pytest
from flask import Flask
from graphene import relay
from sqlalchemy import text
from werkzeug.test import TestResponse

import api.hookspecs
import core.hookspecs
from api import scoped
from core import hookimpl
from core.app import rapport
from core.db import db
from core.timeouts import statement_timeout
from tests.conftest import AppFactory, GraphQL, admin_token

DOCS = Path(__file__).resolve().parents[1] / "docs"
HOOKS_MD = DOCS / "plugin_hooks.md"
GRAPHQL_MD = DOCS / "graphql.md"


def _sections(text: str) -> dict[str, str]:
    """Level-2 headings and the text under each, up to the next heading of level 1 or 2."""
    sections: dict[str, str] = {}
    current: str | None = None
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and re.match(r"#{1,2} ", line):
            current = line[3:].strip() if line.startswith("## ") else None
            if current is not None:
                assert current not in sections, f"heading {current!r} appears twice"
                sections[current] = ""
            continue
        if current is not None:
            sections[current] += line + "\n"
    return sections


@pytest.fixture(scope="module")
def hook_sections() -> dict[str, str]:
    return _sections(HOOKS_MD.read_text())


@pytest.fixture
def hookspecs(app: Flask) -> dict[str, Any]:
    """Every hookspec of an app with no optional plugin: core's and the API's."""
    specs = {name: caller.spec for name, caller in vars(rapport(app).pm.hook).items()
             if getattr(caller, "spec", None) is not None}
    assert {spec.namespace for spec in specs.values()} == {core.hookspecs, api.hookspecs}
    return specs


def test_every_hookspec_has_a_heading(hookspecs: dict[str, Any],
                                      hook_sections: dict[str, str]) -> None:
    missing = sorted(set(hookspecs) - set(hook_sections))
    assert not missing, f"docs/plugin_hooks.md lacks a '## <hook>' section for {missing}"


def test_every_heading_names_a_hook(hookspecs: dict[str, Any],
                                    hook_sections: dict[str, str]) -> None:
    unknown = sorted(set(hook_sections) - set(hookspecs))
    assert not unknown, (f"docs/plugin_hooks.md has '## ' headings that name no hook: "
                         f"{unknown} (use '#' for other sections, '###' for other plugins' hooks)")


def test_every_hook_section_shows_the_signature(hookspecs: dict[str, Any],
                                                hook_sections: dict[str, str]) -> None:
    for name, spec in hookspecs.items():
        section = hook_sections.get(name, "")
        found = re.search(rf"def {name}\((.*?)\)", section, re.S)
        assert found, f"the '## {name}' section has no 'def {name}(...)' signature"
        params = tuple(re.findall(r"(\w+)\s*:", found.group(1)))
        assert params == tuple(spec.argnames), (
            f"docs give {name}{params}, the hookspec has {name}{tuple(spec.argnames)}")
        for part in ("**When:**", "**Parameters:**", "**Return"):
            assert part in section, f"the '## {name}' section lacks its {part} paragraph"


# --- docs/graphql.md ----------------------------------------------------------------------


class Crashing:
    """A plugin whose resolver has a bug: the INTERNAL_SERVER_ERROR example."""

    name = "crashing"

    @hookimpl
    def rapport_graphql_query_fields(self) -> dict[str, graphene.Field]:
        def resolve(root: Any, info: Any) -> str:
            raise RuntimeError("connection string with a password")

        def slow(root: Any, info: Any) -> int:
            return int(db.session.execute(SLOW_STATEMENTS[db.engine.dialect.name]).scalar_one())

        return {"crash": scoped(graphene.Field(graphene.String, resolver=resolve),
                                "customers:read"),
                "slow": scoped(graphene.Field(graphene.Int, resolver=slow), "customers:read")}


#: Statements that run for seconds: the STATEMENT_TIMEOUT example (with a 100 ms limit).
SLOW_STATEMENTS = {
    "postgresql": text("SELECT 1 FROM pg_sleep(5)"),
    "sqlite": text("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                   "WHERE i < 100000000) SELECT count(*) FROM n"),
}


def _with_statement_timeout(milliseconds: int, probe: Callable[[], TestResponse]
                            ) -> TestResponse:
    with statement_timeout(milliseconds):
        return probe()


Probe = Callable[[Flask, GraphQL, GraphQL, str], TestResponse]

#: (code, HTTP status) -> a request that gets that answer. Keys must match the doc's table.
PROBES: dict[tuple[str, int], Probe] = {
    ("UNAUTHENTICATED", 401): lambda app, admin, reader, cid: admin.raw(
        "{ plugins { name } }", token=None),
    ("FORBIDDEN", 403): lambda app, admin, reader, cid: reader.raw(
        "{ customers { totalCount } }"),
    ("FORBIDDEN", 200): lambda app, admin, reader, cid: reader.raw(
        "query($id: ID!) { node(id: $id) { id } }", {"id": cid}),
    ("GRAPHQL_PARSE_FAILED", 400): lambda app, admin, reader, cid: admin.raw(
        "{ customers { "),
    ("GRAPHQL_VALIDATION_FAILED", 400): lambda app, admin, reader, cid: admin.raw(
        "{ customers { nope } }"),
    ("QUERY_TOO_COMPLEX", 400): lambda app, admin, reader, cid: admin.raw(
        "{ customers(first: 100) { edges { node { interactions(first: 100) { edges { node {"
        " customer { interactions(first: 100) { edges { node { kind } } } } } } } } } } }"),
    ("BAD_USER_INPUT", 200): lambda app, admin, reader, cid: admin.raw(
        '{ node(id: "not-a-global-id") { id } }'),
    ("INTERNAL_SERVER_ERROR", 200): lambda app, admin, reader, cid: admin.raw(
        "{ crash plugins { name } }"),
    ("BAD_REQUEST", 400): lambda app, admin, reader, cid: app.test_client().post(
        "/graphql", json={"query": "{ plugins { name } }", "variables": [1]},
        headers={"Authorization": f"Bearer {admin.token}"}),
    ("METHOD_NOT_ALLOWED", 405): lambda app, admin, reader, cid: app.test_client().get(
        "/graphql"),
    ("BAD_USER_INPUT", 400): lambda app, admin, reader, cid: admin.raw(
        "query($f: CustomerFilterInput) { customers(filter: $f) { totalCount } }",
        {"f": {"city": ["Oslo"] * 1_001}}),
    ("RATE_LIMITED", 429): lambda app, admin, reader, cid: _over_the_rate_limit(app),
    ("PAYLOAD_TOO_LARGE", 413): lambda app, admin, reader, cid: admin.raw(
        "{ plugins { name } }" + " " * 1_048_576),
    ("STATEMENT_TIMEOUT", 200): lambda app, admin, reader, cid: _with_statement_timeout(
        100, lambda: admin.raw("{ slow }")),
    # Last: it leaves the customer unreadable.
    ("DECRYPTION_FAILED", 200): lambda app, admin, reader, cid: _undecryptable(app, admin,
                                                                               cid),
}


def _over_the_rate_limit(app: Flask) -> TestResponse:
    from core.auth import create_api_key

    with app.app_context():
        _, secret = create_api_key("hasty", ["admin"], rate_limit="1/minute")
    limited = GraphQL(app, secret)
    limited.raw("{ plugins { name } }")
    return limited.raw("{ plugins { name } }")


def _undecryptable(app: Flask, admin: GraphQL, customer_id: str) -> TestResponse:
    """The customer's e-mail rewritten under a key the app does not have."""
    from cryptography.fernet import Fernet

    foreign = Fernet(Fernet.generate_key()).encrypt(b"ada@example.com").decode("ascii")
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("UPDATE customers SET email = :token"), {"token": foreign})
    return admin.raw("query($id: ID!) { customer(id: $id) { name } }", {"id": customer_id})


def _documented_codes() -> set[tuple[str, int]]:
    rows = re.findall(r"^\| `([A-Z_]+)` \| (\d{3}) \|", GRAPHQL_MD.read_text(), re.M)
    assert rows, "docs/graphql.md has no '| `CODE` | status |' table"
    return {(code, int(status)) for code, status in rows}


def test_graphql_error_table_is_what_the_endpoint_returns(make_app: AppFactory) -> None:
    assert _documented_codes() == set(PROBES), "the table and PROBES list different answers"
    app = make_app(plugins=(Crashing(),))
    admin = GraphQL(app, admin_token(app))
    reader = GraphQL(app, admin_token(app, ("interactions:read",)))
    with app.app_context():
        created = admin('mutation { createCustomer(input: {name: "Ada"}) { customer { id } } }')
    customer_id = created["createCustomer"]["customer"]["id"]
    for (code, status), probe in PROBES.items():
        response = probe(app, admin, reader, customer_id)
        body = response.get_json()
        answered = (body["errors"][0]["extensions"]["code"], response.status_code)
        assert answered == (code, status), (code, status, body)
        assert "password" not in response.get_data(as_text=True)
        assert ("data" in body) == (status == 200), body


def test_documented_batch_error_path(gql: GraphQL) -> None:
    assert "`input.interactions.3.amount`" in GRAPHQL_MD.read_text()
    customer = gql('mutation { createCustomer(input: {name: "Ada"}) { customer { id } } }'
                   )["createCustomer"]["customer"]["id"]
    item = {"customerId": customer, "kind": "purchase", "occurredAt": "2026-01-05T10:00:00Z",
            "amount": "10.00", "currency": "USD"}
    result = gql("""mutation($items: [RecordInteractionInput!]!) {
      recordInteractions(input: {interactions: $items}) {
        recordedCount errors { field code } } }""",
                 {"items": [item, item, item, {**item, "amount": "-1"}]})
    assert result["recordInteractions"] == {
        "recordedCount": 0, "errors": [{"field": "input.interactions.3.amount",
                                        "code": "INVALID"}]}


def test_global_ids_are_base64_of_type_and_id() -> None:
    assert "`Q3VzdG9tZXI6MQ==` is `Customer:1`" in GRAPHQL_MD.read_text()
    assert relay.Node.to_global_id("Customer", 1) == "Q3VzdG9tZXI6MQ=="


def test_the_docs_stand_on_their_own() -> None:
    """Users get docs/ and the README, not the team's design notes: nothing cites them."""
    root = Path(__file__).resolve().parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md")),
             *sorted((root / "examples").glob("*/README.md"))]
    cited = [f"{page.relative_to(root)}:{n}" for page in pages
             for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"CONTRACTS\.md|DOMAIN\.md|DESIGN\.md|\.\./shared/", line)]
    assert cited == []
