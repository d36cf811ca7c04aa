"""A saved segment is charged by what its stored filter holds (a search, nested segments
included) in customers(filter: {segment}), Segment.customerCount, Segment.customers and
survey analyses; the counts of a page of segments take one statement however many."""

from __future__ import annotations

from typing import Any

from flask import Flask

from api.limits import SEARCH_COST
from core.services.segments import filter_cost, validate_filter
from tests.conftest import AppFactory, GraphQL, admin_token, count_statements
from tests.plugins.segments.conftest import CREATE, customer, gid


def create(gql: GraphQL, name: str, filter: dict[str, Any]) -> str:
    made = gql(CREATE, {"input": {"name": name, "filter": filter}})["createSegment"]
    assert made["errors"] == [], made
    return made["segment"]["id"]  # type: ignore[no-any-return]


def aliases(segment: str, n: int) -> str:
    """``n`` counts of the segment's customers: 1,012 each by the document alone
    (field 1 + page query 10 + totalCount 1 + COUNT 1,000)."""
    return "{ " + " ".join(
        f'c{i}: customers(first: 0, filter: {{segment: "{segment}"}}) {{ totalCount }}'
        for i in range(n)) + " }"


def test_filter_cost_follows_nested_segments(segments_app: Flask, gql: GraphQL) -> None:
    searching = create(gql, "Searching", {"search": "an"})
    plain = create(gql, "Plain", {"city": ["Oslo"]})
    outer = create(gql, "Outer", {"segment": searching, "tagsAny": ["vip"]})
    both = create(gql, "Both", {"segment": outer, "search": "b"})
    costs = {name: filter_cost(validate_filter({"segment": gid})) for name, gid in (
        ("searching", searching), ("plain", plain), ("outer", outer), ("both", both))}
    assert costs == {"searching": SEARCH_COST, "plain": 0, "outer": SEARCH_COST,
                     "both": 2 * SEARCH_COST}
    assert filter_cost(validate_filter({"search": "x", "segment": both})) == 3 * SEARCH_COST


def test_a_segment_holding_a_search_is_charged_for_it(segments_app: Flask, gql: GraphQL
                                                      ) -> None:
    customer("Ann", city="Oslo")
    searching = create(gql, "Searching", {"search": "an"})
    nested = create(gql, "Nested", {"segment": searching, "city": ["Oslo"]})
    plain = create(gql, "Plain", {"city": ["Oslo"]})
    # 10 counts of a plain segment: 10,120, accepted as before.
    assert gql(aliases(plain, 10))["c9"] == {"totalCount": 1}
    for segment in (searching, nested):
        # Each count of a searching segment scans twice (page and COUNT): 4,000 more. The
        # first nine fit (10,120 + 36,000); the tenth would take it to 50,120. Nine pass.
        assert gql(aliases(segment, 9))["c8"] == {"totalCount": 1}
        body = gql.raw(aliases(segment, 10)).get_json()
        assert body["data"] is None  # customers is non-null: the error reaches the root
        [error] = body["errors"]
        assert error["path"] == ["c9"]
        assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "cost": 50_120,
                                       "maxCost": 50_000}
    # A search of the document's own is charged by the document: only the rest at run time.
    own = ('{ c0: customers(first: 0, filter: {segment: "' + searching
           + '", search: "a"}) { totalCount } }')
    assert gql(own)["c0"] == {"totalCount": 1}


def test_segment_counts_are_charged_and_refused_past_the_limit(
        make_app: AppFactory) -> None:
    app = make_app(enabled=["segments"], RAPPORT_GRAPHQL_MAX_COMPLEXITY=7_000)
    with app.app_context():
        gql = GraphQL(app, admin_token(app))
        customer("Ann", city="Oslo")
        create(gql, "Plain", {"city": ["Oslo"]})
        create(gql, "Searching", {"search": "an"})
        create(gql, "Nested", {"segment": create(gql, "Inner", {"search": "n"}),
                               "search": "a"})
    # The document: segments 1 + page query 10 + edges 1 + 4 x (node 1 + name 1 +
    # customerCount 1,001) = 4,024. Plain adds nothing, Searching 2,000 (6,024); Inner's
    # 2,000 and Nested's 4,000 would pass 7,000: refused, before they are counted.
    query = "{ segments(first: 4) { edges { node { name customerCount } } } }"
    body = gql.raw(query).get_json()
    counts = {e["node"]["name"]: e["node"]["customerCount"]
              for e in body["data"]["segments"]["edges"]}
    assert counts == {"Plain": 1, "Searching": 1, "Inner": None, "Nested": None}
    assert [e["extensions"] for e in body["errors"]] == [
        {"code": "QUERY_TOO_COMPLEX", "cost": 8_024, "maxCost": 7_000},
        {"code": "QUERY_TOO_COMPLEX", "cost": 10_024, "maxCost": 7_000}]
    assert [e["path"][2] for e in body["errors"]] == [2, 3]


def test_counting_1_or_20_segments_costs_the_same_statements(segments_app: Flask,
                                                             gql: GraphQL) -> None:
    for name, city in (("Ann", "Oslo"), ("Bob", "Rome"), ("Cy", "Oslo")):
        customer(name, city=city, tags=["vip"] if name == "Ann" else [])
    cities = ["Oslo", "Rome", "Lima", "Kyiv"]
    for i in range(20):
        create(gql, f"S{i}", {"city": [cities[i % 4]], **({"tagsAny": ["vip"]} if i % 3 == 0
                                                          else {})})
    # A literal first (a variable counts as 100 segments in the document's cost).
    query = """{ segments(first: %d) { edges { node { name customerCount
      customers { totalCount } } } } }"""
    measured = []
    for n in (1, 20):
        with count_statements(segments_app) as statements:
            edges = gql(query % n)["segments"]["edges"]
        measured.append([s for s in statements if s.lstrip().upper().startswith("SELECT")])
        assert len(edges) == n
    assert len(measured[0]) == len(measured[1]), measured[1]
    counted = [s for s in measured[1] if "FILTER (WHERE" in s.upper()]
    assert len(counted) == 1
    expected = {"Oslo": 2, "Rome": 1, "Lima": 0, "Kyiv": 0}
    for i, edge in enumerate(edges):
        node = edge["node"]
        want = 1 if i % 3 == 0 and cities[i % 4] == "Oslo" else (
            0 if i % 3 == 0 else expected[cities[i % 4]])
        assert node["customerCount"] == node["customers"]["totalCount"] == want, node


def test_a_survey_analysis_over_a_searching_segment_is_charged(make_app: AppFactory
                                                                ) -> None:
    from tests.plugins.surveys.conftest import answer, make_survey

    app = make_app(enabled=["segments", "surveys"], RAPPORT_GRAPHQL_MAX_COMPLEXITY=11_000)
    with app.app_context():
        gql = GraphQL(app, admin_token(app))
        ann = customer("Ann", city="Oslo")
        survey = make_survey()
        answer(survey, ann, nps=9, overall=4)
        survey_id = gid("Survey", survey.id)
        plain = create(gql, "Plain", {"city": ["Oslo"]})
        searching = create(gql, "Searching", {"search": "an"})
    # survey 1 + analysis 1 + 10,000 + responsesUsed 1 = 10,003 (the filter is literal);
    # the searching segment's stored search adds 2,000.
    query = """query($id: ID!) { survey(id: $id) { analysis(filter: {segment: "%s"}) {
      responsesUsed } } }"""
    assert gql(query % plain, {"id": survey_id})["survey"]["analysis"] == {
        "responsesUsed": 1}
    refused = gql.raw(query % searching, {"id": survey_id}).get_json()
    assert refused["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX",
                                                  "cost": 12_003, "maxCost": 11_000}
