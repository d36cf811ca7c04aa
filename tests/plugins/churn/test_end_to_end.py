"""The issue's "Done when": customers and purchases imported, churn records from a CSV
file through the churn importer, ``rapport churn fit`` and ``score`` through the CLI, then
a front-end reads risk, P(alive), CLV and top factors on each customer, the warning list,
the monthly report and the win-back stats through GraphQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flask import Flask

from api.types import decode_global_id
from core.cli import cli
from core.services.customers import import_customers
from core.services.interactions import record_interactions
from plugins.churn.classifier import roc_auc
from tests.conftest import GraphQL
from tests.plugins.churn.conftest import NOW, customer, days_ago, purchase
from tests.plugins.churn.test_modeling import simulate

READ = """query($after: String) {
  customers(first: 100, after: $after) { pageInfo { hasNextPage endCursor } edges { node {
    id churn { risk probabilityAlive expectedPurchases(days: 90) clv
               topFactors { feature contribution } scoredAt modelVersion } } } }
  churnModel { version bgnbd { r alpha a b logLikelihood timeUnit } gammaGamma { p q gamma }
               classifier { kind rocAuc prAuc trainedAt features } }
  churnWarnings(first: 10, minRisk: 0.3) { totalCount edges { node {
    customer { id } risk clv probabilityAlive topFactors { feature contribution } } } }
  churnReport(from: "%s", to: "%s") { months { month activeAtStart churned churnRate
    retentionRate } byReason { key count } }
  winbackStats(from: "%s", to: "%s") { total { attempts } strategies { strategy attempts } }
}"""


def _read_all(gql: GraphQL) -> tuple[dict[int, dict], dict]:
    first, last = days_ago(365).date().isoformat(), NOW.date().isoformat()
    query = READ % (first, last, first, last)
    churn: dict[int, dict] = {}
    after = None
    while True:
        data = gql(query, {"after": after})
        churn.update({decode_global_id(e["node"]["id"], "Customer"): e["node"]["churn"]
                      for e in data["customers"]["edges"]})
        if not data["customers"]["pageInfo"]["hasNextPage"]:
            return churn, data
        after = data["customers"]["pageInfo"]["endCursor"]


def test_import_fit_score_and_read(churn_app: Flask, gql: GraphQL, tmp_path: Path) -> None:
    runner = churn_app.test_cli_runner()
    missing = runner.invoke(cli, ["churn", "score"])
    assert missing.exit_code == 1 and "rapport churn fit" in missing.output

    people, purchases, churned, dropped = simulate(n=240, seed=13)
    imported = import_customers(people)
    ids = {p["external_id"]: imported.recorded_ids[i] for i, p in enumerate(people)}
    rows = [{k: v for k, v in p.items() if k != "customer"} | {"customer_id": ids[p["customer"]]}
            for p in purchases]
    for start in range(0, len(rows), 1000):
        assert not record_interactions(rows[start:start + 1000]).errors
    marks = tmp_path / "churn.csv"
    reasons = ["pricing", "competition", "inconvenience"]
    marks.write_text("customer_external_id,churned_at,type,reason,note\n" + "".join(
        f"{key},{when.isoformat()},competitive,{reasons[n % 3]},went quiet\n"
        for n, (key, when) in enumerate(sorted(churned.items()))), encoding="utf-8")
    result = runner.invoke(cli, ["churn", "import", str(marks)])
    assert f"imported: {len(churned)}," in result.output, result.output

    fit = runner.invoke(cli, ["churn", "fit", "--horizon-days", "120"])
    assert fit.exit_code == 0, fit.output
    assert "BG/NBD: r " in fit.output and "Gamma-Gamma: p " in fit.output
    assert "classifier logistic" in fit.output and "cross-validation: ROC-AUC" in fit.output
    score = runner.invoke(cli, ["churn", "score", "--chunk-size", "100"])
    assert score.exit_code == 0, score.output
    assert f"scored {len(people)} customers" in score.output

    churn, data = _read_all(gql)
    by_key = {key: churn[cid] for key, cid in ids.items()}
    assert all(c is not None for c in by_key.values())
    quiet = [c["probabilityAlive"] for k, c in by_key.items() if k in dropped]
    buying = [c["probabilityAlive"] for k, c in by_key.items() if k not in dropped]
    assert np.mean(quiet) < np.mean(buying) - 0.2
    labels = np.array([k in churned for k in by_key])
    assert roc_auc(labels, np.array([c["risk"] for c in by_key.values()])) > 0.7
    loyal = max(by_key.values(), key=lambda c: c["expectedPurchases"])
    assert loyal["clv"] > 0 and loyal["topFactors"] and loyal["expectedPurchases"] > 0.5

    model = data["churnModel"]
    assert model["classifier"]["kind"] == "logistic" and model["classifier"]["rocAuc"] > 0.6
    assert model["bgnbd"]["timeUnit"] == "DAY" and model["gammaGamma"]["q"] > 1
    warnings = data["churnWarnings"]
    assert warnings["totalCount"] > 0
    priorities = [e["node"]["risk"] * (e["node"]["clv"] or 0) for e in warnings["edges"]]
    assert priorities == sorted(priorities, reverse=True)
    assert all(e["node"]["risk"] >= 0.3 for e in warnings["edges"])
    report = data["churnReport"]
    assert sum(m["churned"] for m in report["months"]) == sum(
        1 for when in churned.values() if when >= days_ago(365).replace(day=1))
    assert {r["key"] for r in report["byReason"]} <= {"PRICING", "COMPETITION",
                                                       "INCONVENIENCE"}
    assert data["winbackStats"]["total"]["attempts"] == 0

    out = tmp_path / "warnings.csv"
    listed = runner.invoke(cli, ["churn", "warnings", "--out", str(out), "--limit", "5"])
    assert listed.exit_code == 0 and "5 customers written" in listed.output


def test_fit_with_too_little_data_is_a_typed_error(churn_app: Flask) -> None:
    for n in range(3):
        person = customer(f"Few {n}")
        purchase(person, days_ago(60))
        purchase(person, days_ago(20))
    result = churn_app.test_cli_runner().invoke(cli, ["churn", "fit"])
    assert result.exit_code == 1
    assert "needs at least 20 customers" in result.output and "Traceback" not in result.output
    bad = churn_app.test_cli_runner().invoke(cli, ["churn", "fit", "--time-unit", "month"])
    assert bad.exit_code == 2
