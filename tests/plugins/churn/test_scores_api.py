"""GraphQL: ``Customer.churn``, ``churnModel`` (one query per page, values equal to the
stored scores and the model's own predictions, scopes, nulls)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import select

from api.types import decode_global_id
from core.db import db
from plugins.churn import modeling
from plugins.churn.btyd import BGNBDParams, expected_purchases
from plugins.churn.models import ChurnModelVersion, ChurnScore
from tests.conftest import GraphQL, admin_token, count_statements
from tests.plugins.churn.conftest import customer
from tests.plugins.churn.test_modeling import load_simulation

CHURN = """churn { risk probabilityAlive expectedPurchases(days: 30) clv expectedOrderValue
    priority topFactors { feature contribution } scoredAt modelVersion }"""
CUSTOMERS = "query($first: Int) { customers(first: $first) { edges { node { id %s } } } }"


def _by_id(data: dict) -> dict[int, dict]:
    return {decode_global_id(e["node"]["id"], "Customer"): e["node"]["churn"]
            for e in data["customers"]["edges"]}


def test_customer_churn_reads_the_stored_scores(churn_app: Flask, gql: GraphQL) -> None:
    before = gql(CUSTOMERS % CHURN, {"first": 5})
    assert all(e["node"]["churn"] is None for e in before["customers"]["edges"])
    load_simulation(n=99, seed=21)
    version = modeling.fit_models(horizon_days=120)
    modeling.score_customers()
    never = customer("Never bought")  # unscored: created after the scoring run
    data = _by_id(gql(CUSTOMERS % CHURN, {"first": 100}))
    assert data[never] is None
    scores = {s.customer_id: s for s in db.session.scalars(select(ChurnScore))}
    params = BGNBDParams.from_dict(version.params["bgnbd"])
    checked = 0
    for cid, churn in data.items():
        if cid == never:
            continue
        score = scores[cid]
        assert churn["risk"] == pytest.approx(score.risk)
        assert churn["probabilityAlive"] == pytest.approx(score.p_alive)
        assert churn["clv"] == pytest.approx(score.clv)
        assert churn["modelVersion"] == version.id
        assert churn["topFactors"] == [{"feature": f["feature"],
                                        "contribution": pytest.approx(f["contribution"])}
                                       for f in score.top_factors]
        if score.frequency is not None:
            expected = expected_purchases(params, 30, [score.frequency], [score.recency],
                                          [score.T])[0]
            assert churn["expectedPurchases"] == pytest.approx(expected)
            checked += 1
    assert checked >= 90
    busy = max(data.values(), key=lambda c: (c or {}).get("expectedPurchases") or 0)
    assert busy["expectedPurchases"] > 0.5 and busy["topFactors"]


def test_customer_churn_is_one_query_per_page(churn_app: Flask, gql: GraphQL) -> None:
    load_simulation(n=60, seed=2)
    modeling.fit_models()
    modeling.score_customers()
    gql(CUSTOMERS % CHURN, {"first": 1})  # the API key's first use writes last_used_at
    with count_statements(churn_app) as few:
        gql(CUSTOMERS % CHURN, {"first": 3})
    with count_statements(churn_app) as many:
        data = gql(CUSTOMERS % CHURN, {"first": 50})
    assert len(data["customers"]["edges"]) == 50
    assert all(e["node"]["churn"] for e in data["customers"]["edges"])
    assert len(many) == len(few), "\n\n".join(many)


def test_bad_days_and_scope(churn_app: Flask, gql: GraphQL) -> None:
    load_simulation(n=40, seed=4, with_marks=False)
    modeling.fit_models()
    modeling.score_customers()
    body = gql.raw(CUSTOMERS % "churn { expectedPurchases(days: -1) }",
                   {"first": 1}).get_json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    reader = GraphQL(churn_app, admin_token(churn_app, ("customers:read",)))
    body = reader.raw(CUSTOMERS % "churn { risk }", {"first": 1}).get_json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = reader.raw("{ churnModel { version } }").get_json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # Without churn records: no classifier, and the notes say why.
    model = gql(MODEL)["churnModel"]
    # (40 customers with one spend distribution may not identify Gamma-Gamma: then "bgnbd")
    assert model["classifier"] is None
    assert model["kind"] == ("bgnbd+gg" if model["gammaGamma"] else "bgnbd")
    assert any(note.startswith("no classifier") for note in model["notes"])


MODEL = """{ churnModel { version asOf createdAt kind
    bgnbd { r alpha a b logLikelihood timeUnit customers repeatBuyers }
    gammaGamma { p q gamma logLikelihood buyers }
    classifier { kind rocAuc prAuc baseRate timeAwareRocAuc trainedAt trainingAsOf
                 horizonDays features }
    notes } }"""


def test_churn_model(churn_app: Flask, gql: GraphQL) -> None:
    assert gql(MODEL)["churnModel"] is None
    load_simulation(n=150, seed=21)
    version = modeling.fit_models(time_unit="week", horizon_days=120)
    model = gql(MODEL)["churnModel"]
    g = version.params["bgnbd"]
    assert model["version"] == version.id and model["kind"] == "logistic"
    assert model["bgnbd"] == {"r": pytest.approx(g["r"]), "alpha": pytest.approx(g["alpha"]),
                              "a": pytest.approx(g["a"]), "b": pytest.approx(g["b"]),
                              "logLikelihood": pytest.approx(g["log_likelihood"]),
                              "timeUnit": "WEEK", "customers": g["n_customers"],
                              "repeatBuyers": g["n_repeat_buyers"]}
    assert model["gammaGamma"]["q"] == pytest.approx(version.params["gamma_gamma"]["q"])
    classifier = model["classifier"]
    cv = version.metrics["classifier"]["cross_validation"]
    assert (classifier["kind"], classifier["rocAuc"], classifier["horizonDays"]) == (
        "logistic", pytest.approx(cv["roc_auc"]), 120)
    assert classifier["features"][-1] == "btyd_dropout_probability"
    assert classifier["features"] == version.feature_names
    # Only the active version is the model.
    db.session.execute(ChurnModelVersion.__table__.update().values(active=False))
    db.session.commit()
    assert gql(MODEL)["churnModel"] is None
