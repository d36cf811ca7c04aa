"""Tasks: create (assignee defaults to the owner), update, complete, cancel; the list with
its filter and keyset pages, Customer.tasks without N+1; events and audit."""

from __future__ import annotations

import datetime as dt

from flask import Flask

from core.db import db
from core.models import AuditEntry, OutboxEvent
from tests.conftest import GraphQL, admin_token, count_statements
from tests.plugins.care.conftest import agent, customer, gid

CREATE = """mutation($input: CreateTaskInput!) { createTask(input: $input) {
  task { id kind title dueOn status source assignee { id } customer { id } }
  errors { field code message } } }"""
COMPLETE = """mutation($input: CompleteTaskInput!) { completeTask(input: $input) {
  task { id status outcome closedAt } errors { field code message } } }"""
CANCEL = """mutation($input: CancelTaskInput!) { cancelTask(input: $input) {
  task { id status } errors { field code } } }"""
UPDATE = """mutation($input: UpdateTaskInput!) { updateTask(input: $input) {
  task { id title dueOn kind assignee { id } } errors { field code } } }"""


def _create(gql: GraphQL, **fields: object) -> dict:
    result = gql(CREATE, {"input": {"kind": "CALL", "title": "Call", "dueOn": "2027-01-10",
                                    **fields}})["createTask"]
    return result


def test_assignee_defaults_to_the_owner_and_events_are_written(care_app: Flask,
                                                                gql: GraphQL) -> None:
    owner = agent()
    client = customer(owner=owner)
    result = _create(gql, customerId=gid("Customer", client))
    assert result["errors"] == []
    task = result["task"]
    assert task["assignee"]["id"] == gid("Agent", owner)
    assert task["customer"]["id"] == gid("Customer", client)
    assert (task["status"], task["source"], task["dueOn"]) == ("OPEN", "MANUAL", "2027-01-10")
    created = OutboxEvent.query.filter_by(type="task.created").one()
    assert created.data["taskId"] == task["id"]
    assert created.data["assigneeId"] == gid("Agent", owner)
    assert "title" not in created.data
    entry = AuditEntry.query.filter_by(operation="createTask").one()
    assert task["id"] in entry.object_ids


def test_typed_errors(care_app: Flask, gql: GraphQL) -> None:
    client = customer()  # no owner
    result = _create(gql, customerId=gid("Customer", client))
    assert result["task"] is None
    assert result["errors"] == [{"field": "input.assigneeId", "code": "ASSIGNEE_REQUIRED",
                                 "message": result["errors"][0]["message"]}]
    assert _create(gql, title="", assigneeId=gid("Agent", agent()))["errors"][0]["field"] == \
        "input.title"
    assert _create(gql, assigneeId="nonsense")["errors"][0]["code"] == "INVALID"
    gone = agent("Bo")
    gone.active = False
    db.session.commit()
    assert _create(gql, assigneeId=gid("Agent", gone))["errors"][0]["code"] == "AGENT_INACTIVE"
    assert OutboxEvent.query.filter_by(type="task.created").count() == 0


def test_update_complete_cancel(care_app: Flask, gql: GraphQL) -> None:
    ada, bo = agent(), agent("Bo")
    task_id = _create(gql, assigneeId=gid("Agent", ada))["task"]["id"]
    updated = gql(UPDATE, {"input": {"id": task_id, "title": "Visit", "kind": "VISIT",
                                     "assigneeId": gid("Agent", bo)}})["updateTask"]
    assert updated["errors"] == []
    assert updated["task"]["assignee"]["id"] == gid("Agent", bo)
    event = OutboxEvent.query.filter_by(type="task.updated").one()
    assert event.data["changedFields"] == ["assigneeId", "kind", "title"]
    done = gql(COMPLETE, {"input": {"id": task_id, "outcome": "Booked a visit"}})["completeTask"]
    assert done["task"]["status"] == "DONE" and done["task"]["outcome"] == "Booked a visit"
    assert done["task"]["closedAt"] is not None
    again = gql(CANCEL, {"input": {"id": task_id}})["cancelTask"]
    assert again["errors"] == [{"field": "input.id", "code": "ALREADY_CLOSED"}]
    other = _create(gql, assigneeId=gid("Agent", ada))["task"]["id"]
    assert gql(CANCEL, {"input": {"id": other}})["cancelTask"]["task"]["status"] == "CANCELLED"
    types = [e.type for e in OutboxEvent.query.order_by(OutboxEvent.id)]
    assert types.count("task.completed") == 1 and types.count("task.cancelled") == 1


LIST = """query($first: Int, $after: String, $filter: TaskFilter) {
  tasks(first: $first, after: $after, filter: $filter) { totalCount
    edges { node { id dueOn title assignee { name } customer { name } } }
    pageInfo { hasNextPage endCursor } } }"""


def test_filter_and_keyset_pages(care_app: Flask, gql: GraphQL) -> None:
    ada, bo = agent(), agent("Bo")
    for day in (5, 3, 4, 1):
        _create(gql, assigneeId=gid("Agent", ada), dueOn=f"2027-01-0{day}", title=f"t{day}")
    _create(gql, assigneeId=gid("Agent", bo), dueOn="2027-01-02", title="bo")
    mine = {"assignee": gid("Agent", ada), "status": ["OPEN"], "dueBefore": "2027-01-05"}
    first = gql(LIST, {"first": 2, "filter": mine})["tasks"]
    assert first["totalCount"] == 3
    assert [e["node"]["title"] for e in first["edges"]] == ["t1", "t3"]
    rest = gql(LIST, {"first": 2, "after": first["pageInfo"]["endCursor"],
                      "filter": mine})["tasks"]
    assert [e["node"]["title"] for e in rest["edges"]] == ["t4"]
    assert rest["pageInfo"]["hasNextPage"] is False
    bad = gql.raw(LIST, {"filter": {"assignee": "x"}}).get_json()
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_list_and_customer_tasks_in_constant_statements(care_app: Flask, gql: GraphQL) -> None:
    owner = agent()
    clients = [customer(f"C{i}", owner) for i in range(6)]
    for client in clients:
        for day in (1, 2):
            _create(gql, customerId=gid("Customer", client), dueOn=f"2027-02-0{day}")
    query = """{ tasks(first: 50) { edges { node { id customer { name } assignee { name } } } }
      customers(first: 10) { edges { node { tasks(first: 5) { totalCount
        edges { node { title assignee { name } } } } } } } }"""
    with count_statements(care_app) as few:
        small = gql(query.replace("first: 50", "first: 2").replace("first: 10", "first: 1"))
    with count_statements(care_app) as many:
        data = gql(query)
    assert len(data["tasks"]["edges"]) == 12
    assert all(e["node"]["tasks"]["totalCount"] == 2 for e in data["customers"]["edges"])
    assert small and len(many) == len(few)


def test_reading_tasks_needs_the_tasks_scope(care_app: Flask, gql: GraphQL) -> None:
    reader = admin_token(care_app, ("customers:read",))
    response = gql.raw("{ tasks { totalCount } }", token=reader)
    assert response.status_code == 403
    response = gql.raw("{ customers { edges { node { tasks { totalCount } } } } }",
                       token=reader)
    assert response.status_code == 403


def test_merge_and_erase_keep_the_tasks_consistent(care_app: Flask, gql: GraphQL) -> None:
    from core.services import customers as core_customers
    from plugins.care.models import Task, TaskStatus

    owner = agent()
    keep, dup = customer("Keep", owner), customer("Dup", owner)
    _create(gql, customerId=gid("Customer", dup), title="Call Dup about her order")
    core_customers.merge_customers(keep.id, [dup.id])
    task = Task.query.one()
    assert task.customer_id == keep.id
    exported = core_customers.export_customer(keep.id)["plugins"]["care"]["tasks"]
    assert [t["title"] for t in exported] == ["Call Dup about her order"]
    core_customers.erase_customer(keep.id)
    task = Task.query.one()
    assert (task.title, task.status) == ("(erased)", TaskStatus.CANCELLED)
    assert task.due_on == dt.date(2027, 1, 10)


def test_node_reads_a_task_with_the_tasks_scope_only(care_app: Flask, gql: GraphQL) -> None:
    task_id = _create(gql, assigneeId=gid("Agent", agent()))["task"]["id"]
    query = "query($id: ID!) { node(id: $id) { id ... on Task { title } } }"
    assert gql(query, {"id": task_id})["node"] == {"id": task_id, "title": "Call"}
    reader = admin_token(care_app, ("customers:read",))
    assert gql.raw(query, {"id": task_id}, token=reader).status_code == 403  # in the document
    other = gql.raw("query($id: ID!) { node(id: $id) { id } }", {"id": task_id},
                    token=reader).get_json()
    assert other["data"]["node"] is None
    assert other["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_demo_data_gives_owners_task_lists(care_app: Flask) -> None:
    import random

    import plugins.care as plugin
    from core.models import Customer
    from core.services import customers as core_customers
    from plugins.care.models import Task, TaskKind, TaskStatus

    owner = agent()
    as_of = dt.datetime(2026, 6, 30, 15, tzinfo=dt.timezone.utc)
    for n in range(20):
        core_customers.create_customer({"name": f"C{n}", "birth_date": f"1980-07-{n + 1:02d}",
                                        "owner_id": owner.id if n % 2 else None})
    rows = Customer.query.order_by(Customer.id).all()
    plugin.rapport_demo_data(rng=random.Random(3), customers=rows, as_of=as_of)
    db.session.commit()
    tasks = Task.query.all()
    assert {t.customer_id for t in tasks} == {c.id for c in rows if c.owner_id}
    assert {t.assignee_id for t in tasks} == {owner.id}
    assert {TaskStatus.OPEN, TaskStatus.DONE} <= {t.status for t in tasks}
    greetings = [t for t in tasks if t.kind is TaskKind.GREETING]
    assert greetings and all(as_of.date() <= t.due_on.replace(year=2026) <= dt.date(2026, 7, 30)
                             for t in greetings)
    assert all(t.outcome for t in tasks if t.status is TaskStatus.DONE)
