"""Findings of a review of segments: what a key may learn without the scopes of the data
behind a segment, cost, races within a document, ties in value tiers, audit."""

from __future__ import annotations

import datetime as dt

from flask import Flask
from sqlalchemy import func, select

from core.db import db
from core.models import AuditEntry
from core.services import transaction
from core.services.customers import merge_customers
from plugins.segments.models import Segment, ValueTier
from plugins.segments.tiers import compute_tiers
from tests.conftest import GraphQL, admin_token
from tests.plugins.segments.conftest import (
    CREATE, CUSTOMERS, DELETE, UPDATE, customer, purchase,
)


def test_counting_a_segment_needs_customers_read(segments_app: Flask, gql: GraphQL) -> None:
    """A segment's count and customers are customer data: segments:read/write alone must
    not turn a saved filter (birth date, attributes, tags...) into an oracle."""
    customer("Ada", city="Oslo", birth_date="1990-05-01")
    customer("Bob", city="Oslo")
    made = gql(CREATE, {"input": {"name": "Young", "filter": {"bornAfter": "1990-01-01"}}})
    young = made["createSegment"]["segment"]["id"]
    segments_only = GraphQL(segments_app, admin_token(segments_app, ("segments:read",
                                                                     "segments:write")))
    for query, variables in (
            ("{ segments { edges { node { name customerCount } } } }", {}),
            ("query($id: ID!) { segment(id: $id) { customers { totalCount } } }",
             {"id": young}),
            ("query($id: ID!) { node(id: $id) { ... on Segment { customerCount } } }",
             {"id": young}),
            ("""mutation { createSegment(input: {name: "Probe", filter: {bornAfter:
                "1990-01-01"}}) { segment { customerCount } } }""", {})):
        body = segments_only.raw(query, variables).get_json()
        assert {e["extensions"]["code"] for e in body.get("errors", [])} == {"FORBIDDEN"}, (
            query, body)
        assert "customers:read" in body["errors"][0]["message"]
    # The segment itself stays readable, and with customers:read the count is given.
    assert segments_only("{ segments { edges { node { name filter } } } }")["segments"][
        "edges"] == [{"node": {"name": "Young", "filter": {"bornAfter": "1990-01-01"}}}]
    both = GraphQL(segments_app, admin_token(segments_app, ("segments:read",
                                                            "customers:read")))
    assert both("query($id: ID!) { segment(id: $id) { customerCount customers { "
                "totalCount } } }", {"id": young})["segment"] == {
        "customerCount": 1, "customers": {"totalCount": 1}}


def test_a_merged_customers_tier_goes_with_them(segments_app: Flask) -> None:
    ada, copy = customer("Ada"), customer("Ada copy")
    purchase(copy, "10", dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc))
    compute_tiers(dt.date(2026, 6, 30))
    merge_customers(ada, [copy])
    assert db.session.scalar(select(func.count()).select_from(ValueTier)) == 1
    run = compute_tiers(dt.date(2026, 6, 30))
    assert run.customers == 1


def test_a_blank_name_is_refused(segments_app: Flask, gql: GraphQL) -> None:
    made = gql(CREATE, {"input": {"name": " \t ", "filter": {}}})["createSegment"]
    assert [(e["field"], e["code"]) for e in made["errors"]] == [("input.name", "INVALID")]


def test_counts_on_a_page_of_segments_are_charged_each(segments_app: Flask,
                                                      gql: GraphQL) -> None:
    """Each segment's customerCount (or customers) runs its own COUNT: 100 of them on one
    page cost what 100 totalCounts cost, over the default limit."""
    for query in ("{ segments(first: 100) { edges { node { customerCount } } } }",
                  "{ segments(first: 100) { edges { node { customers { totalCount } } } } }"):
        body = gql.raw(query).get_json()
        assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX", body
    assert gql("{ segments(first: 20) { edges { node { customerCount } } } }") == {
        "segments": {"edges": []}}


def test_a_cycle_stored_by_racing_updates_is_a_typed_error(segments_app: Flask,
                                                           gql: GraphQL) -> None:
    """Two concurrent updates (A names B, B names A) each lock only their own row: the
    cycle they can store reads as a typed error everywhere and can be undone."""
    customer("Ada", city="Oslo")
    a = gql(CREATE, {"input": {"name": "A", "filter": {"city": ["Oslo"]}}})["createSegment"]
    b = gql(CREATE, {"input": {"name": "B", "filter": {"segment": a["segment"]["id"]}}})
    a_id, b_id = a["segment"]["id"], b["createSegment"]["segment"]["id"]
    with transaction():  # what the race leaves behind
        db.session.get(Segment, 1).filter = {"segment": b_id}
    body = gql.raw(CUSTOMERS, {"f": {"segment": a_id}}).get_json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
    listed = gql.raw("{ segments { edges { node { name customerCount } } } }").get_json()
    assert {e["extensions"]["code"] for e in listed["errors"]} == {"BAD_USER_INPUT"}
    assert gql(DELETE, {"id": a_id})["deleteSegment"]["errors"][0]["code"] == "CONFLICT"
    fixed = gql(UPDATE, {"input": {"id": b_id, "filter": {"city": ["Oslo"]}}})
    assert fixed["updateSegment"]["errors"] == []
    assert gql(CUSTOMERS, {"f": {"segment": a_id}})["customers"]["totalCount"] == 1


def test_a_new_description_is_in_the_audit_entry(segments_app: Flask, gql: GraphQL) -> None:
    made = gql(CREATE, {"input": {"name": "A", "filter": {}}})["createSegment"]["segment"]
    gql(UPDATE, {"input": {"id": made["id"], "description": "Everyone"}})
    changes = db.session.scalar(select(AuditEntry.changes).where(
        AuditEntry.operation == "updateSegment"))
    assert changes == {"description": [None, "Everyone"]}


def test_counting_a_segment_deleted_later_in_the_document(segments_app: Flask,
                                                          gql: GraphQL) -> None:
    """Mutation fields run in turn, but a count is loaded after them all: the segment may
    be gone by then (it was an internal error)."""
    made = gql(CREATE, {"input": {"name": "A", "filter": {}}})["createSegment"]["segment"]
    body = gql.raw("""mutation($id: ID!) {
      u: updateSegment(input: {id: $id, name: "B"}) { segment { name customerCount } }
      d: deleteSegment(input: {id: $id}) { deletedId } }""", {"id": made["id"]}).get_json()
    assert body["data"] == {"u": {"segment": {"name": "B", "customerCount": None}},
                            "d": {"deletedId": made["id"]}}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
    assert "was deleted" in body["errors"][0]["message"]


def test_customers_with_equal_purchases_share_their_scores(segments_app: Flask) -> None:
    """NTILE alone split five identical customers over every score: low to top by id."""
    at = dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone.utc)
    same = [customer(name) for name in "ABCDE"]
    for who in same:
        purchase(who, "100", at)
    once, twice = customer("Once"), customer("Twice")
    purchase(once, "50", at - dt.timedelta(days=30))
    for days in (40, 50):
        purchase(twice, "500", at - dt.timedelta(days=days))
    compute_tiers(dt.date(2026, 6, 30))
    scores = {row.customer_id: (row.r_score, row.f_score, row.m_score, row.tier)
              for row in db.session.scalars(select(ValueTier))}
    # Seven buyers: NTILE(5) gives ranks 1,1,2,2,3,4,5. R: Twice 1, Once 1, the five share
    # the lowest of 2..5 (2); F: the six single buyers share 1, Twice 5; M: Once 1, the
    # five 100s share 1 (ranks 1..4 of 2..6 -> 1), Twice 5.
    assert {scores[who] for who in same} == {(2, 1, 1, "low")}
    assert scores[once] == (1, 1, 1, "low") and scores[twice] == (1, 5, 5, "high")


def test_an_edited_cursor_is_bad_input(segments_app: Flask, gql: GraphQL) -> None:
    """A cursor whose value is not an id (text compared with the integer key) is refused
    before it reaches the database, on both databases."""
    import base64

    forged = base64.urlsafe_b64encode(b'["x"]').decode().rstrip("=")
    body = gql.raw("query($a: String) { segments(after: $a) { totalCount } }",
                   {"a": forged}).get_json()
    assert body["data"] is None or body["data"]["segments"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
