"""The monthly churn report (months of RAPPORT_TIMEZONE), cohorts, and the jump alert."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from core.cli import cli
from core.db import db
from core.models import Alert, Customer
from core.services.customers import create_customer
from plugins.churn import report, service
from plugins.churn.models import ChurnRecord
from tests.conftest import AppFactory, GraphQL, admin_token

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def paris_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["churn"], RAPPORT_TIMEZONE="Europe/Paris")
    with app.app_context():
        yield app


def customers(count: int, created: str) -> list[int]:
    ids = [create_customer({"name": f"C{n}"}).id for n in range(count)]
    db.session.execute(update(Customer).where(Customer.id.in_(ids)).values(
        created_at=at(created)))
    db.session.commit()
    return ids


def churn(customer_id: int, when: str, type_: str = "natural", reason: str = "other") -> None:
    service.mark_churned({"customer_id": customer_id, "type": type_, "reason": reason,
                          "churned_at": when})


def test_monthly_report_by_hand(paris_app: Flask) -> None:
    c = customers(10, "2024-12-10T12:00:00")
    churn(c[0], "2025-01-10T10:00:00+00:00", "competitive", "pricing")
    churn(c[3], "2025-01-31T23:30:00+00:00")  # 00:30 on 1 February in Paris
    churn(c[1], "2025-03-05T10:00:00+00:00", "negligence", "core_service_failure")
    churn(c[2], "2025-03-20T10:00:00+00:00", "competitive", "competition")
    service.reactivate_customer({"customer_id": c[1], "reactivated_at": "2025-03-25T10:00:00Z"})
    [late] = customers(1, "2025-04-02T12:00:00")
    churn(late, "2025-04-10T10:00:00+00:00")
    figures = report.churn_report({"from": "2024-12-01", "to": "2025-04-30"})
    rows = [(m.month, m.active_at_start, m.churned, m.reactivated, m.churn_rate,
             m.retention_rate) for m in figures.months]
    assert rows == [
        ("2024-12", 0, 0, 0, None, None),
        ("2025-01", 10, 1, 0, 0.1, 0.9),
        ("2025-02", 9, 1, 0, 1 / 9, 8 / 9),
        ("2025-03", 8, 2, 1, 2 / 8, 7 / 8),
        ("2025-04", 7, 1, 0, 1 / 7, 1.0),
    ]
    assert figures.months[2].by_reason == {"other": 1}
    assert figures.by_type == {"competitive": 2, "natural": 2, "negligence": 1}
    assert figures.by_reason["core_service_failure"] == 1
    assert [(k.month, k.size, k.retention) for k in figures.cohorts] == [
        ("2024-12", 10, [1.0, 0.9, 0.8, 0.7, 0.7]), ("2025-04", 1, [0.0])]
    assert figures.churned == 5


def test_graphql_churn_report(paris_app: Flask) -> None:
    c = customers(4, "2024-12-10T12:00:00")
    churn(c[0], "2025-01-10T10:00:00+00:00", "malicious", "ethical")
    gql = GraphQL(paris_app, admin_token(paris_app))
    data = gql("""{ churnReport(from: "2025-01-01", to: "2025-02-28") { churned
        months { month activeAtStart churned churnRate retentionRate byType { key count } }
        cohorts { month size retention } byReason { key count } } }""")["churnReport"]
    assert data["months"][0] == {"month": "2025-01", "activeAtStart": 4, "churned": 1,
                                 "churnRate": 0.25, "retentionRate": 0.75,
                                 "byType": [{"key": "MALICIOUS", "count": 1}]}
    assert data["byReason"] == [{"key": "ETHICAL", "count": 1}]
    bad = gql.raw('{ churnReport(from: "2025-03-01", to: "2025-01-01") { churned } }')
    assert bad.get_json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    reader = GraphQL(paris_app, admin_token(paris_app, ("customers:read",)))
    denied = reader.raw('{ churnReport(from: "2025-01-01", to: "2025-01-31") { churned } }')
    assert denied.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def _alerts() -> list[Alert]:
    return list(db.session.scalars(select(Alert).where(Alert.kind == report.JUMP_ALERT)))


def _marks(ids: list[int], when: str) -> None:
    service.mark_customers_churned([{"customer_id": i, "type": "competitive",
                                     "reason": "competition", "churned_at": when} for i in ids])


def test_jump_raises_one_alert_per_month(paris_app: Flask) -> None:
    c = customers(100, "2024-06-01T12:00:00")
    for n, month in enumerate(("2025-01", "2025-02", "2025-03")):
        _marks([c[n]], f"{month}-15T12:00:00+00:00")
    _marks(c[10:14], "2025-04-10T12:00:00+00:00")  # 4 churned: under the minimum count
    assert _alerts() == []
    _marks(c[14:16], "2025-04-12T12:00:00+00:00")  # 6: over 1.5x the trailing mean
    [alert] = _alerts()
    assert (alert.source, alert.evidence["month"], alert.evidence["churned"]) == (
        "churn", "2025-04", 6)
    assert alert.evidence["churnRate"] == pytest.approx(6 / 97, abs=1e-4)
    assert set(alert.evidence) == {"month", "churnRate", "trailingMean", "trailingMonths",
                                   "ratioThreshold", "churned", "activeAtStart"}
    _marks([c[20]], "2025-04-20T12:00:00+00:00")
    assert len(_alerts()) == 1
    result = paris_app.test_cli_runner().invoke(cli, ["churn", "check", "--as-of", "2025-05-03"])
    assert result.exit_code == 0, result.output
    assert "0 new churn-rate alert(s)" in result.output
    assert db.session.scalar(select(func.count()).select_from(Alert)) == 1


def test_cli_check_and_report(paris_app: Flask) -> None:
    c = customers(100, "2024-06-01T12:00:00")
    rows = [{"customer_id": c[n], "type": "natural", "reason": "other",
             "churned_at": f"2025-0{1 + n % 3}-15T12:00:00+00:00"} for n in range(3)]
    rows += [{"customer_id": c[10 + n], "type": "natural", "reason": "involuntary",
              "churned_at": "2025-04-15T12:00:00+00:00"} for n in range(8)]
    # Rows written without the service (no automatic check): the CLI check finds the jump.
    for row in rows:
        db.session.execute(ChurnRecord.__table__.insert().values(
            customer_id=row["customer_id"], type=row["type"], reason=row["reason"],
            churned_at=at(row["churned_at"][:19]), recorded_at=at("2025-05-01T00:00:00")))
    db.session.commit()
    runner = paris_app.test_cli_runner()
    result = runner.invoke(cli, ["churn", "check", "--as-of", "2025-05-03"])
    assert "1 new churn-rate alert(s)" in result.output
    assert "2025-04: churn rate 8.25%" in result.output
    shown = runner.invoke(cli, ["churn", "report", "--from", "2025-01-01", "--to", "2025-04-30"])
    assert shown.exit_code == 0, shown.output
    assert "2025-04" in shown.output and "by reason: involuntary 8, other 3" in shown.output
    bad = runner.invoke(cli, ["churn", "report", "--from", "2025-04-01", "--to", "2025-01-01"])
    assert bad.exit_code == 1 and "to is before from" in bad.output
