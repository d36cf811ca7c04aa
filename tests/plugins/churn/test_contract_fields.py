"""A customer's own start date and contractual history: GraphQL, CSV import, features,
and an import whose every row was rejected failing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from core.cli import cli
from core.db import db
from core.models import Customer
from plugins.churn import features
from tests.conftest import GraphQL
from tests.plugins.churn.conftest import NOW, customer, days_ago

CREATE = """mutation($input: CreateCustomerInput!) { createCustomer(input: $input) {
  customer { customerSince tenurePeriods period } errors { field code message } } }"""


def test_graphql_sets_and_reads_contract_fields(gql: GraphQL) -> None:
    data = gql(CREATE, {"input": {"name": "Ada", "customerSince": "2019-03-01",
                                     "tenurePeriods": 45, "period": "Month"}})
    assert data["createCustomer"]["customer"] == {
        "customerSince": "2019-03-01", "tenurePeriods": 45, "period": "month"}
    bad = gql(CREATE, {"input": {"name": "Bo", "customerSince": "1899-12-31",
                                    "tenurePeriods": -1, "period": "week"}})
    assert bad["createCustomer"]["customer"] is None
    assert sorted(e["field"] for e in bad["createCustomer"]["errors"]) == [
        "input.customerSince", "input.period", "input.tenurePeriods"]


def test_csv_import_columns_and_all_rejected_exit(churn_app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("external_id,name,customer_since,tenure_periods,period\n"
                    "T-1,Ada,2018-01-15,70,month\n"
                    "T-2,Bo,,2,YEAR\n", encoding="utf-8")
    runner = churn_app.test_cli_runner()
    result = runner.invoke(cli, ["import", "customers", str(path)])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    rows = {c.name: (c.customer_since, c.tenure_periods, c.period)
            for c in db.session.scalars(select(Customer))}
    assert rows == {"Ada": (dt.date(2018, 1, 15), 70, "month"), "Bo": (None, 2, "year")}
    bad = tmp_path / "bad.csv"
    bad.write_text("external_id,tenure_periods,period\nT-3,-4,month\nT-4,2,fortnight\n",
                   encoding="utf-8")
    failed = runner.invoke(cli, ["import", "customers", str(bad)])
    assert failed.exit_code == 1, failed.output
    assert "every row was rejected" in failed.output


def test_tenure_counts_from_customer_since(churn_app: Flask) -> None:
    as_of = days_ago(10)
    since = (NOW - dt.timedelta(days=1000)).date()
    # A record created 5 days ago for a customer of 1,000 days: it exists at as_of.
    old = customer("Old", created_days_ago=5, customer_since=since.isoformat())
    new = customer("New", created_days_ago=50)
    spec = features.feature_spec(as_of)
    chunks = list(features.feature_chunks(spec, 1000))
    names = features.feature_names(spec)
    ids = [int(i) for c in chunks for i in c.customer_ids]
    values = [v for c in chunks for v in c.values]
    by_id = {i: dict(zip(names, v)) for i, v in zip(ids, values)}
    assert set(by_id) == {old, new}
    midnight = dt.datetime.combine(since, dt.time(), dt.timezone.utc)
    assert by_id[old]["tenure_days"] == pytest.approx((as_of - midnight).total_seconds()
                                                      / 86400)
    assert by_id[old]["recency_days"] == pytest.approx(by_id[old]["tenure_days"])
    assert by_id[new]["tenure_days"] == pytest.approx(40)
