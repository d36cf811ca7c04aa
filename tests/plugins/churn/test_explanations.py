"""Explanations people can act on, and the subscribers' CLV (issue 14).

A subscription business as it exports its data: a customer file with contract attributes
(the contract, tenure in months, the monthly charge, paperless billing), a gender, the
customer's own start date and renewal periods, and a snapshot of churned flags; no
purchases, no loyalty accounts, no complaints. Loaded through the CLI as a user would, the
classifier trains, scores and explains: an attribute's one-hot columns are one factor
named with its label and the customer's value, tenure counts once, the plugins without
data are not features, and the gender stays although every record was created after the
training date. sBG subscribers with a monthly charge get CLV = DERL x margin.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from scipy import special
from sqlalchemy import select

from core.cli import cli
from core.db import db
from core.models import CustomerExternalId
from plugins.churn import factors, modeling
from plugins.churn.features import FactorColumn
from plugins.churn.models import ChurnScore
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.plugins.churn.conftest import NOW

SNAPSHOT = (NOW - dt.timedelta(days=1)).date()
CONTRACTS = ("Month-to-month", "One year", "Two year")


def telecom_file(path: Path, n: int = 300, seed: int = 5) -> dict[str, bool]:
    """The customer CSV and the snapshot CSV; returns churned by external id."""
    rng = np.random.default_rng(seed)
    customers = ["external_id,gender,customer_since,tenure_periods,period,contract,tenure,"
                 "monthly_charge,paperless"]
    labels = ["customer_external_id,churned"]
    churned: dict[str, bool] = {}
    for k in range(n):
        contract = CONTRACTS[k % 3]
        # sBG within each contract: theta ~ Beta(1.2, 6) scaled by the contract, the
        # customer seen for up to 60 months.
        theta = rng.beta(1.2, 6.0) * {"Month-to-month": 1.6, "One year": 0.5,
                                      "Two year": 0.2}[contract]
        lifetime = int(rng.geometric(min(max(theta, 1e-6), 1.0)))
        observed = int(rng.integers(1, 61))
        gone = lifetime <= observed
        tenure = lifetime if gone else observed
        key = f"T-{k:04d}"
        since = SNAPSHOT - dt.timedelta(days=round(tenure * 30.44))
        charge = round(float(rng.uniform(20, 110)), 2)
        customers.append(f"{key},{'female' if rng.random() < 0.5 else 'male'},"
                         f"{since.isoformat()},{tenure},month,{contract},{tenure},{charge},"
                         f"{'Yes' if rng.random() < 0.6 else 'No'}")
        labels.append(f"{key},{'Yes' if gone else 'No'}")
        churned[key] = gone
    (path / "customers.csv").write_text("\n".join(customers) + "\n", encoding="utf-8")
    (path / "labels.csv").write_text("\n".join(labels) + "\n", encoding="utf-8")
    return churned


@pytest.fixture
def telecom_app(make_app: AppFactory) -> Flask:
    app = make_app(enabled=["churn", "loyalty", "complaints"])
    with app.app_context():
        yield app


def test_subscription_snapshot_without_purchases_trains_scores_and_explains(
        telecom_app: Flask, tmp_path: Path) -> None:
    churned = telecom_file(tmp_path)
    runner = telecom_app.test_cli_runner()
    done = runner.invoke(cli, ["import", "customers", str(tmp_path / "customers.csv"),
                               "--declare-attributes"])
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["churn", "import", str(tmp_path / "labels.csv"),
                               "--as-of", SNAPSHOT.isoformat()])
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["churn", "fit", "--horizon-days", "30"])
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["churn", "score"])
    assert done.exit_code == 0, done.output

    version = modeling.active_version()
    assert version is not None and version.params["model"] == "sbg"
    assert version.kind == "logistic"
    names = version.feature_names
    # Tenure counts once: the renewal periods; the days and the months attribute repeat it.
    assert "tenure_periods" in names
    assert "tenure_days" not in names and "attr_tenure" not in names
    notes = " ".join(version.metrics["notes"])
    assert "attr_tenure (as tenure_periods)" in notes
    # No purchases, no loyalty accounts, no complaints: none of their columns.
    assert not [n for n in names if n.startswith(("loyalty_", "complaints_"))]
    assert not {"frequency", "monetary", "no_purchase", "recency_days"} & set(names)
    # Demographics of customers whose records were created after the training date.
    assert {"gender_female", "gender_male"} & set(names)

    gql = GraphQL(telecom_app, admin_token(telecom_app))
    nodes: list[dict[str, Any]] = []
    after = None
    while True:
        found = gql("""query($after: String) { customers(first: 100, after: $after) {
            pageInfo { hasNextPage endCursor } edges { node { attributes
            churn { risk clv topFactors { feature contribution } } } } } }""",
                    {"after": after})["customers"]
        nodes += [e["node"] for e in found["edges"]]
        if not found["pageInfo"]["hasNextPage"]:
            break
        after = found["pageInfo"]["endCursor"]
    assert len(nodes) == 300
    seen: set[str] = set()
    for node in nodes:
        factors_ = node["churn"]["topFactors"]
        assert factors_
        named = [f["feature"] for f in factors_]
        assert len(named) == len(set(named))  # one factor per attribute
        contract = node["attributes"]["contract"]
        for name in named:
            assert not name.startswith(("attr_", "gender_")), name
            if name.startswith("Contract: "):
                assert name == f"Contract: {contract}"  # the customer's own value
        seen.update(named)
    assert {f"Contract: {c}" for c in CONTRACTS} <= seen
    # The contract drives churn here: it ranks among the first factors.
    assert sum(1 for n in nodes if n["churn"]["topFactors"][0]["feature"].startswith(
        "Contract: ")) > 100
    # CLV of subscribers: DERL x the monthly charge (RAPPORT_CHURN_MARGIN_ATTRIBUTE's
    # default); every one of them has a charge.
    assert all(n["churn"]["clv"] is not None and n["churn"]["clv"] > 0 for n in nodes)
    assert any("monthly_charge" in note and "subscriber CLV" in note
               for note in version.metrics["notes"])
    assert sum(churned.values()) > 20


def _derl_by_series(alpha: float, beta: float, n: int, rate: float,
                    terms: int = 20_000) -> float:
    """sum_{k>=1} S(n + k) / S(n) / (1 + d)^(k - 1), S(t) = B(alpha, beta + t) / B(alpha,
    beta), summed term by term (Fader & Hardie 2010, eq. for DERL before the closed form)."""
    k = np.arange(1, terms + 1, dtype=float)
    ratio = np.exp(special.betaln(alpha, beta + n + k) - special.betaln(alpha, beta + n))
    return float(np.sum(ratio * np.exp(-(k - 1) * np.log1p(rate))))


def test_subscriber_clv_is_derl_times_the_margin(make_app: AppFactory) -> None:
    """Scoring with known sBG parameters stored in the model: each subscriber's CLV equals
    an independent sum of the discounted survival series times its margin; a subscriber
    without a margin has none."""
    from core.services.customers import import_customers
    from core.services.staff import define_customer_attribute

    app = make_app(enabled=["churn"], RAPPORT_CHURN_MARGIN_ATTRIBUTE="margin")
    with app.app_context():
        define_customer_attribute({"key": "margin", "type": "number", "label": "Margin"})
        rows = [{"external_id": f"S-{i}", "name": f"S {i}", "tenure_periods": i % 7,
                 "period": "year" if i % 5 == 0 else "month",
                 "customer_since": (SNAPSHOT - dt.timedelta(days=400)).isoformat(),
                 "attributes": {} if i == 3 else {"margin": 10.0 + i}} for i in range(30)]
        assert not import_customers(rows).errors
        spec = modeling.features.feature_spec(NOW)
        version = modeling.ChurnModelVersion(
            as_of=NOW, time_unit=modeling.TimeUnit.DAY, kind="sbg", active=True,
            feature_names=[], artifact=None, metrics={"notes": []},
            params={"model": "sbg", "bgnbd": None, "gamma_gamma": None,
                    "sbg": {"month": {"alpha": 0.7, "beta": 2.5},
                            "year": {"alpha": 1.6, "beta": 4.0}},
                    "dropout_feature": False, "feature_spec": spec.to_json(),
                    "horizon_days": 30, "classifier": None})
        db.session.add(version)
        db.session.commit()
        modeling.score_customers()
        ids = dict(db.session.execute(select(CustomerExternalId.customer_id,
                                             CustomerExternalId.external_id)).all())
        scores = {ids[s.customer_id]: s for s in db.session.scalars(select(ChurnScore))}
        settings = modeling.churn_settings()
        for i, row in enumerate(rows):
            score = scores[str(row["external_id"])]
            if i == 3:
                assert score.clv is None
                continue
            period = str(row["period"])
            alpha, beta = (0.7, 2.5) if period == "month" else (1.6, 4.0)
            rate = (settings.discount_rate if period == "year"
                    else (1 + settings.discount_rate) ** (1 / 12) - 1)
            expected = _derl_by_series(alpha, beta, i % 7, rate) * (10.0 + i)
            assert score.clv == pytest.approx(expected, rel=1e-6), (i, period)
            # Priority weighs the risk of not renewing by that value.
            assert score.priority == pytest.approx(score.risk * score.clv)


def test_margin_attribute_setting_is_checked(make_app: AppFactory) -> None:
    from core.config import ConfigError

    app = make_app(enabled=["churn"], RAPPORT_CHURN_MARGIN_ATTRIBUTE=" charge ")
    assert app.extensions[modeling.EXTENSION].margin_attribute == "charge"
    assert make_app(enabled=["churn"]).extensions[modeling.EXTENSION].margin_attribute == (
        "monthly_charge")
    with pytest.raises(ConfigError, match="RAPPORT_CHURN_MARGIN_ATTRIBUTE"):
        make_app(enabled=["churn"], RAPPORT_CHURN_MARGIN_ATTRIBUTE="x" * 65)


# --- The parts over arrays ---------------------------------------------------------------------


def test_select_columns_leaves_out_constant_and_repeated_columns() -> None:
    rng = np.random.default_rng(1)
    months = rng.integers(1, 60, 500).astype(float)
    layout = {"attr_tenure": FactorColumn("attr:tenure", "Tenure"),
              "attr_tenure_missing": FactorColumn("attr:tenure", "Tenure", "missing"),
              "loyalty_points": FactorColumn("loyalty_points", "loyalty_points"),
              "loyalty_points_missing": FactorColumn("loyalty_points", "loyalty_points",
                                                     "missing"),
              "gender_female": FactorColumn("gender", "Gender", "onehot", "female"),
              "gender_male": FactorColumn("gender", "Gender", "onehot", "male")}
    female = (rng.random(500) < 0.5).astype(float)
    names = ["recency_days", "tenure_days", "attr_tenure", "attr_tenure_missing",
             "loyalty_points", "loyalty_points_missing", "gender_female", "gender_male",
             "noise"]
    X = np.column_stack([months * 30.44 + 3, months * 30.44 + 3, months, np.zeros(500),
                         np.zeros(500), np.ones(500), female, 1 - female,
                         rng.normal(size=500)])
    choice = factors.select_columns(X, names, layout)
    kept = [names[j] for j in choice.kept]
    # Tenure in days wins over the days since the last activity (the same here) and
    # over the months attribute; both one-hot columns of a factor stay.
    assert kept == ["tenure_days", "gender_female", "gender_male", "noise"]
    assert set(choice.constant) == {"attr_tenure_missing", "loyalty_points",
                                    "loyalty_points_missing"}
    assert ("attr_tenure", "tenure_days") in choice.duplicates
    assert ("recency_days", "tenure_days") in choice.duplicates
    # A column with gaps varies (its missing indicator does); one all NaN does not.
    gaps = np.column_stack([np.where(np.arange(500) % 2 == 0, np.nan, 1.0),
                            np.full(500, np.nan), rng.normal(size=500)])
    assert factors.select_columns(gaps, ["a", "b", "c"], {}).kept == [0, 2]


def test_grouping_sums_columns_and_names_the_customers_value() -> None:
    layout = {"attr_plan_basic": FactorColumn("attr:plan", "Plan", "onehot", "Basic",
                                              "other or not set"),
              "attr_plan_pro": FactorColumn("attr:plan", "Plan", "onehot", "Pro",
                                            "other or not set"),
              "age_years": FactorColumn("age", "Age"),
              "age_missing": FactorColumn("age", "Age", "missing")}
    table_names = ["tenure_days", "attr_plan_basic", "attr_plan_pro", "age_years",
                   "age_missing"]
    classifier_names = ["tenure_days", "attr_plan_pro", "attr_plan_basic", "age_years",
                        "age_missing", "btyd_dropout_probability"]
    grouping = factors.FactorGrouping.build(layout, table_names, classifier_names)
    contributions = np.array([[0.1, 0.5, -0.2, 0.05, 0.3, -0.01],
                              [-0.4, 0.0, 0.1, 0.0, 0.0, 0.2],
                              [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    table = np.array([[30.0, 0.0, 1.0, 40.0, 0.0],
                      [10.0, 1.0, 0.0, 0.0, 1.0],
                      [5.0, 0.0, 0.0, 0.0, 1.0]])
    index, value = grouping.top(contributions, table, 3)
    named = [[grouping.names[j] for j in row] for row in index]
    assert named[0] == ["Age", "Plan: Pro", "tenure_days"]
    assert value[0].tolist() == pytest.approx([0.35, 0.3, 0.1])
    assert named[1] == ["tenure_days", "btyd_dropout_probability", "Plan: Basic"]
    assert value[1].tolist() == pytest.approx([-0.4, 0.2, 0.1])
    assert "Plan: other or not set" in [grouping.names[j] for j in index[2]]
