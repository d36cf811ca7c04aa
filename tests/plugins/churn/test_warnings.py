"""``churnWarnings`` (keyset pages by risk x CLV, minRisk, one query per relation) and
``rapport churn warnings --out FILE`` (the same order as CSV, with contact details)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select, update

from api.types import decode_global_id
from core.cli import cli
from core.db import db
from core.models import Customer
from core.services.staff import create_agent
from plugins.churn import modeling, service
from plugins.churn.models import ChurnRecord, ChurnScore
from tests.conftest import GraphQL, count_statements
from tests.plugins.churn.test_modeling import load_simulation

WARNINGS = """query($first: Int, $after: String, $minRisk: Float) {
  churnWarnings(first: $first, after: $after, minRisk: $minRisk) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { customer { id name } risk clv probabilityAlive priority
                          topFactors { feature contribution } } } } }"""


def _pk(value: str) -> int:
    """The customer behind a warning row's global id (the CSV shows global ids)."""
    return decode_global_id(value, "Customer")


def _scored(n: int = 300, seed: int = 7) -> dict[str, int]:
    sim = load_simulation(n=n, seed=seed)
    version = modeling.fit_models(horizon_days=120)
    # The full model: a classifier and a Gamma-Gamma part, so priorities are risk x CLV.
    assert version.artifact is not None, version.metrics.get("notes")
    assert version.params["gamma_gamma"] is not None, version.metrics.get("notes")
    modeling.score_customers()
    return sim.ids


def _open_records() -> set[int]:
    return set(db.session.scalars(select(ChurnRecord.customer_id).where(
        ChurnRecord.reactivated_at.is_(None))))


def _expected_order(min_risk: float = 0.0) -> list[int]:
    """Scores with risk >= min_risk of customers not already churned, by priority."""
    churned = _open_records()
    scores = [s for s in db.session.scalars(select(ChurnScore).where(
        ChurnScore.risk >= min_risk)) if s.customer_id not in churned]
    return [s.customer_id for s in sorted(scores, key=lambda s: (-s.priority, -s.customer_id))]


def test_pages_follow_priority_then_customer(churn_app: Flask, gql: GraphQL) -> None:
    assert gql(WARNINGS)["churnWarnings"]["totalCount"] == 0
    _scored()
    # Ties on priority are broken by customer id.
    db.session.execute(update(ChurnScore).where(ChurnScore.customer_id.in_(
        select(ChurnScore.customer_id).order_by(ChurnScore.customer_id).limit(6)
        .scalar_subquery())).values(priority=1234.5))
    db.session.commit()
    seen: list[int] = []
    after = None
    while True:
        page = gql(WARNINGS, {"first": 7, "after": after})["churnWarnings"]
        seen += [decode_global_id(e["node"]["customer"]["id"], "Customer")
                 for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == _expected_order()
    churned = _open_records()
    assert churned and not churned & set(seen)
    assert page["totalCount"] == len(seen) == 300 - len(churned)
    first = gql(WARNINGS, {"first": 1})["churnWarnings"]["edges"][0]["node"]
    top = db.session.scalars(select(ChurnScore).order_by(ChurnScore.priority.desc(),
                                                         ChurnScore.customer_id.desc())).first()
    assert first["priority"] == pytest.approx(top.priority)
    assert first["risk"] == pytest.approx(top.risk)


def test_min_risk_and_bad_input(churn_app: Flask, gql: GraphQL) -> None:
    _scored()
    data = gql(WARNINGS, {"first": 100, "minRisk": 0.5})["churnWarnings"]
    ids = [decode_global_id(e["node"]["customer"]["id"], "Customer") for e in data["edges"]]
    assert ids == _expected_order(0.5) and 0 < len(ids) < len(_expected_order())
    assert all(e["node"]["risk"] >= 0.5 for e in data["edges"])
    assert data["totalCount"] == len(ids)
    for variables in ({"minRisk": 1.5}, {"after": "not-a-cursor"}, {"first": 1000}):
        body = gql.raw(WARNINGS, variables).get_json()
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body


def test_one_query_per_relation(churn_app: Flask, gql: GraphQL) -> None:
    _scored()
    gql(WARNINGS, {"first": 1})
    with count_statements(churn_app) as few:
        gql(WARNINGS, {"first": 2})
    with count_statements(churn_app) as many:
        data = gql(WARNINGS, {"first": 60})
    assert len(data["churnWarnings"]["edges"]) == 60
    assert len(many) == len(few)


def test_cli_csv(churn_app: Flask, tmp_path: Path) -> None:
    runner = churn_app.test_cli_runner()
    out = tmp_path / "warnings.csv"
    none = runner.invoke(cli, ["churn", "warnings", "--out", str(out)])
    assert none.exit_code == 1 and "rapport churn fit" in none.output
    ids = _scored()
    owner = create_agent({"name": "Olga Owner", "email": "olga@example.com"})
    churned = _open_records()
    kept = next(ids[k] for k in sorted(ids) if ids[k] not in churned)
    db.session.execute(update(Customer).where(Customer.id == kept).values(
        owner_id=owner.id, name="=HYPERLINK(1)"))
    db.session.commit()
    result = runner.invoke(cli, ["churn", "warnings", "--out", str(out), "--min-risk", "0.2",
                                 "--limit", "30"])
    assert result.exit_code == 0, result.output
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == modeling.WARNING_COLUMNS
    expected = _expected_order(0.2)[:30]
    assert [_pk(r["customer_id"]) for r in rows] == expected
    assert f"{len(rows)} customers written" in result.output
    by_id = {_pk(r["customer_id"]): r for r in rows}
    scores = {s.customer_id: s for s in db.session.scalars(select(ChurnScore))}
    some = by_id[expected[0]]
    assert some["external_ids"].startswith("default:S-")
    assert some["email"].endswith("@example.com")
    assert float(some["priority"]) == pytest.approx(scores[expected[0]].priority, abs=0.01)
    factor = scores[expected[0]].top_factors[0]["feature"]
    assert some["top_factors"].startswith(factor + " ")
    everyone = tmp_path / "all.csv"
    assert runner.invoke(cli, ["churn", "warnings", "--out", str(everyone)]).exit_code == 0
    with everyone.open(newline="", encoding="utf-8") as handle:
        every_row = {_pk(r["customer_id"]): r for r in csv.DictReader(handle)}
    assert list(every_row) == _expected_order()
    row = every_row[kept]
    assert (row["owner"], row["name"]) == ("Olga Owner <olga@example.com>", "'=HYPERLINK(1)")
    bad = runner.invoke(cli, ["churn", "warnings", "--out", str(out), "--min-risk", "2"])
    assert bad.exit_code == 2
    gone = runner.invoke(cli, ["churn", "warnings", "--out", str(tmp_path / "no" / "x.csv")])
    assert gone.exit_code == 1 and "cannot write" in gone.output


def test_without_a_value_model_the_list_ranks_by_risk(churn_app: Flask, gql: GraphQL) -> None:
    """No Gamma-Gamma part (nobody has a CLV): priority is the risk, not 0 for everyone."""
    load_simulation(n=300, seed=7)
    version = modeling.fit_models(horizon_days=120)
    version.params = {**version.params, "gamma_gamma": None}
    db.session.commit()
    summary = modeling.score_customers()
    assert any("priorities are the risks" in note for note in summary.notes)
    scores = db.session.scalars(select(ChurnScore)).all()
    assert all(s.clv is None and s.priority == s.risk for s in scores)
    edges = gql(WARNINGS, {"first": 20})["churnWarnings"]["edges"]
    risks = [e["node"]["risk"] for e in edges]
    assert risks == sorted(risks, reverse=True) and risks[0] > risks[-1]


def test_a_reactivated_customer_is_back_on_the_list(churn_app: Flask, gql: GraphQL) -> None:
    _scored()
    churned = sorted(_open_records())
    before = gql(WARNINGS, {"first": 1})["churnWarnings"]["totalCount"]
    service.reactivate_customer({"customer_id": churned[0], "reason": "called back"})
    after = gql(WARNINGS, {"first": 1})["churnWarnings"]["totalCount"]
    assert after == before + 1
    service.mark_churned({"customer_id": churned[0], "type": "natural", "reason": "other"})
    assert gql(WARNINGS, {"first": 1})["churnWarnings"]["totalCount"] == before
