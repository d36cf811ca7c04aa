"""The complaints GraphQL API: a complaint from filing to closure, lists, bad input."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask
from graphene import relay
from sqlalchemy import func, select

from core.db import db
from core.services.customers import erase_customer
from plugins.complaints.models import Complaint, TimelineEntry
from tests.conftest import GraphQL, admin_token, count_statements
from tests.plugins.complaints.conftest import NOW, agent, customer, days_ago, file, move

FIELDS = """id status type channel severity subject tags reopenCount satisfaction
  customerResolved cause rootCause solution firstResponseAt resolvedAt closedAt
  assignee { name } customer { name }
  sla { firstResponseDue resolutionDue firstResponseBreached resolutionBreached breached }
  availableTransitions { to targetStatus requires accepts }
  timeline { kind fromStatus toStatus transition note actor { name } stepData }"""
FILE = """mutation($input: FileComplaintInput!) { fileComplaint(input: $input) {
  complaint { %s } errors { field message code } } }""" % FIELDS
TRANSITION = """mutation($input: TransitionComplaintInput!) { transitionComplaint(input: $input) {
  complaint { %s } errors { field message code } } }""" % FIELDS
ASSIGN = """mutation($input: AssignComplaintInput!) { assignComplaint(input: $input) {
  complaint { assignee { name } timeline { kind stepData } } errors { field message code } } }"""
NOTE = """mutation($input: AddComplaintNoteInput!) { addComplaintNote(input: $input) {
  complaint { timeline { kind note } } errors { field message code } } }"""


def gid(type_name: str, ident: int) -> str:
    return relay.Node.to_global_id(type_name, ident)


def _count() -> tuple[int, int]:
    return (db.session.scalar(select(func.count()).select_from(Complaint)) or 0,
            db.session.scalar(select(func.count()).select_from(TimelineEntry)) or 0)


def test_a_complaint_from_filing_to_closure(gql: GraphQL, complaints_app: Flask) -> None:
    ada, grace = customer("Ada"), agent("Grace")
    # Filed now (not at the module's NOW, which is minutes old in a long test run).
    filed_at = dt.datetime.now(dt.timezone.utc)
    filed = gql(FILE, {"input": {
        "customerId": gid("Customer", ada), "type": "product_quality", "channel": "email",
        "severity": "HIGH", "subject": "Kettle leaks", "tags": ["kettle"],
        "assigneeId": gid("Agent", grace)}})["fileComplaint"]
    assert filed["errors"] == []
    complaint = filed["complaint"]
    assert (complaint["status"], complaint["severity"], complaint["assignee"]["name"],
            complaint["customer"]["name"]) == ("RECEIVED", "HIGH", "Grace", "Ada")
    assert complaint["sla"]["breached"] is False
    due = dt.datetime.fromisoformat(complaint["sla"]["firstResponseDue"])
    assert dt.timedelta(hours=3, minutes=59) < due - filed_at < dt.timedelta(hours=4, minutes=1)
    assert complaint["availableTransitions"] == [
        {"to": "CONFIRMED", "targetStatus": "CONFIRMED", "requires": ["cause"],
         "accepts": ["type"]},
        {"to": "REJECTED", "targetStatus": "REJECTED", "requires": ["reason"], "accepts": []}]
    steps: list[dict[str, Any]] = [
        {"to": "CONFIRMED", "cause": "QUALITY_DEFECT", "note": "Photo received"},
        {"to": "ANALYZING", "rootCause": "Faulty seal batch"},
        {"to": "SOLUTION_PROPOSED", "solution": "Replace the kettle"},
        {"to": "IMPLEMENTING"},
        {"to": "FEEDBACK", "satisfaction": 5, "customerResolved": True},
        {"to": "CLOSED"},
    ]
    for step in steps:
        result = gql(TRANSITION, {"input": {"id": complaint["id"], **step}})
        assert result["transitionComplaint"]["errors"] == [], step
    done = result["transitionComplaint"]["complaint"]
    assert (done["status"], done["cause"], done["rootCause"], done["satisfaction"],
            done["customerResolved"]) == ("CLOSED", "QUALITY_DEFECT", "Faulty seal batch", 5,
                                          True)
    assert done["firstResponseAt"] and done["resolvedAt"] and done["closedAt"]
    assert [(e["fromStatus"], e["toStatus"]) for e in done["timeline"]] == [
        (None, "RECEIVED"), ("RECEIVED", "CONFIRMED"), ("CONFIRMED", "ANALYZING"),
        ("ANALYZING", "SOLUTION_PROPOSED"), ("SOLUTION_PROPOSED", "IMPLEMENTING"),
        ("IMPLEMENTING", "FEEDBACK"), ("FEEDBACK", "CLOSED")]
    assert done["timeline"][1]["note"] == "Photo received"
    assert done["timeline"][1]["stepData"] == {"cause": "quality_defect"}
    assert done["timeline"][5]["stepData"] == {"satisfaction": 5, "customerResolved": True}
    assert done["availableTransitions"] == [
        {"to": "REOPENED", "targetStatus": "ANALYZING", "requires": ["reason"],
         "accepts": ["rootCause"]}]
    reopened = gql(TRANSITION, {"input": {"id": complaint["id"], "to": "REOPENED",
                                          "reason": "Leaks again"}})["transitionComplaint"]
    assert (reopened["complaint"]["status"], reopened["complaint"]["reopenCount"]) == (
        "ANALYZING", 1)


def test_bad_input_of_every_mutation_writes_nothing(gql: GraphQL,
                                                    complaints_app: Flask) -> None:
    ada = customer()
    complaint = file(ada)
    closed = file(ada)
    for to, data in [("confirmed", {"cause": "other"}), ("analyzing", {"root_cause": "x"}),
                     ("solution_proposed", {"solution": "y"}), ("implementing", {}),
                     ("feedback", {"satisfaction": 3, "customer_resolved": False}),
                     ("closed", {})]:
        move(closed.id, to, **data)
    gone = customer("Erased")
    erase_customer(gone)
    before = _count()
    base = {"customerId": gid("Customer", ada), "type": "logistics", "channel": "phone",
            "subject": "Late"}
    file_cases = [
        ({**base, "type": "weather"}, [("input.type", "UNKNOWN_TYPE")]),
        ({**base, "channel": "pigeon"}, [("input.channel", "UNKNOWN_CHANNEL")]),
        ({**base, "customerId": gid("Customer", gone)}, [("input.customerId",
                                                          "CUSTOMER_ERASED")]),
        ({**base, "customerId": gid("Agent", 1)}, [("input.customerId", "INVALID")]),
        ({**base, "subject": ""}, [("input.subject", "INVALID")]),
    ]
    for given, expected in file_cases:
        errors = gql(FILE, {"input": given})["fileComplaint"]["errors"]
        assert [(e["field"], e["code"]) for e in errors] == expected, given
    ident = gid("Complaint", complaint.id)
    transition_cases = [
        ({"id": gid("Complaint", closed.id), "to": "ANALYZING", "rootCause": "again"},
         [("input.to", "ILLEGAL_TRANSITION")]),
        ({"id": ident, "to": "CONFIRMED"}, [("input.cause", "STEP_DATA_REQUIRED")]),
        ({"id": ident, "to": "FEEDBACK", "satisfaction": 7, "customerResolved": True},
         [("input.satisfaction", "INVALID")]),
        ({"id": gid("Complaint", 987_654), "to": "CLOSED"}, [("input.id", "NOT_FOUND")]),
    ]
    for given, expected in transition_cases:
        errors = gql(TRANSITION, {"input": given})["transitionComplaint"]["errors"]
        assert [(e["field"], e["code"]) for e in errors] == expected, given
    assign = gql(ASSIGN, {"input": {"id": ident, "assigneeId": gid("Agent", 999)}})
    assert [(e["field"], e["code"]) for e in assign["assignComplaint"]["errors"]] == [
        ("input.assigneeId", "NOT_FOUND")]
    assign = gql(ASSIGN, {"input": {"id": ident}})
    assert [(e["field"], e["code"]) for e in assign["assignComplaint"]["errors"]] == [
        ("input.assigneeId", "REQUIRED")]
    note = gql(NOTE, {"input": {"id": ident, "note": ""}})
    assert [(e["field"], e["code"]) for e in note["addComplaintNote"]["errors"]] == [
        ("input.note", "INVALID")]
    assert _count() == before


def test_assign_and_note(gql: GraphQL, complaints_app: Flask) -> None:
    grace = agent("Grace")
    complaint = file(customer())
    ident = gid("Complaint", complaint.id)
    assigned = gql(ASSIGN, {"input": {"id": ident, "assigneeId": gid("Agent", grace)}})
    payload = assigned["assignComplaint"]
    assert payload["errors"] == [] and payload["complaint"]["assignee"]["name"] == "Grace"
    assert payload["complaint"]["timeline"][-1] == {
        "kind": "ASSIGNMENT", "stepData": {"fromAssigneeId": None, "toAssigneeId": gid("Agent", grace)}}
    unassigned = gql(ASSIGN, {"input": {"id": ident, "assigneeId": None}})
    assert unassigned["assignComplaint"]["complaint"]["assignee"] is None
    noted = gql(NOTE, {"input": {"id": ident, "note": "Called back"}})["addComplaintNote"]
    assert noted["complaint"]["timeline"][-1] == {"kind": "NOTE", "note": "Called back"}


LIST = """query($first: Int, $after: String, $filter: ComplaintFilter) {
  complaints(first: $first, after: $after, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { subject } } } }"""


def _subjects(gql: GraphQL, filter: dict[str, Any], first: int = 20) -> list[str]:
    data = gql(LIST, {"first": first, "filter": filter})["complaints"]
    return [e["node"]["subject"] for e in data["edges"]]


def test_list_filters_and_keyset_pages(gql: GraphQL, complaints_app: Flask) -> None:
    ada, bob, grace = customer("Ada"), customer("Bob"), agent("Grace")
    for day in range(6):
        file(ada if day % 2 else bob, at=days_ago(10 - day), subject=f"C{day}",
             severity="critical" if day == 5 else "low", type="price" if day < 2 else "logistics",
             assignee_id=grace if day == 3 else None)
    move(db.session.scalar(select(Complaint.id).where(Complaint.subject == "C4")), "rejected",
         reason="Duplicate")
    assert _subjects(gql, {}) == ["C5", "C4", "C3", "C2", "C1", "C0"]
    seen, after = [], None
    while True:
        page = gql(LIST, {"first": 4, "after": after})["complaints"]
        assert page["totalCount"] == 6
        seen += [e["node"]["subject"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == ["C5", "C4", "C3", "C2", "C1", "C0"]
    assert _subjects(gql, {"status": "REJECTED"}) == ["C4"]
    assert _subjects(gql, {"type": ["price"]}) == ["C1", "C0"]
    assert _subjects(gql, {"severity": ["CRITICAL"]}) == ["C5"]
    assert _subjects(gql, {"customerId": gid("Customer", ada)}) == ["C5", "C3", "C1"]
    assert _subjects(gql, {"assignee": gid("Agent", grace)}) == ["C3"]
    assert _subjects(gql, {"from": days_ago(8.5).isoformat(),
                           "to": days_ago(6.5).isoformat()}) == ["C3", "C2"]
    # every one is past its first-response target except the rejected one (answered)
    assert _subjects(gql, {"overdue": True}) == ["C5", "C3", "C2", "C1", "C0"]
    assert _subjects(gql, {"overdue": False}) == ["C4"]
    bad = gql.raw(LIST, {"filter": {"customerId": "nope"}}).get_json()
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    bad = gql.raw(LIST, {"filter": {"from": NOW.isoformat(), "to": days_ago(3).isoformat()}}
                  ).get_json()
    assert "filter.filedTo" in bad["errors"][0]["message"]


def test_customer_complaints_cost_the_same_for_any_page(gql: GraphQL,
                                                        complaints_app: Flask) -> None:
    for n in range(30):
        who = customer(f"C{n:02d}")
        for k in range(n % 4):
            file(who, at=days_ago(k + 1), subject=f"S{n}-{k}")
    query = """query($n: Int) { customers(first: $n) { edges { node { name
      complaints(first: 2) { totalCount edges { node { subject status sla { breached } } } }
    } } } }"""
    gql("{ plugins { name } }")  # the key's first use is recorded once
    counts = {}
    for n in (5, 30):
        with count_statements(complaints_app) as statements:
            edges = gql(query, {"n": n})["customers"]["edges"]
        counts[n] = len(statements)
    assert counts[5] == counts[30], counts
    assert counts[30] == 3, counts  # customers, complaints page, complaint counts (key cached)
    by_name = {e["node"]["name"]: e["node"]["complaints"] for e in edges}
    assert by_name["C03"]["totalCount"] == 3
    assert [e["node"]["subject"] for e in by_name["C03"]["edges"]] == ["S3-0", "S3-1"]
    assert by_name["C04"] == {"totalCount": 0, "edges": []}


def test_vocabularies_and_complaint_by_id(gql: GraphQL, complaints_app: Flask) -> None:
    data = gql("{ complaintTypes { code description } complaintChannels { code } }")
    assert [t["code"] for t in data["complaintTypes"]] == [
        "product_quality", "price", "after_sales", "logistics", "staff_attitude", "other"]
    assert [c["code"] for c in data["complaintChannels"]] == [
        "phone", "email", "social_media", "web", "in_person", "other"]
    complaint = file(customer())
    one = gql("query($id: ID!) { complaint(id: $id) { subject } node(id: $id) { id } }",
              {"id": gid("Complaint", complaint.id)})
    assert one["complaint"] == {"subject": "Parcel late"}
    assert one["node"] == {"id": gid("Complaint", complaint.id)}


def test_scopes(complaints_app: Flask) -> None:
    reader = GraphQL(complaints_app, admin_token(complaints_app, ("complaints:read",)))
    assert reader("{ complaints { totalCount } }") == {"complaints": {"totalCount": 0}}
    denied = reader.raw(FILE, {"input": {"customerId": gid("Customer", 1), "type": "price",
                                         "channel": "web", "subject": "x"}}).get_json()
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    outsider = GraphQL(complaints_app, admin_token(complaints_app, ("customers:read",)))
    denied = outsider.raw("{ complaints { totalCount } }").get_json()
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"
