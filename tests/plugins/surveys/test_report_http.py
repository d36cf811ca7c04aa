"""The survey report from the database: ``rapport surveys report`` writes the page, the
HTTP route serves it to an authorised client, and headless Chromium draws every chart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask

from core.ids import global_id
from core.services.customers import create_customer
from tests.browser import open_in_browser
from tests.conftest import admin_token, seeded
from tests.plugins.surveys.test_analysis_api import _service_survey

CHARTS = ["nps-nps", "item-means", "drivers", "correlation-heatmap", "loadings",
          "cluster-profiles"]


@pytest.fixture
def survey_id(surveys_app: Flask) -> int:
    def seed() -> int:
        people = [create_customer({"name": f"R{i}", "city": "Paris" if i < 60 else "Lyon",
                                   "tags": ["vip"] if i % 2 else []}).id for i in range(150)]
        survey, _ = _service_survey(150, customers=people, seed=8)
        return survey

    # Seeded through the services once per process; the other tests get the same rows.
    return seeded("surveys.report_http", seed)  # type: ignore[no-any-return]


def charts(page: str) -> list[str]:
    return re.findall(r'<figure class="chart" data-chart="([^"]+)"><svg', page)


def cli(app: Flask, *args: object) -> object:
    return app.test_cli_runner().invoke(args=["surveys", "report", *map(str, args)])


def test_the_cli_writes_the_page(surveys_app: Flask, survey_id: int, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    # The global id GraphQL shows; the plain number below names the same survey.
    result = cli(surveys_app, global_id("Survey", survey_id), "--out", out,
                 "--rotation", "oblimin")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "150 responses" in result.output  # type: ignore[attr-defined]
    assert f"survey {global_id('Survey', survey_id)}," in result.output  # type: ignore
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "Survey: S" in page
    assert charts(page) == CHARTS
    assert "150 responses" in page and "Factor loadings after oblimin rotation" in page

    segment = tmp_path / "paris.html"
    result = cli(surveys_app, survey_id, "--out", segment, "--city", "Paris", "--tag", "vip",
                 "--clusters", "2")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    page = segment.read_text(encoding="utf-8")
    assert "30 responses, customers with city Paris; tags all vip" in page
    assert "k = 2 as requested" in page


def test_the_cli_refuses_bad_input_with_a_message(surveys_app: Flask, survey_id: int,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "never.html"
    for args, message in (((999_999,), f"No survey with id {global_id('Survey', 999_999)}."),
                          ((global_id("Survey", 999_999),), "No survey with id U3VydmV5O"),
                          ((survey_id, "--clusters", "1"), "options.nClusters"),
                          ((survey_id, "--country", "France"), "filter.country.0"),
                          ((survey_id, "--after", "yesterday"), "submittedAfter")):
        result = cli(surveys_app, *args, "--out", out)
        assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
        assert message in result.output  # type: ignore[attr-defined]
        assert "Traceback" not in result.output  # type: ignore[attr-defined]
    for wrong in ("abc", global_id("Customer", survey_id), "0"):
        result = cli(surveys_app, wrong, "--out", out)
        assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
        assert "global id" in result.output  # type: ignore[attr-defined]
    assert not out.exists()
    result = cli(surveys_app, survey_id, "--out", tmp_path / "missing" / "r.html")
    assert result.exit_code == 1 and "Cannot write" in result.output  # type: ignore


def test_the_route_needs_the_scope(surveys_app: Flask, survey_id: int) -> None:
    client = surveys_app.test_client()
    url = f"/reports/surveys/{survey_id}.html"
    missing = client.get(url)
    assert missing.status_code == 401
    assert missing.get_json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    bad = client.get(url, headers={"Authorization": "Bearer rpk_nope_nope"})
    assert bad.status_code == 401
    respond = admin_token(surveys_app, ("surveys:respond",))
    refused = client.get(url, headers={"Authorization": f"Bearer {respond}"})
    assert refused.status_code == 403
    assert refused.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_the_route_answers_404_and_400_with_typed_errors(surveys_app: Flask,
                                                         survey_id: int) -> None:
    client = surveys_app.test_client()
    headers = {"Authorization": f"Bearer {admin_token(surveys_app, ('surveys:read',))}"}
    for path in ("/reports/surveys/999999.html", f"/reports/surveys/{2**63}.html",
                 f"/reports/surveys/{global_id('Survey', 999_999)}.html",
                 f"/reports/surveys/{global_id('Customer', survey_id)}.html"):
        unknown = client.get(path, headers=headers)
        assert unknown.status_code == 404
    assert client.get("/reports/surveys/abc.html", headers=headers).status_code == 404
    for query, field in (("clusters=1", "options.nClusters"), ("factors=two", "options.nFactors"),
                         ("rotation=quartimax", "options.rotation"),
                         ("country=France", "filter.country.0"),
                         ("after=2026-13-01", "submittedAfter")):
        answer = client.get(f"/reports/surveys/{survey_id}.html?{query}", headers=headers)
        assert answer.status_code == 400, query
        errors = answer.get_json()["errors"]
        assert [e["extensions"]["field"] for e in errors] == [field], query


def test_the_route_serves_a_page_the_browser_draws(surveys_app: Flask, survey_id: int,
                                                   tmp_path: Path) -> None:
    client = surveys_app.test_client()
    headers = {"Authorization": f"Bearer {admin_token(surveys_app, ('surveys:read',))}"}
    answer = client.get(f"/reports/surveys/{global_id('Survey', survey_id)}.html"
                        "?rotation=promax&clusters=3", headers=headers)
    assert answer.status_code == 200
    assert answer.mimetype == "text/html"
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    page = answer.get_data(as_text=True)
    assert charts(page) == CHARTS and "Factor loadings after promax rotation" in page
    segment = client.get(f"/reports/surveys/{survey_id}.html?city=Lyon&after=2000-01-01",
                         headers=headers)
    assert segment.status_code == 200
    assert "90 responses, customers with city Lyon, submitted from 2000-01-01" in \
        segment.get_data(as_text=True)

    path = tmp_path / "survey.html"
    path.write_text(page, encoding="utf-8")
    view = open_in_browser(path)
    assert view.title == "Survey: S"
    assert view.figures_total == len(CHARTS)
    assert view.figures_rendered == len(CHARTS)
    assert view.screenshot.stat().st_size > 10_000
