"""A customer's start date (customerSince) cannot move after its churn date: updateCustomer
answers a typed error on customerSince and writes nothing; the churn date's own day and
earlier days are accepted. (The importer only creates customers, which have no churn
records yet; marking churn before the start date is refused by the churn plugin.)"""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask

from core.db import db
from core.errors import UserError
from core.ids import global_id
from core.models import Customer
from core.services.customers import update_customer
from tests.conftest import GraphQL
from tests.plugins.churn.conftest import customer, days_ago, mark

UPDATE = """mutation($input: UpdateCustomerInput!) { updateCustomer(input: $input) {
    customer { customerSince } errors { field code message } } }"""


def test_a_start_date_after_the_churn_date_is_refused(churn_app: Flask, gql: GraphQL) -> None:
    ada = customer("Ada", created_days_ago=400)
    churned_at = days_ago(100)
    mark(ada, churned_at)
    day = churned_at.date()
    later = (day + dt.timedelta(days=1)).isoformat()
    result = gql(UPDATE, {"input": {"id": global_id("Customer", ada),
                                    "customerSince": later}})["updateCustomer"]
    (error,) = result["errors"]
    assert error["field"] == "input.customerSince" and error["code"] == "INVALID"
    assert later in error["message"] and day.isoformat() in error["message"]
    assert result["customer"] is None
    db.session.expire_all()
    assert db.session.get(Customer, ada).customer_since is None
    with pytest.raises(UserError) as raised:
        update_customer(ada, {"customer_since": later})
    assert raised.value.errors[0].field == "customerSince"
    assert "churn date" in raised.value.errors[0].message
    # The churn date's own day (00:00 is before the churn moment) and earlier are fine.
    for since in (day.isoformat(), (day - dt.timedelta(days=30)).isoformat()):
        done = gql(UPDATE, {"input": {"id": global_id("Customer", ada),
                                      "customerSince": since}})["updateCustomer"]
        assert done["errors"] == [] and done["customer"]["customerSince"] == since


def test_a_customer_without_churn_records_takes_any_start_date(churn_app: Flask) -> None:
    bea = customer("Bea", created_days_ago=10)
    later = (days_ago(1).date()).isoformat()
    assert update_customer(bea, {"customer_since": later}).customer_since.isoformat() == later
