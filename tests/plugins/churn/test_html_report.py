"""The churn HTML report: every chart and table from the database, plain explanations when
there is no data or no model, the CLI's --out, the HTTP route's scope, and headless Chromium
drawing every chart."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from sqlalchemy import select, update

from core.db import db
from core.ids import global_id
from core.models import Agent, Customer
from core.services.staff import create_agent
from plugins.churn import btyd, html_report, owners
from plugins.churn.html_report import render_churn_report
from plugins.churn.models import ChurnModelVersion, ChurnScore, TimeUnit
from tests.browser import open_in_browser
from tests.conftest import admin_token
from tests.plugins.churn.conftest import NOW, customer, days_ago, mark, purchase

CHARTS = ["monthly-churn", "retention-curve", "reasons", "types", "churn-by-advisor",
          "risk-distribution", "p-alive-matrix"]
TABLES = ["Monthly figures", "Cohort retention", "Churn records by reason",
          "Churn records by type", "Churn by advisor over the period",
          "Warning list: the 7 customers", "Parameters", "Metrics"]
#: Risks of the scored customers and the histogram bucket (width 0.05) each falls in.
RISKS = [0.0, 0.01, 0.05, 0.049, 0.2, 0.5, 0.51, 0.75, 0.9, 0.95, 0.999, 1.0]
BUCKETS = [0, 0, 1, 0, 4, 10, 10, 15, 18, 19, 19, 19]
PERIOD = ((NOW - dt.timedelta(days=330)).date().isoformat(), NOW.date().isoformat())


def charts(page: str) -> list[str]:
    return re.findall(r'<figure class="chart" data-chart="([^"]+)"><svg', page)


def fitted_bgnbd() -> btyd.BGNBDParams:
    rng = np.random.default_rng(7)
    x, t_x, age = btyd.simulate_bgnbd(rng, 0.8, 16.0, 0.6, 3.0, rng.uniform(30, 700, 3000))
    return btyd.fit_bgnbd(x, t_x, age, "day")


def add_model(active: bool = True) -> ChurnModelVersion:
    fit = fitted_bgnbd()
    version = ChurnModelVersion(
        as_of=days_ago(1), time_unit=TimeUnit.DAY, kind="logistic", active=active,
        params={"bgnbd": fit.to_dict(), "gamma_gamma": {"p": 6.1, "q": 3.9, "gamma": 15.2,
                                                        "log_likelihood": -812.5}},
        metrics={"classifier": {"kind": "logistic", "cross_validation": {
            "roc_auc": 0.8125, "pr_auc": 0.4375}}, "notes": ["a note"]},
        feature_names=["recency_days", "frequency"])
    db.session.add(version)
    db.session.commit()
    return version


@pytest.fixture
def history(churn_app: Flask) -> list[int]:
    """12 customers with purchases; 5 churned over the last months (3 reasons, 2 types).
    Ann (team North) owns C0..C5, Bob C6..C9; C10 and C11 have no owner."""
    ann = create_agent({"name": "Ann", "email": "ann@example.com", "team": "North"}).id
    bob = create_agent({"name": "Bob", "email": "bob@example.com"}).id
    people = [customer(f"C{i}", created_days_ago=300 + i,
                       owner_id=ann if i < 6 else bob if i < 10 else None) for i in range(12)]
    for i, person in enumerate(people):
        purchase(person, days_ago(250 - i))
        purchase(person, days_ago(180 - i), "25.00")
    mark(people[0], days_ago(150), "competitive", "pricing")
    mark(people[1], days_ago(120), "competitive", "pricing")
    mark(people[2], days_ago(90), "natural", "involuntary")
    mark(people[3], days_ago(60), "competitive", "competition")
    mark(people[4], days_ago(20), "natural", "pricing")
    return people


@pytest.fixture
def scored(history: list[int]) -> ChurnModelVersion:
    version = add_model()
    for i, (person, risk) in enumerate(zip(history, RISKS)):
        db.session.add(ChurnScore(
            customer_id=person, model_version_id=version.id, risk=risk, p_alive=1 - risk,
            frequency=i, recency=float(10 * i), T=400.0, clv=100.0 + i,
            priority=risk * (100.0 + i),
            top_factors=[{"feature": "recency_days", "contribution": 0.5 - i / 10}]))
    db.session.commit()
    return version


def test_without_records_or_model_each_part_says_why(churn_app: Flask) -> None:
    page = render_churn_report(*PERIOD)
    assert page.startswith("<!DOCTYPE html>") and "<title>Churn report</title>" in page
    assert charts(page) == []
    for text in ("No customer was active at the start of any month",
                 "No customer started in the period", "No churn record is dated in the period",
                 "No customer counted in the period has an owner",
                 "No churn model is fitted yet"):
        assert text in page
    assert "Monthly figures" in page  # the months are listed, with their zeros
    assert 'data-figures-total="0"' in page


def test_records_without_a_model(history: list[int]) -> None:
    page = render_churn_report(*PERIOD)
    assert charts(page) == ["monthly-churn", "retention-curve", "reasons", "types",
                            "churn-by-advisor"]
    assert page.count("No churn model is fitted yet") == 3  # risk, P(alive), model
    assert "5 customer(s) churned" in page
    # pricing: 3 of 5 records.
    assert re.search(r"<td>pricing</td><td class=\"num\">3</td><td>60\.0%</td>", page)


def test_with_a_model_and_scores_every_chart_and_table(scored: ChurnModelVersion) -> None:
    page = render_churn_report(*PERIOD)
    assert charts(page) == CHARTS
    for caption in TABLES:
        assert f"<caption>{caption}" in page, caption
    assert "not fitted" not in page and "0.8125" in page and "a note" in page
    # The warning list: highest priority first (risk x CLV), without the 5 customers
    # already churned (as the API and the CSV leave them out).
    ranked = re.findall(r"<tr><td class=\"num\">(\d+)</td><td>(Q3VzdG9tZXI6[\w=]+)</td>"
                        r"<td>(C\d+)</td>", page)  # customers by global id
    assert [name for _, _, name in ranked] == [f"C{i}" for i in
                                                 sorted(range(5, 12), key=lambda i: -RISKS[i] *
                                                        (100 + i))]


def test_risk_histogram_is_counted_in_sql(scored: ChurnModelVersion) -> None:
    overview = html_report.score_overview()
    assert overview is not None and overview.version_id == scored.id
    assert overview.histogram == np.bincount(BUCKETS, minlength=20).tolist()
    assert overview.customers == 12 and overview.high_risk == 7
    assert overview.max_frequency == 11 and overview.max_age == 400.0
    assert overview.mean_risk == pytest.approx(sum(RISKS) / 12)


def test_p_alive_grid_is_the_fitted_model() -> None:
    fit = fitted_bgnbd()
    params = (fit.r, fit.alpha, fit.a, fit.b)
    frequencies, recencies, grid = html_report.p_alive_grid(params, 10, 300.0)
    assert grid.shape == (11, html_report.GRID_RECENCIES)
    assert grid[0, 0] == 1.0 and np.isnan(grid[0, 1:]).all()
    expected = btyd.probability_alive(params, [4], [recencies[7]], [300.0])[0]
    assert grid[4, 7] == pytest.approx(expected)
    # A recent last purchase means alive; many purchases long ago mean gone.
    assert (np.diff(grid[1:], axis=1) > 0).all()
    assert grid[10, 0] < 0.05 < 0.95 < grid[10, -1]


def test_scores_of_an_older_version_are_flagged(scored: ChurnModelVersion) -> None:
    scored.active = False
    db.session.commit()
    newer = add_model()
    page = render_churn_report(*PERIOD)
    assert f"These scores come from model version {scored.id}; the active version " \
           f"{newer.id} has not been scored yet" in page
    assert charts(page) == CHARTS


def test_bad_period_is_a_typed_error(churn_app: Flask) -> None:
    from core.errors import UserError

    with pytest.raises(UserError) as caught:
        render_churn_report("2026-05-01", "2026-04-01")
    assert [e.field for e in caught.value.errors] == ["to"]


def cli(app: Flask, *args: object) -> object:
    return app.test_cli_runner().invoke(args=["churn", "report", *map(str, args)])


def test_the_cli_writes_the_page(scored: ChurnModelVersion, churn_app: Flask,
                                 tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = cli(churn_app, "--from", PERIOD[0], "--to", PERIOD[1], "--out", out)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert f"report written to {out}" in result.output  # type: ignore[attr-defined]
    written = out.read_text(encoding="utf-8")
    assert charts(written) == CHARTS
    # The operator's own file (no job, nothing stored to download) names the owners.
    assert [r[:2] for r in advisor_rows(written)] == [
        ("Ann", "North"), ("Bob", ""), ("(no owner)", "")]

    never = tmp_path / "never.html"
    bad = cli(churn_app, "--from", "2026-05-01", "--to", "2026-04-01", "--out", never)
    assert bad.exit_code == 1 and "Traceback" not in bad.output  # type: ignore[attr-defined]
    assert not never.exists()
    missing = cli(churn_app, "--from", PERIOD[0], "--to", PERIOD[1], "--out",
                  tmp_path / "missing" / "r.html")
    assert missing.exit_code == 1  # type: ignore[attr-defined]
    assert "Cannot write" in missing.output  # type: ignore[attr-defined]


def test_the_route_needs_the_scope(churn_app: Flask) -> None:
    client = churn_app.test_client()
    missing = client.get("/reports/churn.html")
    assert missing.status_code == 401
    assert missing.get_json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    writer = admin_token(churn_app, ("churn:write",))
    refused = client.get("/reports/churn.html", headers={"Authorization": f"Bearer {writer}"})
    assert refused.status_code == 403
    assert refused.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_the_route_refuses_a_bad_period(churn_app: Flask) -> None:
    client = churn_app.test_client()
    headers = {"Authorization": f"Bearer {admin_token(churn_app, ('churn:read',))}"}
    for query, field in (("from=2026-13-01", "from"), ("from=2026-05-01&to=2026-04-01", "to")):
        answer = client.get(f"/reports/churn.html?{query}", headers=headers)
        assert answer.status_code == 400, query
        errors = answer.get_json()["errors"]
        assert [e["extensions"]["field"] for e in errors] == [field], query


def test_the_route_serves_a_page_the_browser_draws(scored: ChurnModelVersion,
                                                   churn_app: Flask, tmp_path: Path) -> None:
    client = churn_app.test_client()
    headers = {"Authorization": f"Bearer {admin_token(churn_app, ('churn:read',))}"}
    default = client.get("/reports/churn.html", headers=headers)
    assert default.status_code == 200 and default.mimetype == "text/html"
    assert "default-src 'none'" in default.headers["Content-Security-Policy"]
    answer = client.get(f"/reports/churn.html?from={PERIOD[0]}&to={PERIOD[1]}",
                        headers=headers)
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert charts(page) == CHARTS

    path = tmp_path / "churn.html"
    path.write_text(page, encoding="utf-8")
    view = open_in_browser(path)
    assert view.title == "Churn report"
    assert view.figures_total == len(CHARTS)
    assert view.figures_rendered == len(CHARTS)
    assert view.screenshot.stat().st_size > 10_000


def advisor_rows(page: str) -> list[tuple[str, ...]]:
    table = page.split("<caption>Churn by advisor over the period")[1].split("</table>")[0]
    return [tuple(re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>.*?</td>",
                                                                      row))
            for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])]


def test_churn_by_advisor_section(history: list[int]) -> None:
    page = render_churn_report(*PERIOD)
    assert "<h2>Churn by advisor</h2>" in page or ">Churn by advisor<" in page
    rows = advisor_rows(page)
    # Owners by name, the customers without an owner last; Ann lost C0..C4.
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("Ann", "North", "5"), ("Bob", "", "0"), ("(no owner)", "", "0")]
    # The figures of churnByOwner (customer-months depend on today's date).
    expected = owners.owner_report({"from": PERIOD[0], "to": PERIOD[1]})
    assert [(int(r[2]), int(r[4]), r[5]) for r in rows] == [
        (g.active_at_start, g.customer_months, html_report._pct(g.churn_rate))
        for g in expected.by_owner]
    assert expected.by_owner[0].customer_months > 30
    # Books under 10 active customers are never ranked (minActive's default).
    assert all(r[6] == "" and r[7] == "0" for r in rows)


def test_owner_names_need_the_agents_scope(history: list[int], churn_app: Flask) -> None:
    client = churn_app.test_client()
    url = f"/reports/churn.html?from={PERIOD[0]}&to={PERIOD[1]}"
    churn_only = {"Authorization": f"Bearer {admin_token(churn_app, ('churn:read',))}"}
    page = client.get(url, headers=churn_only).get_data(as_text=True)
    shown = [r[0] for r in advisor_rows(page)]
    ann = db.session.scalar(select(Agent.id).where(Agent.name == "Ann"))
    assert shown[0] == global_id("Agent", ann) and shown[-1] == "(no owner)"
    assert "Ann" not in shown and "North" not in page
    assert "need the agents:read scope" in page
    both = {"Authorization": "Bearer " + admin_token(churn_app, ("churn:read", "agents:read"))}
    page = client.get(url, headers=both).get_data(as_text=True)
    assert [r[0] for r in advisor_rows(page)] == ["Ann", "Bob", "(no owner)"]
    assert "need the agents:read scope" not in page


def test_names_and_labels_with_dollars_are_drawn_as_written(history: list[int],
                                                          churn_app: Flask) -> None:
    """An agent named like mathtext (an unbalanced ``$``) used to fail the page (500)."""
    odd = r"$\frac{x$"
    agent = create_agent({"name": odd, "email": "odd@example.com", "team": odd}).id
    db.session.execute(update(Customer).where(Customer.id.in_(history[10:])).values(
        owner_id=agent))
    db.session.commit()
    page = render_churn_report(*PERIOD)
    assert "churn-by-advisor" in charts(page)
    chart = page.split('data-chart="churn-by-advisor"')[1].split("</svg>")[0]
    assert odd in chart
    assert (odd, odd) in [r[:2] for r in advisor_rows(page)]
    both = {"Authorization": "Bearer " + admin_token(churn_app, ("churn:read", "agents:read"))}
    answer = churn_app.test_client().get(
        f"/reports/churn.html?from={PERIOD[0]}&to={PERIOD[1]}", headers=both)
    assert answer.status_code == 200 and odd in answer.get_data(as_text=True)
