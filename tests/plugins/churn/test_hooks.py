"""Merge, erasure, export, the demo data, scopes and migrations of the churn plugin."""

from __future__ import annotations

import datetime as dt

from flask import Flask
from sqlalchemy import func, inspect, select

from core.app import rapport
from core.db import db
from core.demo import generate_demo
from core.ids import global_id
from core.migrate import current_heads, upgrade
from core.models import Customer, CustomerStatus, Interaction
from core.services.customers import erase_customer, export_customer, merge_customers
from plugins.churn import report, service
from plugins.churn.models import (
    ChurnModelVersion, ChurnRecord, ChurnScore, ChurnType, WinbackAttempt, WinbackCampaign,
    WinbackOutcome,
)
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.migrations import drop_everything, schema_differences
from tests.plugins.churn.conftest import NOW, customer, days_ago, mark


def _version() -> int:
    version = ChurnModelVersion(as_of=days_ago(1), kind="bgnbd+gg", params={}, metrics={},
                                feature_names=[], active=True)
    db.session.add(version)
    db.session.flush()
    return version.id


def _score(customer_id: int, version: int, risk: float) -> None:
    db.session.add(ChurnScore(customer_id=customer_id, model_version_id=version, risk=risk,
                              p_alive=1 - risk, clv=100.0, priority=risk * 100,
                              top_factors=[{"feature": "recency_days", "contribution": 0.4}]))
    db.session.commit()


def test_merge_rekeys_records_attempts_and_scores(churn_app: Flask) -> None:
    ada, twin, other = customer("Ada"), customer("Ada L."), customer("Ann")
    mark(ada, days_ago(20))
    mark(twin, days_ago(10))
    campaign = service.create_campaign({"name": "Call", "strategy": "relationship",
                                        "started_at": days_ago(30).isoformat()})
    service.record_attempt({"campaign_id": campaign.id, "customer_id": twin,
                            "attempted_at": days_ago(5).isoformat()})
    old, new = _version(), _version()
    _score(ada, new, 0.2)
    _score(twin, new, 0.9)
    _score(twin, old, 0.5)
    _score(other, old, 0.4)
    merge_customers(ada, [twin, other])
    records = db.session.scalars(select(ChurnRecord).order_by(ChurnRecord.churned_at)).all()
    assert [r.customer_id for r in records] == [ada, ada]
    assert [r.reactivated_at is None for r in records] == [True, False]  # one open record
    assert records[1].reactivation_reason == f"merged into customer {global_id('Customer', ada)}"
    assert db.session.scalar(select(WinbackAttempt.customer_id)) == ada
    scores = db.session.execute(select(ChurnScore.model_version_id, ChurnScore.risk)
                                .where(ChurnScore.customer_id == ada)
                                .order_by(ChurnScore.model_version_id)).all()
    assert [v for v, _ in scores] == [old, new]
    assert dict(scores)[new] == 0.2  # the survivor's own score stays
    assert db.session.scalar(select(func.count()).select_from(ChurnScore)) == 2


def test_erasure_keeps_records_and_report_totals(churn_app: Flask) -> None:
    ada = customer()
    mark(ada, days_ago(20), note="Said he moved to Lyon")
    campaign = service.create_campaign({"name": "Call", "strategy": "relationship",
                                        "started_at": days_ago(30).isoformat()})
    service.record_attempt({"campaign_id": campaign.id, "customer_id": ada,
                            "attempted_at": days_ago(5).isoformat(), "note": "Rang his mobile"})
    _score(ada, _version(), 0.7)
    period = {"from": days_ago(60).date().isoformat(), "to": NOW.date().isoformat()}
    before = report.churn_report(period)
    result = erase_customer(ada)
    assert result.reports["churn"] == {"churn_records_kept": 1, "winback_attempts_kept": 1,
                                       "scores_removed": 1}
    db.session.expire_all()
    record = db.session.scalars(select(ChurnRecord)).one()
    assert (record.customer_id, record.type, record.note) == (ada, ChurnType.COMPETITIVE, None)
    assert db.session.scalars(select(WinbackAttempt)).one().note is None
    after = report.churn_report(period)
    assert [(m.churned, m.active_at_start) for m in after.months] == [
        (m.churned, m.active_at_start) for m in before.months]
    assert erase_customer(customer("Bob")).reports.get("churn") is None


def test_export_section(churn_app: Flask) -> None:
    ada = customer()
    mark(ada, days_ago(20), "natural", "involuntary", note="Moved abroad")
    service.reactivate_customer({"customer_id": ada, "reason": "Moved back"})
    _score(ada, _version(), 0.3)
    section = export_customer(ada)["plugins"]["churn"]
    [record] = section["churnRecords"]
    assert (record["type"], record["reason"], record["note"], record["reactivationReason"]) == (
        "natural", "involuntary", "Moved abroad", "Moved back")
    assert record["id"].startswith("Q2h1cm5SZWNvcmQ6")  # ChurnRecord:
    assert section["winbackAttempts"] == []
    assert section["latestScore"]["risk"] == 0.3
    assert set(section["latestScore"]) == {"modelVersionId", "scoredAt", "risk", "pAlive",
                                           "clv", "topFactors"}
    assert "churn" not in export_customer(customer("Bob")).get("plugins", {})


def test_demo_data_is_consistent(churn_app: Flask) -> None:
    as_of = dt.datetime(2026, 6, 30, 15, tzinfo=dt.timezone.utc)
    generate_demo(300, seed=3, as_of=as_of)
    records = db.session.scalars(select(ChurnRecord)).all()
    assert len(records) > 10
    assert all(r.churned_at <= as_of for r in records)
    open_ids = {r.customer_id for r in records if r.reactivated_at is None}
    churned = set(db.session.scalars(select(Customer.id).where(
        Customer.status == CustomerStatus.CHURNED)))
    assert churned == open_ids
    assert {r.type for r in records} >= {ChurnType.NATURAL, ChurnType.COMPETITIVE}
    assert db.session.scalar(select(func.count()).select_from(WinbackCampaign)) == 2
    outcomes = set(db.session.scalars(select(WinbackAttempt.outcome)))
    assert WinbackOutcome.WON_BACK in outcomes
    # Churn dates follow the last purchase; NEGLIGENCE goes with a refund history.
    purchases_after = db.session.scalar(select(func.count()).select_from(Interaction).join(
        ChurnRecord, ChurnRecord.customer_id == Interaction.customer_id).where(
        Interaction.kind == "purchase", Interaction.occurred_at > ChurnRecord.churned_at))
    assert purchases_after == 0
    neglected = {r.customer_id for r in records if r.type == ChurnType.NEGLIGENCE}
    refunded = set(db.session.scalars(select(Interaction.customer_id).where(
        Interaction.kind == "refund")))
    assert neglected <= refunded


def test_scopes_and_disabled_plugin(make_app: AppFactory) -> None:
    app = make_app(enabled=["churn"])
    assert {"churn:read", "churn:write"} <= set(rapport(app).scopes)
    bare = make_app(enabled=[])
    gql = GraphQL(bare, admin_token(bare))
    response = gql.raw('{ churnReport(from: "2025-01-01", to: "2025-01-31") { churned } }')
    assert response.get_json()["errors"][0]["extensions"]["code"] == \
        "GRAPHQL_VALIDATION_FAILED"


def test_upgrade_builds_exactly_the_models(make_app: AppFactory) -> None:
    app = make_app(enabled=["churn"])
    drop_everything(app)
    upgrade(app)
    assert "churn_0002" in current_heads(app)
    with app.app_context():
        tables = {t for t in inspect(db.engine).get_table_names() if t.startswith("churn_")}
    assert tables == {"churn_records", "churn_winback_campaigns", "churn_winback_attempts",
                      "churn_model_versions", "churn_scores", "churn_rate_alerts",
                      "churn_score_runs", "churn_score_staging"}
    assert schema_differences(app) == []
    heads = current_heads(app)
    upgrade(app)
    assert current_heads(app) == heads


def test_tables_stay_out_when_the_plugin_is_disabled(make_app: AppFactory) -> None:
    disabled = make_app(enabled=[])
    drop_everything(disabled)
    upgrade(disabled)
    with disabled.app_context():
        assert not [t for t in inspect(db.engine).get_table_names() if t.startswith("churn_")]
