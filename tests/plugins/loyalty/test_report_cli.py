"""The programme report (months in the business time zone, SQL aggregates) and the CLI."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from flask import Flask

from core.cli import cli
from core.services import transaction
from plugins.loyalty import ledger, programme, service
from plugins.loyalty.models import EntryKind, LedgerEntry
from plugins.loyalty.report import loyalty_report
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.plugins.loyalty.conftest import customer, purchase

TZ = ZoneInfo("America/New_York")


def _local(day: dt.date, hour: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=TZ).astimezone(dt.timezone.utc)


@pytest.fixture
def programme_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["loyalty"], RAPPORT_TIMEZONE="America/New_York",
                   RAPPORT_LOYALTY_POINT_VALUE="0.05")
    with app.app_context():
        yield app


@pytest.fixture
def months(programme_app: Flask) -> list[dt.date]:
    """Two months ago, last month, this month (local); a programme with a year's history.

    Ada buys 100 two months ago (expires last month) and 50 last month, then redeems 30
    at the start of this month; Bob buys 20 an hour before last month began in New York (already last month in
    UTC); Cy pays in EUR, which earns nothing: a non-member buying twice.
    """
    today = dt.datetime.now(TZ).date()
    m0 = today.replace(day=1)
    m1 = (m0 - dt.timedelta(days=1)).replace(day=1)
    m2 = (m1 - dt.timedelta(days=1)).replace(day=1)
    programme.create_earn_rule({"name": "Base", "currency": "USD", "points_per_unit": "1",
                                "expiry_months": 1,
                                "valid_from": _local(m2 - dt.timedelta(days=90)).isoformat()})
    programme.create_tier({"name": "Silver", "threshold_points": 100})
    ada, bob, cy = customer("Ada"), customer("Bob"), customer("Cy")
    purchase(ada, "100", at=_local(m2 + dt.timedelta(days=3)))
    purchase(ada, "50", at=_local(m1 + dt.timedelta(days=5)))
    purchase(bob, "20", at=_local(m1) - dt.timedelta(hours=1))
    purchase(cy, "10", currency="EUR", at=_local(m1 + dt.timedelta(days=2)))
    purchase(cy, "10", currency="EUR", at=_local(m1 + dt.timedelta(days=9)))
    service.expire_points(_local(m1 + dt.timedelta(days=20)))
    # Ada redeems 30 early this month, while her 50 points of last month are still valid
    # (they expire on the 6th; a redemption later in the month could not spend them)
    when = min(dt.datetime.now(dt.timezone.utc), _local(m0, 1))
    with transaction():
        ledger.debit(LedgerEntry(kind=EntryKind.REDEEM, customer_id=ada, points=-30,
                                 occurred_at=when), when)
    return [m2, m1, m0]


def test_report_figures(months: list[dt.date]) -> None:
    m2, m1, m0 = months
    today = dt.datetime.now(TZ).date()
    report = loyalty_report({"from": m2.isoformat(), "to": today.isoformat()})
    assert [(m.month, m.issued, m.redeemed, m.expired) for m in report.months] == [
        (m2.strftime("%Y-%m"), 120, 0, 0), (m1.strftime("%Y-%m"), 50, 0, 100),
        (m0.strftime("%Y-%m"), 0, 30, 0)]
    assert (report.total.issued, report.total.redeemed, report.total.expired) == (170, 30, 100)
    assert (report.outstanding_points, report.outstanding_value, report.currency) == (
        40, Decimal("2.00"), "USD")
    assert report.breakage_rate == pytest.approx(100 / 170)
    assert report.redemption_rate == pytest.approx(30 / 170)
    assert report.members == 2
    assert [(t.name if t else None, n) for t, n in report.members_per_tier] == [
        (None, 1), ("Silver", 1)]
    assert (report.member_purchases.customers, report.member_purchases.repeat_purchase_rate,
            report.member_purchases.purchase_frequency) == (2, 0.5, 1.5)
    assert (report.non_member_purchases.customers,
            report.non_member_purchases.repeat_purchase_rate,
            report.non_member_purchases.purchase_frequency) == (1, 1.0, 2.0)
    # the liability at the end of an earlier period counts only what was dated by then
    earlier = loyalty_report({"from": m2.isoformat(), "to": (m1 - dt.timedelta(days=1))
                              .isoformat()})
    assert (earlier.outstanding_points, earlier.total.issued) == (120, 120)


def test_report_over_graphql(programme_app: Flask, months: list[dt.date]) -> None:
    gql = GraphQL(programme_app, admin_token(programme_app))
    query = """query($from: Date!, $to: Date!) { loyaltyReport(from: $from, to: $to) {
        from to months { month issued redeemed expired reversed removed }
        total { issued } outstandingPoints outstandingValue { amount currency }
        breakageRate redemptionRate members membersPerTier { tier { name } members }
        memberPurchases { customers repeatPurchaseRate purchaseFrequency }
        nonMemberPurchases { customers repeatPurchaseRate purchaseFrequency } } }"""
    today = dt.datetime.now(TZ).date().isoformat()
    report = gql(query, {"from": months[0].isoformat(), "to": today})["loyaltyReport"]
    assert report["outstandingValue"] == {"amount": "2.00", "currency": "USD"}
    assert report["months"][1] == {"month": months[1].strftime("%Y-%m"), "issued": 50,
                                   "redeemed": 0, "expired": 100, "reversed": 0, "removed": 0}
    assert report["membersPerTier"] == [{"tier": None, "members": 1},
                                        {"tier": {"name": "Silver"}, "members": 1}]
    assert report["nonMemberPurchases"] == {"customers": 1, "repeatPurchaseRate": 1.0,
                                            "purchaseFrequency": 2.0}
    body = gql.raw(query, {"from": today, "to": months[0].isoformat()}).get_json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "to is before from" in body["errors"][0]["message"]


def test_cli_report_tiers_and_expire(programme_app: Flask, months: list[dt.date]) -> None:
    runner = programme_app.test_cli_runner()
    today = dt.datetime.now(TZ).date().isoformat()
    report = runner.invoke(cli, ["loyalty", "report", "--from", months[0].isoformat(),
                                 "--to", today])
    assert report.exit_code == 0, report.output
    assert f"{months[1].strftime('%Y-%m')}           50           0         100" in report.output
    assert "outstanding: 40 points = 2.00 USD" in report.output
    assert "breakage rate: 58.8%; redemption rate: 17.6%" in report.output
    assert "members: 2; per tier: no tier 1, Silver 1" in report.output
    assert "non-members: 1 purchasers, repeat-purchase rate 100.0%, 2.00 purchases each" \
        in report.output
    bad = runner.invoke(cli, ["loyalty", "report", "--from", today, "--to", "2020-01-01"])
    assert bad.exit_code == 1 and "to: to is before from" in bad.output

    tiers = runner.invoke(cli, ["loyalty", "tiers"])
    assert tiers.exit_code == 0 and "0 members changed tier" in tiers.output

    later = (dt.date.today() + dt.timedelta(days=400)).isoformat()
    expired = runner.invoke(cli, ["loyalty", "expire", "--as-of", later])
    assert expired.exit_code == 0, expired.output
    assert "expired 40 points in 2 lots of 2 members" in expired.output
    again = runner.invoke(cli, ["loyalty", "expire"])
    assert "expired 0 points in 0 lots of 0 members" in again.output
