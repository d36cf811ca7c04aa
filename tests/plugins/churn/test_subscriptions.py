"""A subscription business as it exports its data: customers with contract attributes,
tenure in renewal periods and a churned flag, no purchases. The model kind is chosen from
the data (sBG), BG/NBD is skipped with a reason, the classifier trains, scores and
explains from attributes alone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from sqlalchemy import select

from core.cli import cli
from core.db import db
from core.models import CustomerExternalId
from core.services.customers import import_customers
from core.services.staff import define_customer_attribute
from plugins.churn import modeling, sbg, service
from plugins.churn.btyd import InsufficientData
from plugins.churn.models import ChurnRecord, ChurnScore
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.plugins.churn.conftest import NOW

ALPHA, BETA = 1.2, 6.0
SNAPSHOT = (NOW - dt.timedelta(days=2)).date()


def subscribers(n: int, seed: int = 3) -> tuple[list[dict[str, object]], list[str]]:
    """Customers with a contract attribute that drives churn and a tenure drawn from sBG
    (month-to-month subscribers leave more often); returns rows and the churned ids."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    churned: list[str] = []
    for k in range(n):
        contract = "monthly" if k % 2 else "two_year"
        theta = rng.beta(ALPHA, BETA) * (1.6 if contract == "monthly" else 0.4)
        tenure = 0
        left = False
        while tenure < 48:
            tenure += 1
            if rng.random() < theta:
                left = True
                break
        key = f"SUB-{k:04d}"
        rows.append({"external_id": key, "name": f"Subscriber {k}",
                     "customer_since": (SNAPSHOT - dt.timedelta(days=30 * tenure + 40)
                                        ).isoformat(),
                     "tenure_periods": tenure, "period": "month",
                     "attributes": {"contract": contract,
                                    "monthly_charge": float(rng.uniform(20, 110))}})
        if left:
            churned.append(key)
    return rows, churned


@pytest.fixture
def sub_app(make_app: AppFactory) -> Flask:
    app = make_app(enabled=["churn"])
    with app.app_context():
        define_customer_attribute({"key": "contract", "type": "category", "label": "Contract",
                                   "categories": ["monthly", "two_year"]})
        define_customer_attribute({"key": "monthly_charge", "type": "number",
                                   "label": "Monthly charge"})
        yield app


def load(app: Flask, tmp_path: Path, n: int = 400) -> list[str]:
    rows, churned = subscribers(n)
    result = import_customers(rows)
    assert not result.errors
    path = tmp_path / "labels.csv"
    keys = [str(r["external_id"]) for r in rows]
    path.write_text("customer_external_id,churned\n" + "".join(
        f"{key},{'Yes' if key in churned else 'No'}\n" for key in keys), encoding="utf-8")
    outcome = app.test_cli_runner().invoke(
        cli, ["churn", "import", str(path), "--as-of", SNAPSHOT.isoformat()])
    assert outcome.exit_code == 0, outcome.output
    return churned


def test_subscriptions_fit_sbg_train_score_and_explain(sub_app: Flask, tmp_path: Path
                                                       ) -> None:
    churned = load(sub_app, tmp_path)
    records = db.session.scalars(select(ChurnRecord)).all()
    assert len(records) == len(churned)
    version = modeling.fit_models(horizon_days=30)
    params = version.params
    assert params["model"] == "sbg" and params["bgnbd"] is None
    fit = params["sbg"]["month"]
    # The pooled cohort mixes two churn levels; the fit is the sBG of its tenures, which
    # an independent fit of the same arrays gives exactly.
    assert fit["n_customers"] == 400 and fit["n_churned"] == len(churned)
    assert any("no BG/NBD" in note for note in version.metrics["notes"])
    assert version.kind == "logistic" and params["dropout_feature"] is False
    assert "btyd_dropout_probability" not in version.feature_names
    assert "tenure_periods" in version.feature_names
    cv = version.metrics["classifier"]["cross_validation"]
    assert cv["roc_auc"] > 0.65  # the contract attribute predicts churn

    summary = modeling.score_customers()
    assert summary.customers == 400
    scores = db.session.scalars(select(ChurnScore)).all()
    assert all(s.top_factors for s in scores)
    named = {f["feature"] for s in scores for f in s.top_factors}
    # The contract's one-hot columns are one factor named with the customer's value.
    assert {"Contract: monthly", "Contract: two_year"} <= named
    assert not any(name.startswith("attr_") for name in named)
    # Tenure in days repeats the renewal periods here (customer_since follows them).
    assert "tenure_days" not in version.feature_names

    gql = GraphQL(sub_app, admin_token(sub_app))
    model = gql("""{ churnModel { kind model bgnbd { r } notes
        sbg { period alpha beta logLikelihood customers retention expectedRemainingPeriods } }
    }""")["churnModel"]
    assert model["model"] == "sbg" and model["bgnbd"] is None
    (month,) = model["sbg"]
    assert (month["alpha"], month["beta"]) == (pytest.approx(fit["alpha"]),
                                               pytest.approx(fit["beta"]))
    expected = sbg.retention_curve((fit["alpha"], fit["beta"]), 12)
    assert month["retention"] == pytest.approx(expected.tolist())
    assert month["expectedRemainingPeriods"] > 1


def test_sbg_without_labels_scores_from_renewal_probability(sub_app: Flask) -> None:
    rows, _ = subscribers(60)
    assert not import_customers(rows).errors
    # 25 churn records, all before the classifier's horizon: no classifier.
    keys = [r["external_id"] for r in rows[:30]]
    ids = dict(db.session.execute(select(CustomerExternalId.external_id,
                                         CustomerExternalId.customer_id)).all())
    for key in keys[:25]:
        service.mark_churned({"customer_id": ids[key], "type": "other", "reason": "other",
                              "churned_at": (NOW - dt.timedelta(days=20)).isoformat()})
    version = modeling.fit_models(horizon_days=10)
    assert version.kind == "sbg" and version.params["sbg"]["month"]["n_churned"] == 25
    modeling.score_customers()
    fit = version.params["sbg"]["month"]
    by_customer = {s.customer_id: s.risk for s in db.session.scalars(select(ChurnScore))}
    row = next(r for r in rows[30:])
    n = int(row["tenure_periods"])  # type: ignore[call-overload]
    expected = fit["alpha"] / (fit["alpha"] + fit["beta"] + n)
    assert by_customer[ids[row["external_id"]]] == pytest.approx(expected)


def test_no_model_at_all_is_a_typed_error(sub_app: Flask) -> None:
    rows, _ = subscribers(5)
    assert not import_customers(rows).errors
    with pytest.raises(InsufficientData, match="no churn model could be fitted"):
        modeling.fit_models()


def test_backtest_on_simulated_bgnbd_data(churn_app: Flask) -> None:
    from tests.plugins.churn.test_modeling import load_simulation

    load_simulation(n=600, seed=11, with_marks=False)
    version = modeling.fit_models(horizon_days=120)
    checked = version.metrics["validation"]
    assert checked["customers"] > 300 and checked["horizonDays"] == pytest.approx(120)
    actual, predicted = checked["actualTotal"], checked["predictedTotal"]
    # Poisson-like sampling error of a total of purchase days, plus the estimation error.
    assert abs(predicted - actual) < 3 * actual ** 0.5 + 0.1 * actual, (predicted, actual)
    assert checked["correlation"] > 0.4
    track = checked["tracking"]
    assert len(track) == 18 and track[-1]["actual"] == pytest.approx(actual)
    assert track[-1]["predicted"] == pytest.approx(predicted, rel=1e-9)
    assert sum(g["customers"] for g in checked["byFrequency"]) == checked["customers"]
    gql = GraphQL(churn_app, admin_token(churn_app))
    found = gql("{ churnModel { validation { actualTotal predictedTotal "
                "byFrequency { frequency orMore customers } tracking { week actual } } } }")
    assert found["churnModel"]["validation"]["actualTotal"] == actual
    from plugins.churn.html_report import render_churn_report

    today = NOW.date()
    page = render_churn_report(today.replace(day=1), today)
    assert "Calibration/holdout backtest" in page
    assert "Conditional expectations of holdout purchases" in page
