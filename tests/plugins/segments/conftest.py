"""Fixtures and helpers of the segments tests: an app with the plugin, customers and
purchases made through the core services."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from core.ids import global_id
from core.services.customers import create_customer
from core.services.interactions import record_interaction
from tests.conftest import AppFactory, GraphQL, admin_token

CREATE = """mutation($input: CreateSegmentInput!) { createSegment(input: $input) {
  segment { id name description filter customerCount createdAt updatedAt }
  errors { field code message } } }"""
UPDATE = """mutation($input: UpdateSegmentInput!) { updateSegment(input: $input) {
  segment { id name filter customerCount } errors { field code message } } }"""
DELETE = """mutation($id: ID!) { deleteSegment(input: {id: $id}) {
  deletedId errors { field code message } } }"""
CUSTOMERS = """query($f: CustomerFilterInput) { customers(first: 50, filter: $f) {
  totalCount edges { node { name } } } }"""


@pytest.fixture
def segments_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["segments"])
    with app.app_context():
        yield app


@pytest.fixture
def gql(segments_app: Flask) -> GraphQL:
    return GraphQL(segments_app, admin_token(segments_app))


def customer(name: str, **fields: Any) -> int:
    return create_customer({"name": name, **fields}).id


def purchase(customer_id: int, amount: str, at: dt.datetime, *, currency: str = "USD",
             kind: str = "purchase") -> int:
    return record_interaction({"customer_id": customer_id, "kind": kind,
                               "occurred_at": at.isoformat(), "amount": amount,
                               "currency": currency}).id


def names(result: dict[str, Any]) -> list[str]:
    return sorted(edge["node"]["name"] for edge in result["customers"]["edges"])


def gid(type_name: str, ident: int) -> str:
    return global_id(type_name, ident)
