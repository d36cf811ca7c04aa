"""Every list pages through ``api.pagination`` keyset cursors: page 2 via ``endCursor``
continues page 1 without a gap or a repeat (sort-key ties included), and an edited cursor
(valid base64 JSON of the wrong shape or types) is BAD_USER_INPUT, never a database error,
on both databases. One test parametrized over the list fields, on one seed."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from core.db import db
from core.ids import global_id
from core.job_tables import Job, JobStatus, Schedule
from core.models import Alert
from core.services.customers import create_customer
from core.services.interactions import record_interactions
from core.services.segments import validate_filter
from core.services.staff import create_agent
from plugins.care import service as care
from plugins.churn import service as churn
from plugins.churn.models import ChurnModelVersion, ChurnScore
from plugins.complaints import service as complaints
from plugins.segments import service as segments
from tests.conftest import AppFactory, GraphQL, admin_token, seeded
from tests.plugins.loyalty.conftest import usd_rule
from tests.plugins.surveys.conftest import answer, make_survey

PLUGINS = ["care", "churn", "complaints", "loyalty", "segments", "surveys"]
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _at(days: int) -> str:
    return (START + dt.timedelta(days=days)).isoformat()


def _seed() -> dict[str, int]:
    """Three or more rows in every list, with ties on the sort key where it has one; the
    parents of the nested lists: the customer Ann and a survey."""
    agents = [create_agent({"name": name, "email": f"{name.lower()}@example.com"}).id
              for name in ("Ada", "Bob", "Cy")]
    # "Ann" and "ANN" tie on the normalized name; "" sorts a nameless customer first.
    people = [create_customer({"name": name}).id for name in ("Ann", "ANN", "Bob", "Cid")]
    people.append(create_customer({"email": "nameless@example.com"}).id)
    ann = people[0]
    usd_rule(valid_from=_at(-1))  # Ann's purchases earn points: her loyalty ledger
    record_interactions([{"customer_id": ann, "kind": "purchase", "amount": "10",
                          "currency": "USD", "occurred_at": _at(day)}
                         for day in (1, 2, 2, 3, 4)])  # two at the same time
    for day in (1, 2, 2, 3):
        complaints.file_complaint({
            "customer_id": ann, "type": "logistics", "channel": "phone",
            "severity": "medium", "subject": "Parcel late", "description": "Still nothing.",
            "filed_at": _at(day)}, now=START + dt.timedelta(days=10))
    forms = [make_survey() for _ in range(3)]
    for form in forms:  # Ann answers each survey; the first survey gets three answers
        answer(form, ann, at=START + dt.timedelta(days=5), nps=9, overall=4)
    for who in people[1:3]:
        answer(forms[0], who, at=START + dt.timedelta(days=5), nps=7, overall=3)
    for n, day in enumerate((1, 1, 2)):
        churn.create_campaign({"name": f"Campaign {n}", "strategy": "relationship",
                               "started_at": _at(day)})
    for due in (3, 3, 4, 5):
        care.create_task({"customer_id": ann, "assignee_id": agents[0], "kind": "call",
                          "title": "Call Ann",
                          "due_on": (START + dt.timedelta(days=due)).date().isoformat()})
    for n in range(3):
        segments.create_segment({"name": f"Segment {n}"}, validate_filter({"city": ["Oslo"]}))
    version = ChurnModelVersion(as_of=START, kind="bgnbd+gg")
    db.session.add(version)
    db.session.flush()
    for who, priority in zip(people, (3.0, 3.0, 2.0, 1.0, 1.0), strict=True):
        db.session.add(ChurnScore(customer_id=who, model_version_id=version.id, risk=0.5,
                                  priority=priority))
    db.session.add_all([Alert(kind="test", severity="low", source="tests") for _ in range(3)])
    db.session.add_all([Job(kind="core.import_customers", status=JobStatus.SUCCEEDED)
                        for _ in range(3)])
    db.session.add_all([Schedule(name=f"Import {n}", kind="core.import_customers",
                                 interval_seconds=3600) for n in range(3)])
    db.session.commit()
    return {"customer": ann, "survey": forms[0].id}


@pytest.fixture
def lists_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=PLUGINS)
    with app.app_context():
        yield app


@pytest.fixture
def parents(lists_app: Flask) -> dict[str, str]:
    """The seed (a bulk copy after a process's first test), and the nested lists' parents."""
    ids = seeded("keyset_lists", _seed)
    return {"customer": global_id("Customer", ids["customer"]),
            "survey": global_id("Survey", ids["survey"])}


@pytest.fixture
def client(lists_app: Flask, parents: dict[str, str]) -> GraphQL:
    return GraphQL(lists_app, admin_token(lists_app))  # after the seed: it needs no rows


PAGE = "totalCount pageInfo { hasNextPage endCursor } edges { cursor node { %s } }"

#: name: (the field with its arguments, its parent ("customer", "survey" or None), what
#: identifies a node).
LISTS: dict[str, tuple[str, str | None, str]] = {
    "customers": ("customers(first: $first, after: $after)", None, "id"),
    "customersByUpdate": ("customers(first: $first, after: $after, "
                          "orderBy: {field: UPDATED_AT, direction: DESC})", None, "id"),
    "customersByName": ("customers(first: $first, after: $after, "
                        "orderBy: {field: NAME, direction: ASC})", None, "id"),
    "customersByNameDesc": ("customers(first: $first, after: $after, "
                            "orderBy: {field: NAME, direction: DESC})", None, "id"),
    "alerts": ("alerts(first: $first, after: $after)", None, "id"),
    "agents": ("agents(first: $first, after: $after)", None, "id"),
    "jobs": ("jobs(first: $first, after: $after)", None, "id"),
    "schedules": ("schedules(first: $first, after: $after)", None, "id"),
    "auditEntries": ("auditEntries(first: $first, after: $after)", None, "id"),
    "complaints": ("complaints(first: $first, after: $after)", None, "id"),
    "surveys": ("surveys(first: $first, after: $after)", None, "id"),
    "winbackCampaigns": ("winbackCampaigns(first: $first, after: $after)", None, "id"),
    "churnWarnings": ("churnWarnings(first: $first, after: $after)", None, "customer { id }"),
    "tasks": ("tasks(first: $first, after: $after)", None, "id"),
    "segments": ("segments(first: $first, after: $after)", None, "id"),
    "Customer.interactions": ("interactions(first: $first, after: $after)", "customer", "id"),
    "Customer.complaints": ("complaints(first: $first, after: $after)", "customer", "id"),
    "Customer.surveyResponses": ("surveyResponses(first: $first, after: $after)", "customer",
                                 "id"),
    "Customer.tasks": ("tasks(first: $first, after: $after)", "customer", "id"),
    "Customer.loyalty.ledger": ("loyalty { ledger(first: $first, after: $after)", "customer",
                                "id"),
    "Survey.responses": ("responses(first: $first, after: $after)", "survey", "id"),
}


def _fetch(client: GraphQL, parents: dict[str, str], name: str, first: int,
           after: str | None) -> Any:
    """The list's connection (or, with errors, the response body)."""
    field, parent, node = LISTS[name]
    body = f"{field} {{ {PAGE % node} }}" + " }" * (field.count("{") - field.count("}"))
    variables: dict[str, Any] = {"first": first, "after": after}
    if parent is None:
        document = f"query($first: Int, $after: String) {{ {body} }}"
    else:
        document = (f"query($first: Int, $after: String, $id: ID!) {{ "
                    f"{parent}(id: $id) {{ {body} }} }}")
        variables["id"] = parents[parent]
    response = client.raw(document, variables).get_json()
    if "errors" in response:
        return response
    data = response["data"]
    if parent is not None:
        data = data[parent]
    data = data[field.split("(")[0].split(" ")[0]]
    return data.get("ledger", data)


def _ids(connection: dict[str, Any]) -> list[Any]:
    return [edge["node"] for edge in connection["edges"]]


def _encode(values: Any) -> str:
    raw = json.dumps(values, separators=(",", ":"))  # allow_nan: NaN, as a client may send
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _forgeries(values: list[Any]) -> Iterator[list[Any] | Any]:
    """Edits of a real cursor's values: another length, and each value of another type."""
    yield [*values, 1]
    yield values[:-1]
    yield {"values": values}
    for i, value in enumerate(values):
        if isinstance(value, dict):  # a datetime: naive, or plain text
            wrong: list[Any] = [{"t": value["t"][:19]}, value["t"], 1]
        elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
            wrong = ["x"]
        elif isinstance(value, str):
            wrong = [1, None]
        elif isinstance(value, float):
            wrong = ["x", float("nan"), float("inf"), 1]
        else:  # an int (an id, or a day's ordinal)
            wrong = [str(value), float(value) + 0.5, 2**70, True, [value]]
        for bad in wrong:
            yield [*values[:i], bad, *values[i + 1:]]


@pytest.mark.parametrize("name", list(LISTS))
def test_pages_continue_and_an_edited_cursor_is_bad_input(
        parents: dict[str, str], client: GraphQL, name: str) -> None:
    """One set-up, two checks: pages of 2 via endCursor walk the whole list (as one page of
    100 has it) without a gap or a repeat; every edit of a real cursor is refused."""
    whole = _fetch(client, parents, name, 100, None)
    assert "edges" in whole, whole
    expected = _ids(whole)
    assert len(expected) >= 3 and whole["totalCount"] == len(expected)
    assert len({json.dumps(node, sort_keys=True) for node in expected}) == len(expected)
    seen: list[Any] = []
    after = None
    while True:
        page = _fetch(client, parents, name, 2, after)
        assert "edges" in page, page
        assert page["totalCount"] == len(expected)
        assert page["edges"] and page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        seen += _ids(page)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == expected

    cursor = whole["edges"][0]["cursor"]
    values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    for forged in _forgeries(values):
        body = _fetch(client, parents, name, 1, _encode(forged))
        assert "errors" in body, (forged, body)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"], (
            forged, body["errors"])
