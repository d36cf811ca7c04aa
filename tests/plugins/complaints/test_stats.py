"""complaintStats: figures worked out by hand for a small set of complaints."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask

from core.cli import cli
from core.errors import UserError
from plugins.complaints import stats
from tests.conftest import AppFactory, GraphQL
from tests.plugins.complaints.conftest import agent, customer, file, move, run_through


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


def _seed() -> None:
    """A: logistics, 2 h to respond, 10 h to resolve, satisfaction 4, met its SLA.
    B: logistics, high, 6 h to respond (target 4 h: breached), resolved at 20 h, reopened,
       resolved again at 40 h, satisfaction 4 then 2. C: price, rejected after 1 h.
    D: price, never answered (breached). E: filed before the period."""
    ada, grace = customer(), agent()
    a = file(ada, at=_utc(2025, 10, 5, 8), assignee_id=grace)
    run_through(a.id, a.filed_at, [2, 3, 4, 5, 10, 11])
    b = file(ada, at=_utc(2025, 10, 10, 8), channel="email", severity="high")
    run_through(b.id, b.filed_at, [6, 7, 8, 9, 20], upto="feedback")
    start = b.filed_at
    move(b.id, "reopened", start + dt.timedelta(hours=30), reason="Broken again")
    move(b.id, "solution_proposed", start + dt.timedelta(hours=31), solution="Replace")
    move(b.id, "implementing", start + dt.timedelta(hours=32))
    move(b.id, "feedback", start + dt.timedelta(hours=40), satisfaction=2,
         customer_resolved=True)
    c = file(ada, at=_utc(2025, 11, 3, 8), type="price", severity="low")
    move(c.id, "rejected", c.filed_at + dt.timedelta(hours=1), reason="No grounds")
    file(ada, at=_utc(2025, 11, 20, 8), type="price", severity="low")
    file(ada, at=_utc(2025, 9, 30, 23), type="price")


PERIOD = {"from": "2025-10-01", "to": "2025-11-30"}


def test_grouped_by_type(complaints_app: Flask) -> None:
    _seed()
    figures = stats.complaint_stats({**PERIOD, "group_by": "type"})
    by_key = {g.key: g for g in figures.groups}
    assert list(by_key) == ["logistics", "price"]
    logistics, price, total = by_key["logistics"], by_key["price"], figures.total
    assert (logistics.volume, price.volume, total.volume) == (2, 2, 4)
    assert (logistics.median_first_response_hours, logistics.p90_first_response_hours) == (
        pytest.approx(4), pytest.approx(5.6))
    assert (logistics.median_resolution_hours, logistics.p90_resolution_hours) == (
        pytest.approx(25), pytest.approx(37))
    assert (logistics.sla_compliance, logistics.reopen_rate) == (0.5, 0.5)
    assert (logistics.satisfaction, logistics.satisfaction_responses) == (3.0, 2)
    assert (price.median_first_response_hours, price.p90_resolution_hours) == (
        pytest.approx(1), pytest.approx(1))
    assert (price.sla_compliance, price.reopen_rate, price.satisfaction) == (0.5, 0.0, None)
    assert (total.median_first_response_hours, total.p90_first_response_hours) == (
        pytest.approx(2), pytest.approx(5.2))
    assert (total.median_resolution_hours, total.p90_resolution_hours) == (
        pytest.approx(10), pytest.approx(34))
    assert total.reopen_rate == pytest.approx(1 / 3)
    assert total.key == "total"


def test_other_groupings(complaints_app: Flask) -> None:
    _seed()
    months = stats.complaint_stats({**PERIOD, "group_by": "month"})
    assert [(g.key, g.volume) for g in months.groups] == [("2025-10", 2), ("2025-11", 2)]
    severity = stats.complaint_stats({**PERIOD, "group_by": "severity"})
    assert sorted((g.key, g.volume) for g in severity.groups) == [
        ("high", 1), ("low", 2), ("medium", 1)]
    assignee = stats.complaint_stats({**PERIOD, "group_by": "assignee"})
    assert sorted((g.key, g.volume) for g in assignee.groups) == [("1", 1), ("unassigned", 3)]
    channel = stats.complaint_stats({**PERIOD, "group_by": "channel"})
    assert sorted((g.key, g.volume) for g in channel.groups) == [("email", 1), ("phone", 3)]
    with pytest.raises(UserError):
        stats.complaint_stats({"from": "2025-12-01", "to": "2025-11-01"})


def test_months_follow_the_business_time_zone(make_app: AppFactory) -> None:
    app = make_app(enabled=["complaints"], RAPPORT_TIMEZONE="America/New_York")
    with app.app_context():
        ada = customer()
        file(ada, at=_utc(2025, 11, 1, 2))   # 31 October, 22:00 in New York
        file(ada, at=_utc(2025, 11, 1, 5))
        file(ada, at=_utc(2025, 10, 1, 2))   # 30 September in New York: outside
        figures = stats.complaint_stats({**PERIOD, "group_by": "month"})
        assert [(g.key, g.volume) for g in figures.groups] == [("2025-10", 1), ("2025-11", 1)]


def test_percentile_cont_matches_the_sql_definition() -> None:
    assert stats.percentile_cont([], 0.5) is None
    assert stats.percentile_cont([7.0], 0.9) == 7.0
    assert stats.percentile_cont([1, 2, 3, 4], 0.5) == 2.5
    assert stats.percentile_cont([10, 0, 20, 30, 40], 0.9) == pytest.approx(36)


def test_graphql_and_cli(complaints_app: Flask, gql: GraphQL) -> None:
    _seed()
    data = gql("""{ complaintStats(from: "2025-10-01", to: "2025-11-30", groupBy: ASSIGNEE) {
        from to groupBy groups { key assignee { name } volume slaCompliance }
        total { volume medianResolutionHours p90FirstResponseHours reopenRate satisfaction
                satisfactionResponses } } }""")["complaintStats"]
    assert (data["from"], data["groupBy"]) == ("2025-10-01", "ASSIGNEE")
    assert data["groups"][0] == {"key": "1", "assignee": {"name": "Grace"}, "volume": 1,
                                 "slaCompliance": 1.0}
    assert data["total"] == {"volume": 4, "medianResolutionHours": 10.0,
                             "p90FirstResponseHours": 5.2, "reopenRate": pytest.approx(1 / 3),
                             "satisfaction": 3.0, "satisfactionResponses": 2}
    bad = gql.raw('{ complaintStats(from: "2025-10-01", to: "2025-01-01") { total { volume } } }'
                  ).get_json()
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    result = complaints_app.test_cli_runner().invoke(
        cli, ["complaints", "stats", "--from", "2025-10-01", "--to", "2025-11-30"])
    assert result.exit_code == 0, result.output
    assert "logistics              2       4.0       5.6      25.0      37.0    50.0%" \
        in result.output
