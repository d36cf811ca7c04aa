"""The survey HTML report: every chart and table is there, unavailable parts explain
themselves, and headless Chromium lays out every chart with a real size."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest

from plugins.surveys.report import render_report
from plugins.surveys.stats import AnalysisOptions, Item, ScaleSpec, SurveyAnalysis, analyse
from plugins.surveys.stats.simulate import factor_responses, simple_structure
from tests.browser import open_in_browser

CHARTS = ["nps-nps", "item-means", "drivers", "correlation-heatmap", "loadings",
          "cluster-profiles"]
TABLES = ["Net Promoter Score", "CSAT: share of answers", "Items", "Frequencies over",
          "Drivers", "Pearson correlations", "Spearman correlations", "Responses per pair",
          "Loadings (pattern matrix", "Variance explained", "Factor correlations",
          "Eigenvalues of the correlation matrix", "Scale Service",
          "Cluster sizes and profiles", "Silhouette by number of clusters"]


def _analysis(rows: int = 600) -> SurveyAnalysis:
    phi = np.full((2, 2), 0.3) + 0.7 * np.eye(2)
    sim = factor_responses(rows, simple_structure([3, 3], 0.7), phi, missing=0.03, seed=5)
    nps = np.clip(np.round(6 + 2 * sim.continuous[:, :3].mean(axis=1)), 0, 10)
    matrix = np.column_stack([nps, sim.ratings])
    items = [Item("nps", "NPS", 0, 10, "Would you recommend us?")] + [
        Item(f"q{j}", "RATING", 1, 5, f"Satisfaction <{j}> & service") for j in range(6)]
    matrix[0, 1] = 9  # out of its 1-5 scale: a data warning
    return analyse(matrix, items, [ScaleSpec("Service", ("q0", "q1", "q2"), ("q2",))],
                   "nps", AnalysisOptions(rotation="oblimin", n_clusters=3))


@pytest.fixture(scope="module")
def report_html() -> str:
    return render_report("Service <2026>", _analysis(),
                         generated_at=dt.datetime(2026, 11, 23, tzinfo=dt.UTC))


def test_every_chart_and_table_is_in_the_page(report_html: str) -> None:
    charts = re.findall(r'<figure class="chart" data-chart="([^"]+)"><svg', report_html)
    assert charts == ["nps-nps", "item-means", "drivers", "correlation-heatmap", "loadings",
                      "cluster-profiles"]
    assert 'data-figures-total="6"' in report_html
    captions = re.findall(r"<caption>([^<]*)</caption>", report_html)
    for table in TABLES:
        assert any(c.startswith(table) for c in captions), table


def test_the_page_states_rules_warnings_and_escapes_text(report_html: str) -> None:
    assert "Survey: Service &lt;2026&gt;" in report_html
    assert "Satisfaction &lt;0&gt; &amp; service" in report_html
    assert "Satisfaction <0>" not in report_html
    assert "pairwise deletion" in report_html and "listwise deletion" in report_html
    assert "were not whole points of its scale 1-5" in report_html
    assert "normal approximation" in report_html
    assert "Data and missing answers" in report_html


def test_the_page_needs_nothing_from_outside(report_html: str) -> None:
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import|url\((?!#)", report_html)
    assert not re.search(r"https?://(?!www\.w3\.org/)", report_html)


def test_parts_that_cannot_be_computed_explain_themselves_instead_of_a_chart() -> None:
    items = [Item("a", "RATING", 1, 5), Item("b", "RATING", 1, 5), Item("c", "RATING", 1, 5)]
    analysis = analyse(np.array([[1.0, 2, 3], [2, 1, 4]]), items, (), "a")
    html = render_report("Tiny", analysis)
    assert 'data-chart="loadings"' not in html and 'data-chart="cluster-profiles"' not in html
    assert "Factor analysis needs at least 3 varying items" in html
    assert 'data-chart="item-means"' in html


def test_the_report_renders_every_chart_in_a_browser(report_html: str, tmp_path: Path) -> None:
    page = tmp_path / "survey.html"
    page.write_text(report_html, encoding="utf-8")
    view = open_in_browser(page)
    assert view.title == "Survey: Service &lt;2026&gt;"
    assert view.figures_total == 6
    assert view.figures_rendered == 6
    assert view.screenshot.stat().st_size > 10_000


def test_question_texts_with_dollars_are_drawn_as_written() -> None:
    """Question texts are user data: an unbalanced ``$`` used to be parsed as mathtext and
    fail every chart it labels (the report job, the HTTP page)."""
    odd = r"$\frac{x$"
    phi = np.full((2, 2), 0.3) + 0.7 * np.eye(2)
    sim = factor_responses(300, simple_structure([3, 3], 0.7), phi, missing=0.03, seed=5)
    nps = np.clip(np.round(6 + 2 * sim.continuous[:, :3].mean(axis=1)), 0, 10)
    items = [Item("nps", "NPS", 0, 10, f"{odd} recommend")] + [
        Item(f"q{j}", "RATING", 1, 5, f"{odd} q{j}") for j in range(6)]
    analysis = analyse(np.column_stack([nps, sim.ratings]), items,
                       [ScaleSpec("Service", ("q0", "q1", "q2"))], "nps",
                       AnalysisOptions(rotation="oblimin", n_clusters=3))
    html = render_report(odd, analysis)
    assert re.findall(r'<figure class="chart" data-chart="([^"]+)"><svg', html) == CHARTS
    svg = "".join(re.findall(r"<svg.*?</svg>", html, re.S))
    assert f"{odd} q1" in svg and f"{odd} recommend" in svg
