"""Churn per owner and per team (``churnByOwner``, plugins/churn/owners.py): exact figures
on a hand-built book, the bottom flag, minActive, typed errors, scopes, statement count."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update

from core.db import db
from core.models import Customer
from core.services.customers import create_customer
from core.services.staff import create_agent
from plugins.churn import owners, report, service
from tests.conftest import AppFactory, GraphQL, admin_token, count_statements, seeded

UTC = dt.timezone.utc
PERIOD = ("2025-01-01", "2025-04-30")
MONTHS = ["2025-01", "2025-02", "2025-03", "2025-04"]


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def paris_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["churn"], RAPPORT_TIMEZONE="Europe/Paris")
    with app.app_context():
        yield app


def book(prefix: str, count: int, owner_id: int | None, created: str = "2024-12-10T12:00:00"
         ) -> list[int]:
    ids = [create_customer({"name": f"{prefix}{n}", "owner_id": owner_id}).id
           for n in range(count)]
    db.session.execute(update(Customer).where(Customer.id.in_(ids)).values(
        created_at=at(created)))
    db.session.commit()
    return ids


def churn(ids: list[int], when: str) -> None:
    service.mark_customers_churned([{"customer_id": i, "type": "natural", "reason": "other",
                                     "churned_at": when} for i in ids])


def _seed() -> dict[str, Any]:
    """Ann (team North) and Bob (no team) own ten customers each, two have no owner.

    Ann loses 1, 2, 1, 2 customers in January..April; Bob 1 in January (back on 20
    February), 1 in February, 1 in April; one customer without owner leaves in February.
    """
    ann = create_agent({"name": "Ann", "email": "ann@example.com", "team": "North"}).id
    bob = create_agent({"name": "Bob", "email": "bob@example.com"}).id
    a, b, u = book("A", 10, ann), book("B", 10, bob), book("U", 2, None)
    churn([a[0], b[0]], "2025-01-15T10:00:00+00:00")
    churn([a[1], a[2], b[1], u[0]], "2025-02-10T10:00:00+00:00")
    service.reactivate_customer({"customer_id": b[0], "reactivated_at": "2025-02-20T10:00:00Z"})
    churn([a[3]], "2025-03-05T10:00:00+00:00")
    churn([a[4], a[5], b[2]], "2025-04-10T10:00:00+00:00")
    return {"ann": ann, "bob": bob}


def seed() -> dict[str, Any]:
    return seeded("churn.owners", _seed)  # type: ignore[no-any-return]


def figures(group: owners.GroupFigures) -> list[tuple[int, int, bool]]:
    return [(m.active_at_start, m.churned, m.at_bottom) for m in group.months]


def test_figures_per_owner_and_team_by_hand(paris_app: Flask) -> None:
    people = seed()
    result = owners.owner_report({"from": PERIOD[0], "to": PERIOD[1], "minActive": 5})
    ann, bob, nobody = result.by_owner
    assert (ann.owner_id, ann.name, ann.team) == (people["ann"], "Ann", "North")
    assert (bob.owner_id, bob.team, nobody.owner_id) == (people["bob"], None, None)
    assert figures(ann) == [(10, 1, True), (9, 2, True), (7, 1, True), (6, 2, True)]
    # Bob's first leaver is back on 20 February: active again at the start of March.
    assert figures(bob) == [(10, 1, True), (9, 1, False), (9, 0, False), (9, 1, False)]
    # The customers without an owner have the worst rate (1/2) but are never ranked.
    assert figures(nobody) == [(2, 0, False), (2, 1, False), (1, 0, False), (1, 0, False)]
    assert [m.churn_rate for m in ann.months] == [0.1, 2 / 9, 1 / 7, 2 / 6]
    assert (ann.active_at_start, ann.churned, ann.customer_months, ann.churn_rate) == (
        10, 6, 32, 6 / 32)
    assert (bob.active_at_start, bob.churned, bob.customer_months, bob.churn_rate) == (
        10, 3, 37, 3 / 37)
    assert (ann.bottom_months, ann.bottom_months_running, ann.at_bottom_three_months) == (
        MONTHS, 4, True)
    # Tied with Ann in January (both 10%): at the bottom too, but not since.
    assert (bob.bottom_months, bob.bottom_months_running, bob.at_bottom_three_months) == (
        ["2025-01"], 0, False)
    assert [(m.month, m.complete, m.ranked_owners, m.bottom_churn_rate)
            for m in result.months] == [("2025-01", True, 2, 0.1), ("2025-02", True, 2, 2 / 9),
                                        ("2025-03", True, 2, 1 / 7), ("2025-04", True, 2, 2 / 6)]
    north, no_team = result.by_team
    assert (north.team, figures(north)) == ("North", [(10, 1, False), (9, 2, False),
                                                      (7, 1, False), (6, 2, False)])
    # No team: Bob's customers and those without an owner.
    assert (no_team.team, [(m.active_at_start, m.churned) for m in no_team.months]) == (
        None, [(12, 1), (11, 2), (10, 0), (10, 1)])
    # Owners split the monthly report exactly: each customer has one owner.
    whole = report.churn_report({"from": PERIOD[0], "to": PERIOD[1]})
    for idx, month in enumerate(whole.months):
        assert month.active_at_start == sum(g.months[idx].active_at_start
                                            for g in result.by_owner)
        assert month.churned == sum(g.months[idx].churned for g in result.by_owner)


def test_bottom_run_ends_with_the_last_complete_month(paris_app: Flask) -> None:
    seed()
    # On 15 April, April is not over: no bottom in it, the run ends with March.
    result = owners.churn_by_owner(dt.date(2025, 1, 1), dt.date(2025, 4, 30), 5,
                                   at("2025-04-15T00:00:00"))
    assert [(m.month, m.complete) for m in result.months][-2:] == [
        ("2025-03", True), ("2025-04", False)]
    assert result.last_complete_month == "2025-03"
    ann = result.by_owner[0]
    assert (ann.bottom_months, ann.bottom_months_running, ann.at_bottom_three_months) == (
        ["2025-01", "2025-02", "2025-03"], 3, True)
    # Ending in February: two months running only.
    short = owners.churn_by_owner(dt.date(2025, 1, 1), dt.date(2025, 2, 28), 5,
                                  at("2026-01-01T00:00:00"))
    assert (short.by_owner[0].bottom_months_running,
            short.by_owner[0].at_bottom_three_months) == (2, False)
    assert short.by_owner[1].bottom_months_running == 0  # Bob: not at the bottom in February
    # A period of months that have not begun: nothing.
    empty = owners.churn_by_owner(dt.date(2025, 6, 1), dt.date(2025, 7, 31), 5,
                                  at("2025-05-01T00:00:00"))
    assert (empty.months, empty.by_owner, empty.by_team) == ([], [], [])


def test_min_active_leaves_small_books_unranked(paris_app: Flask) -> None:
    seed()
    # 8: Ann (7 then 6 active) is not ranked in March and April, leaving Bob alone.
    result = owners.owner_report({"from": PERIOD[0], "to": PERIOD[1], "minActive": 8})
    assert [m.ranked_owners for m in result.months] == [2, 2, 1, 1]
    assert [m.bottom_churn_rate for m in result.months] == [0.1, 2 / 9, None, None]
    ann, bob, _ = result.by_owner
    assert (ann.bottom_months, ann.bottom_months_running) == (["2025-01", "2025-02"], 0)
    assert bob.bottom_months == ["2025-01"]
    # The default, 10: only January ranks both books.
    default = owners.owner_report({"from": PERIOD[0], "to": PERIOD[1]})
    assert default.min_active == 10
    assert [m.ranked_owners for m in default.months] == [2, 0, 0, 0]
    assert [o.bottom_months for o in default.by_owner] == [["2025-01"], ["2025-01"], []]


QUERY = """query($from: Date!, $to: Date!, $min: Int) {
  churnByOwner(from: $from, to: $to, minActive: $min) {
    from to minActive lastCompleteMonth
    months { month complete rankedOwners bottomChurnRate }
    byOwner { owner { id name } activeAtStart churned customerMonths churnRate
              bottomMonths bottomMonthsRunning atBottomThreeMonths
              months { month activeAtStart churned churnRate atBottom } }
    byTeam { team activeAtStart churned churnRate months { month activeAtStart churned } }
  } }"""


def test_graphql_churn_by_owner(paris_app: Flask) -> None:
    people = seed()
    gql = GraphQL(paris_app, admin_token(paris_app))
    data = gql(QUERY, {"from": PERIOD[0], "to": PERIOD[1], "min": 5})["churnByOwner"]
    assert (data["from"], data["to"], data["minActive"], data["lastCompleteMonth"]) == (
        *PERIOD, 5, "2025-04")
    ann, bob, nobody = data["byOwner"]
    assert ann["owner"]["name"] == "Ann" and nobody["owner"] is None
    assert bob["owner"]["id"] == gql("query($id: ID!) { node(id: $id) { id } }", {
        "id": bob["owner"]["id"]})["node"]["id"]
    assert {k: ann[k] for k in ("activeAtStart", "churned", "customerMonths", "churnRate",
                                "bottomMonths", "bottomMonthsRunning",
                                "atBottomThreeMonths")} == {
        "activeAtStart": 10, "churned": 6, "customerMonths": 32, "churnRate": 6 / 32,
        "bottomMonths": MONTHS, "bottomMonthsRunning": 4, "atBottomThreeMonths": True}
    assert ann["months"][1] == {"month": "2025-02", "activeAtStart": 9, "churned": 2,
                                "churnRate": 2 / 9, "atBottom": True}
    assert bob["atBottomThreeMonths"] is False and bob["bottomMonths"] == ["2025-01"]
    assert [t["team"] for t in data["byTeam"]] == ["North", None]
    assert data["byTeam"][1]["months"][0] == {"month": "2025-01", "activeAtStart": 12,
                                              "churned": 1}
    assert data["months"][0] == {"month": "2025-01", "complete": True, "rankedOwners": 2,
                                 "bottomChurnRate": 0.1}
    assert people["ann"] != people["bob"]


@pytest.mark.parametrize(("variables", "field"), [
    ({"from": "2025-03-01", "to": "2025-01-01"}, "to"),
    ({"from": "2010-01-01", "to": "2025-01-01"}, "to"),
    ({"from": "1800-01-01", "to": "1800-02-01"}, "from"),
    ({"from": "2025-01-01", "to": "2025-02-01", "min": 0}, "minActive"),
])
def test_invalid_input_is_a_typed_error(paris_app: Flask, variables: dict[str, Any],
                                        field: str) -> None:
    gql = GraphQL(paris_app, admin_token(paris_app))
    answer = gql.raw('query($from: Date!, $to: Date!, $min: Int) { churnByOwner(from: $from, '
                     'to: $to, minActive: $min) { minActive } }', variables).get_json()
    [error] = answer["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].startswith(f"{field}: "), error["message"]
    assert answer["data"] is None


def test_owners_and_teams_need_the_agents_scope(paris_app: Flask) -> None:
    seed()
    period = {"from": PERIOD[0], "to": PERIOD[1]}
    churn_only = GraphQL(paris_app, admin_token(paris_app, ("churn:read",)))
    for selection in ("byOwner { owner { id } }", "byOwner { owner { __typename } }",
                      "byTeam { team }"):
        denied = churn_only.raw("query($from: Date!, $to: Date!) { churnByOwner(from: $from, "
                                f"to: $to) {{ {selection} }} }}", period).get_json()
        assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN", selection
        assert "agents:read" in denied["errors"][0]["message"]
    # The figures alone need churn:read only.
    figures_only = churn_only("query($from: Date!, $to: Date!) { churnByOwner(from: $from, "
                              "to: $to) { byOwner { churned } byTeam { churned } } }", period)
    assert [o["churned"] for o in figures_only["churnByOwner"]["byOwner"]] == [6, 3, 1]
    no_churn = GraphQL(paris_app, admin_token(paris_app, ("agents:read", "customers:read")))
    refused = no_churn.raw("query($from: Date!, $to: Date!) { churnByOwner(from: $from, "
                           "to: $to) { minActive } }", period).get_json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    both = GraphQL(paris_app, admin_token(paris_app, ("churn:read", "agents:read")))
    data = both(QUERY, {**period, "min": 5})["churnByOwner"]
    assert [o["owner"] and o["owner"]["name"] for o in data["byOwner"]] == ["Ann", "Bob", None]


def test_statements_do_not_grow_with_owners_or_months(paris_app: Flask) -> None:
    seed()
    gql = GraphQL(paris_app, admin_token(paris_app))
    small = {"from": "2025-01-01", "to": "2025-02-28", "min": 5}
    gql(QUERY, small)
    with count_statements(paris_app) as before:
        gql(QUERY, small)
    for n in range(4):
        agent = create_agent({"name": f"Extra {n}", "email": f"extra{n}@example.com",
                              "team": f"T{n}"}).id
        ids = book(f"E{n}-", 6, agent)
        churn(ids[:2], f"2025-0{n + 2}-12T10:00:00+00:00")
    large = {"from": "2024-06-01", "to": "2025-05-31", "min": 5}
    gql(QUERY, large)  # the key is read once more after the writes, as at first
    with count_statements(paris_app) as after:
        data = gql(QUERY, large)["churnByOwner"]
    assert len(data["byOwner"]) == 7 and len(data["months"]) == 12
    assert len(data["byTeam"]) == 6
    assert len(after) == len(before), (before, after)


def _bottom_alerts() -> list[Any]:
    from sqlalchemy import select

    from core.models import Alert

    return list(db.session.scalars(select(Alert).where(Alert.kind == owners.BOTTOM_ALERT)
                                   .order_by(Alert.id)))


def test_three_months_at_the_bottom_raise_one_alert_per_owner_and_month(
        paris_app: Flask) -> None:
    from core.cli import cli
    from core.ids import global_id

    ann = create_agent({"name": "Ann", "email": "ann@example.com", "team": "North"}).id
    bob = create_agent({"name": "Bob", "email": "bob@example.com"}).id
    cid = create_agent({"name": "Cid", "email": "cid@example.com"}).id
    a, b, c = book("A", 20, ann), book("B", 20, bob), book("C", 5, cid)
    # Cid's tiny book (5 < minActive 10) churns most but is never ranked.
    churn([a[0], a[1], b[0], c[0], c[1]], "2025-01-15T10:00:00+00:00")
    churn([a[2], a[3], b[1]], "2025-02-15T10:00:00+00:00")
    assert _bottom_alerts() == []  # two months only
    churn([a[4], a[5]], "2025-03-15T10:00:00+00:00")  # the check runs after the marks
    [alert] = _bottom_alerts()
    assert (alert.source, alert.severity, alert.customer_id) == ("churn", "medium", None)
    assert alert.evidence == {
        "ownerId": global_id("Agent", ann), "month": "2025-03", "monthsRunning": 3,
        "minActive": 10, "months": [
            {"month": "2025-01", "churnRate": 0.1, "churned": 2, "activeAtStart": 20,
             "rankedOwners": 2},
            {"month": "2025-02", "churnRate": round(2 / 18, 4), "churned": 2,
             "activeAtStart": 18, "rankedOwners": 2},
            {"month": "2025-03", "churnRate": 0.125, "churned": 2, "activeAtStart": 16,
             "rankedOwners": 2}]}
    churn([a[6]], "2025-03-20T10:00:00+00:00")  # March again: alerted already
    assert len(_bottom_alerts()) == 1
    churn([a[7]], "2025-04-15T10:00:00+00:00")  # still at the bottom in April: its alert
    assert [(x.evidence["month"], x.evidence["ownerId"]) for x in _bottom_alerts()] == [
        ("2025-03", global_id("Agent", ann)), ("2025-04", global_id("Agent", ann))]
    result = paris_app.test_cli_runner().invoke(cli, ["churn", "check", "--as-of",
                                                      "2025-05-03"])
    assert result.exit_code == 0, result.output
    assert len(_bottom_alerts()) == 2
    # A mark in a month not over yet reads no owner figures.
    with count_statements(paris_app) as statements:
        churn([b[5]], dt.datetime.now(UTC).replace(microsecond=0).isoformat())
    assert not [s for s in statements if "agents.team" in s]
    assert len(_bottom_alerts()) == 2 and bob != cid


def test_marks_spanning_more_than_the_month_cap_are_checked_and_kept(
        paris_app: Flask) -> None:
    """One batch of marks ten years apart used to fail (KeyError) and roll the marks back:
    each month is checked against its own window, and the alert of the late month comes."""
    from core.ids import global_id
    from plugins.churn.models import ChurnRecord

    ann = create_agent({"name": "Ann", "email": "ann@example.com"}).id
    bob = create_agent({"name": "Bob", "email": "bob@example.com"}).id
    a, b = book("A", 20, ann, "2011-06-01T12:00:00"), book("B", 20, bob, "2011-06-01T12:00:00")
    churn([a[0], a[1], b[0]], "2025-01-15T10:00:00+00:00")
    churn([a[2], a[3], b[1]], "2025-02-15T10:00:00+00:00")
    assert report.MAX_MONTHS < 12 * (2025 - 2012) + 3
    service.mark_customers_churned([
        {"customer_id": b[2], "type": "natural", "reason": "other",
         "churned_at": "2012-03-15T10:00:00+00:00"},
        {"customer_id": a[4], "type": "natural", "reason": "other",
         "churned_at": "2025-03-15T10:00:00+00:00"}])
    db.session.rollback()  # nothing pending: the marks were committed
    assert db.session.query(ChurnRecord).count() == 8
    assert [(x.evidence["month"], x.evidence["ownerId"]) for x in _bottom_alerts()] == [
        ("2025-03", global_id("Agent", ann))]
    assert [w[0].year for w in owners._windows([dt.date(2012, 3, 1), dt.date(2021, 12, 1),
                                                dt.date(2022, 1, 1), dt.date(2025, 3, 1)])
            ] == [2012, 2022]


def test_a_failing_owner_check_never_undoes_the_marks(
        paris_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    from plugins.churn.models import ChurnRecord

    ids = book("A", 2, None)

    def broken(*args: Any) -> None:
        db.session.execute(update(Customer).where(Customer.id == ids[1]).values(name="x"))
        raise RuntimeError("the owner check broke")

    monkeypatch.setattr(owners, "churn_by_owner", broken)
    churn(ids, "2025-02-10T10:00:00+00:00")
    db.session.rollback()
    assert db.session.query(ChurnRecord).count() == 2
    # Its own writes are undone with it (a savepoint), the marks' are not.
    assert db.session.get(Customer, ids[1]).name == "A1"
