"""Saved segments through GraphQL: CRUD, typed errors, audit and events, nesting and
cycles, filtering customers by a segment, and what a key without segments:read sees."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask
from sqlalchemy import select

from core import outbox
from core.db import db
from core.models import AuditEntry, OutboxEvent
from core.services import transaction
from plugins.segments.models import Segment
from plugins.segments.tiers import compute_tiers
from tests.conftest import GraphQL, admin_token, count_statements
from tests.core.test_event_emission import _mismatches
from tests.plugins.segments.conftest import (
    CREATE, CUSTOMERS, DELETE, UPDATE, customer, gid, names, purchase,
)


def create(gql: GraphQL, name: str, filter: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return gql(CREATE, {"input": {"name": name, "filter": filter, **extra}})["createSegment"]


def test_create_update_delete_with_audit_and_events(segments_app: Flask, gql: GraphQL) -> None:
    customer("Ada", city="Oslo", tags=["vip"])
    customer("Bob", city="Oslo")
    customer("Cy", city="Rome", tags=["vip"])
    made = create(gql, "Oslo VIPs", {"city": ["Oslo"], "tagsAll": ["vip"]},
                  description="Our best in Oslo")
    assert made["errors"] == []
    segment = made["segment"]
    assert segment["filter"] == {"city": ["Oslo"], "tagsAll": ["vip"]}
    assert segment["customerCount"] == 1 and segment["description"] == "Our best in Oslo"

    changed = gql(UPDATE, {"input": {"id": segment["id"], "name": "Oslo",
                                     "filter": {"city": ["Oslo"]}}})["updateSegment"]
    assert changed["errors"] == []
    assert changed["segment"]["filter"] == {"city": ["Oslo"]}
    assert changed["segment"]["customerCount"] == 2

    deleted = gql(DELETE, {"id": segment["id"]})["deleteSegment"]
    assert deleted == {"deletedId": segment["id"], "errors": []}
    assert db.session.scalar(select(Segment)) is None

    audit = db.session.execute(select(AuditEntry.operation, AuditEntry.object_ids).order_by(
        AuditEntry.id)).all()
    assert [tuple(a) for a in audit if a.operation.endswith("Segment")] == [
        ("createSegment", [segment["id"]]), ("updateSegment", [segment["id"]]),
        ("deleteSegment", [segment["id"]])]
    events = db.session.execute(select(OutboxEvent.type, OutboxEvent.data).where(
        OutboxEvent.type.like("segment.%")).order_by(OutboxEvent.id)).all()
    assert [(e.type, e.data) for e in events] == [
        ("segment.created", {"segmentId": segment["id"], "name": "Oslo VIPs"}),
        ("segment.updated", {"segmentId": segment["id"], "name": "Oslo"}),
        ("segment.deleted", {"segmentId": segment["id"], "name": "Oslo"})]
    catalogue = outbox.catalogue()
    assert [_mismatches(catalogue[e.type].schema, e.data) for e in events] == [[], [], []]


def test_typed_errors(segments_app: Flask, gql: GraphQL) -> None:
    assert create(gql, "Oslo", {"city": ["Oslo"]})["errors"] == []

    def errors(payload: dict[str, Any]) -> list[tuple[str, str]]:
        return [(e["field"], e["code"]) for e in payload["errors"]]

    assert errors(create(gql, "oslo", {"city": ["Rome"]})) == [("input.name", "UNIQUE")]
    # One name on both databases: case-folded beyond ASCII (SQLite's lower() is not), and
    # the same non-ASCII name twice is UNIQUE, not the unique key's 500 (found by fuzzing).
    assert create(gql, "Ýüð Straße", {"city": ["Oslo"]})["errors"] == []
    for taken in ("Ýüð Straße", "ýÜÐ STRASSE"):
        assert errors(create(gql, taken, {"city": ["Rome"]})) == [("input.name", "UNIQUE")]
    # Folding lengthens some names ("ﬃ" is "ffi"): they fit; one that grows past the key's
    # room is INVALID, not the database's 500.
    assert create(gql, "ﬃ" * 100, {"city": ["Oslo"]})["errors"] == []
    assert errors(create(gql, "\ufdfa" * 60, {"city": ["Oslo"]})) == [("input.name", "INVALID")]
    assert errors(create(gql, "Bad", {"country": ["Norway"]})) == [
        ("input.filter.country.0", "INVALID")]
    assert errors(create(gql, "One person", {"email": "ada@example.com"})) == [
        ("input.filter.email", "NOT_ALLOWED")]
    assert errors(create(gql, "Ghost", {"segment": gid("Segment", 999)})) == [
        ("input.filter.segment", "NOT_FOUND")]
    assert errors(create(gql, "Wrong id", {"segment": gid("Customer", 1)})) == [
        ("input.filter.segment", "INVALID")]
    missing = gql(UPDATE, {"input": {"id": gid("Segment", 999), "name": "x"}})
    assert errors(missing["updateSegment"]) == [("input.id", "NOT_FOUND")]
    assert set(db.session.scalars(select(Segment.name))) == {"Oslo", "Ýüð Straße", "ﬃ" * 100}


def test_nested_segments_refuse_cycles_and_deleting_a_named_one(
        segments_app: Flask, gql: GraphQL) -> None:
    customer("Ada", city="Oslo", tags=["vip"])
    customer("Bob", city="Oslo")
    oslo = create(gql, "Oslo", {"city": ["Oslo"]})["segment"]
    vips = create(gql, "Oslo VIPs", {"segment": oslo["id"], "tagsAny": ["vip"]})["segment"]
    assert vips["customerCount"] == 1
    assert vips["filter"] == {"segment": oslo["id"], "tagsAny": ["vip"]}
    assert names(gql(CUSTOMERS, {"f": {"segment": vips["id"]}})) == ["Ada"]

    cycle = gql(UPDATE, {"input": {"id": oslo["id"], "filter": {"segment": vips["id"]}}})
    assert [(e["field"], e["code"]) for e in cycle["updateSegment"]["errors"]] == [
        ("input.filter.segment", "CYCLE")]
    itself = gql(UPDATE, {"input": {"id": oslo["id"], "filter": {"segment": oslo["id"]}}})
    assert itself["updateSegment"]["errors"][0]["code"] == "CYCLE"

    named = gql(DELETE, {"id": oslo["id"]})["deleteSegment"]
    assert [(e["field"], e["code"]) for e in named["errors"]] == [("input.id", "CONFLICT")]
    assert "'Oslo VIPs'" in named["errors"][0]["message"]


def test_a_stored_filter_that_no_longer_validates_is_a_typed_error(
        segments_app: Flask, gql: GraphQL) -> None:
    oslo = create(gql, "Oslo", {"city": ["Oslo"]})["segment"]
    with transaction():  # as if a field the filter names went away with its plugin
        db.session.get(Segment, 1).filter = {"city": ["Oslo"], "gone": True}
    body = gql.raw(CUSTOMERS, {"f": {"segment": oslo["id"]}}).get_json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "is no longer valid" in body["errors"][0]["message"]
    listed = gql.raw("{ segments { edges { node { name customerCount } } } }").get_json()
    assert listed["data"]["segments"]["edges"] == [{"node": {"name": "Oslo",
                                                             "customerCount": None}}]
    assert listed["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_segment_filter_needs_segments_read(segments_app: Flask, gql: GraphQL) -> None:
    customer("Ada", city="Oslo")
    oslo = create(gql, "Oslo", {"city": ["Oslo"]})["segment"]
    reader = GraphQL(segments_app, admin_token(segments_app, ("customers:read",)))
    for variables in ({"segment": oslo["id"]}, {"valueTier": ["TOP"]}):
        body = reader.raw(CUSTOMERS, {"f": variables}).get_json()
        assert body["data"] is None, body
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
        assert "segments:read" in body["errors"][0]["message"]
    assert names(reader(CUSTOMERS, {"f": {"city": ["Oslo"]}})) == ["Ada"]
    both = GraphQL(segments_app, admin_token(segments_app, ("customers:read",
                                                            "segments:read")))
    assert names(both(CUSTOMERS, {"f": {"segment": oslo["id"]}})) == ["Ada"]
    # Creating a segment with segments:write alone does not reveal membership either.
    writer = GraphQL(segments_app, admin_token(segments_app, ("segments:write",)))
    refused = writer.raw(CREATE, {"input": {"name": "Copy", "filter": {
        "segment": oslo["id"]}}}).get_json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_segments_page_counts_in_constant_statements(segments_app: Flask,
                                                     gql: GraphQL) -> None:
    for city in ("Oslo", "Rome", "Lima", "Kyiv"):
        customer(f"Someone in {city}", city=city)
        create(gql, city, {"city": [city]})
    query = """{ segments(first: 10) { totalCount edges { cursor node { id name filter
      customerCount createdAt } } } }"""
    with count_statements(segments_app) as statements:
        page = gql(query)["segments"]
    assert page["totalCount"] == 4
    assert [e["node"]["customerCount"] for e in page["edges"]] == [1, 1, 1, 1]
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # the page, its total, one statement counting every segment's customers (the API
    # key's look-up happens before)
    assert len(selects) <= 4, selects
    second = gql("query($after: String) { segments(first: 3, after: $after) { edges { node "
                 "{ name } } } }", {"after": page["edges"][2]["cursor"]})
    assert [e["node"]["name"] for e in second["segments"]["edges"]] == ["Kyiv"]
    node = gql("query($id: ID!) { node(id: $id) { ... on Segment { name customers { "
               "totalCount edges { node { name } } } } } }",
               {"id": page["edges"][1]["node"]["id"]})["node"]
    assert node["name"] == "Rome" and node["customers"]["totalCount"] == 1


def test_a_survey_analysis_takes_a_segment(make_app: Any) -> None:
    """Every report that takes the customer filter takes a segment: survey analysis."""
    from tests.plugins.surveys.conftest import answer, make_survey

    app = make_app(enabled=["segments", "surveys"])
    with app.app_context():
        admin = GraphQL(app, admin_token(app))
        ada, bob, cy = (customer(n, city=c) for n, c in (("Ada", "Oslo"), ("Bob", "Oslo"),
                                                          ("Cy", "Rome")))
        survey = make_survey()
        for who, score in ((ada, 9), (bob, 10), (cy, 2)):
            answer(survey, who, nps=score, overall=4)
        survey_id = gid("Survey", survey.id)
        oslo = create(admin, "Oslo", {"city": ["Oslo"]})["segment"]
    query = """query($id: ID!, $f: CustomerFilterInput) { survey(id: $id) {
      analysis(filter: $f) { errors { field code } nps { items { key n score } } } } }"""
    every = admin(query, {"id": survey_id})["survey"]["analysis"]["nps"]["items"][0]
    assert every["n"] == 3
    segment = admin(query, {"id": survey_id, "f": {"segment": oslo["id"]}})
    assert segment["survey"]["analysis"]["nps"]["items"][0] == {"key": "nps", "n": 2,
                                                                "score": 100.0}
    surveys_only = GraphQL(app, admin_token(app, ("surveys:read",)))
    refused = surveys_only.raw(query, {"id": survey_id, "f": {"segment": oslo["id"]}})
    assert refused.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_a_stored_filter_of_every_kind_of_field_validates_again(
        segments_app: Flask, gql: GraphQL) -> None:
    from core.services import staff

    agent = staff.create_agent({"name": "Ann", "email": "ann@example.com",
                                "role": "account_manager"})
    ada = customer("Ada", city="Oslo", country="NO", birth_date="1990-05-01",
                   owner_id=agent.id, attributes={"seats": 12})
    customer("Bob", city="Oslo")
    purchase(ada, "120.50", dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc))
    filter = {"country": ["no"], "bornAfter": "1980-01-01", "minSpend": "100.5",
              "lastPurchaseAfter": "2026-01-01T00:00:00Z", "ownerId": gid("Agent", agent.id),
              "attributes": [{"key": "seats", "min": 10}], "status": ["ACTIVE"],
              "valueTier": ["NONE", "LOW"]}
    compute_tiers(dt.date(2026, 6, 30))
    made = create(gql, "Rich", filter)
    assert made["errors"] == []
    shown = made["segment"]["filter"]
    assert shown["ownerId"] == gid("Agent", agent.id) and shown["minSpend"] == "100.5"
    assert shown["lastPurchaseAfter"].startswith("2026-01-01T00:00:00")
    assert shown["status"] == ["ACTIVE"] and shown["valueTier"] == ["NONE", "LOW"]
    assert made["segment"]["customerCount"] == 1
    assert names(gql(CUSTOMERS, {"f": shown})) == ["Ada"]  # what it shows is a filter
    assert names(gql(CUSTOMERS, {"f": {"segment": made["segment"]["id"]}})) == ["Ada"]


def test_a_segment_naming_another_plugins_field_needs_that_scope_too(make_app: Any) -> None:
    from tests.core.test_hooks import FilterProbe

    app = make_app(enabled=["segments"], plugins=(FilterProbe(),))
    with app.app_context():
        customer("Ada", tags=["vip2"])
        admin = GraphQL(app, admin_token(app))
        vips = create(admin, "VIP 2", {"vipLevel": 2})["segment"]
        segments_only = GraphQL(app, admin_token(app, ("customers:read", "segments:read")))
        everything = GraphQL(app, admin_token(app, ("customers:read", "segments:read",
                                                    "filterprobe:read")))
    refused = segments_only.raw(CUSTOMERS, {"f": {"segment": vips["id"]}}).get_json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "filterprobe:read" in refused["errors"][0]["message"]
    assert names(everything(CUSTOMERS, {"f": {"segment": vips["id"]}})) == ["Ada"]
    count = "{ segments { edges { node { name customerCount } } } }"
    assert segments_only.raw(count).get_json()["errors"][0]["extensions"]["code"] == \
        "FORBIDDEN"
    assert everything(count)["segments"]["edges"] == [{"node": {"name": "VIP 2",
                                                                "customerCount": 1}}]
    # Counted with the page's other segments, with the same check of the scopes.
    total = "{ segments { edges { node { name customers { totalCount } } } } }"
    refused = segments_only.raw(total).get_json()["errors"][0]
    assert refused["extensions"]["code"] == "FORBIDDEN"
    assert "filterprobe:read" in refused["message"]
    assert everything(total)["segments"]["edges"] == [{"node": {
        "name": "VIP 2", "customers": {"totalCount": 1}}}]
