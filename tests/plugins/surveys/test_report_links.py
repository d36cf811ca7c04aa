"""Signed links to the survey report (``Survey.reportLink``): a browser opens the report
without a Bearer header; the link carries the parameters and the asking key, and expired,
forged, moved or orphaned links are refused in the one JSON error shape."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from itsdangerous.timed import TimestampSigner

from core.auth import Principal, revoke_api_key
from core.db import utcnow
from core.ids import global_id
from core.report_links import report_link
from tests.browser import chromium_page, live_server
from tests.conftest import GraphQL, admin_token
from tests.plugins.surveys.conftest import make_survey
from tests.plugins.surveys.test_report_http import CHARTS, charts, survey_id  # noqa: F401

LINK = """query ($id: ID!, $city: [String!], $clusters: Int, $rotation: SurveyFactorRotation) {
  node(id: $id) { ... on Survey { reportLink(city: $city, clusters: $clusters,
                                              rotation: $rotation) { url expiresAt } } } }"""


def _link(app: Flask, survey: int, scopes: tuple[str, ...] = ("surveys:read",),
          **variables: Any) -> tuple[dict[str, Any], str]:
    token = admin_token(app, scopes)
    data = GraphQL(app, token)(LINK, {"id": global_id("Survey", survey), **variables})
    return data["node"]["reportLink"], token


def _error(answer: Any) -> tuple[int, str]:
    return answer.status_code, answer.get_json()["errors"][0]["extensions"]["code"]


def test_a_signed_link_opens_the_report_with_its_parameters(surveys_app: Flask,
                                                            survey_id: int) -> None:  # noqa: F811
    link, _ = _link(surveys_app, survey_id, city=["Lyon"], clusters=3, rotation="PROMAX")
    parts = urlsplit(link["url"])
    assert parts.path == f"/reports/surveys/{global_id('Survey', survey_id)}.html"
    assert set(parse_qs(parts.query)) == {"token"}
    expires = dt.datetime.fromisoformat(link["expiresAt"])
    assert dt.timedelta(seconds=590) < expires - utcnow() <= dt.timedelta(seconds=600)
    client = surveys_app.test_client()
    # No Authorization header; parameters added to the URL are not the link's: ignored.
    answer = client.get(link["url"] + "&city=Paris&clusters=2")
    assert answer.status_code == 200, answer.get_json()
    page = answer.get_data(as_text=True)
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert "90 responses, customers with city Lyon" in page
    assert "Factor loadings after promax rotation" in page and "k = 3 as requested" in page
    assert charts(page) == CHARTS


def test_links_that_must_not_open(surveys_app: Flask, survey_id: int,  # noqa: F811
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    link, key = _link(surveys_app, survey_id)
    client = surveys_app.test_client()
    url, token = link["url"], parse_qs(urlsplit(link["url"]).query)["token"][0]
    assert client.get(url).status_code == 200

    forged = url[:-3] + ("aaa" if not url.endswith("aaa") else "bbb")
    assert _error(client.get(forged)) == (403, "FORBIDDEN")
    # A valid token on another survey's page, or made for another report.
    other = f"/reports/surveys/{global_id('Survey', survey_id + 1)}.html?token={token}"
    assert _error(client.get(other)) == (403, "FORBIDDEN")
    churn = report_link(Principal("k", frozenset({"admin"})), "churn", "/reports/churn.html")
    stolen = f"{urlsplit(url).path}?{urlsplit(churn['url']).query}"
    assert _error(client.get(stolen)) == (403, "FORBIDDEN")

    later = TimestampSigner.get_timestamp(TimestampSigner("x")) + 601
    with monkeypatch.context() as patched:
        patched.setattr(TimestampSigner, "get_timestamp", lambda self: later)
        expired = client.get(url)
    assert _error(expired) == (410, "LINK_EXPIRED")
    assert "expired" in expired.get_json()["errors"][0]["message"]

    revoke_api_key(key.split("_")[1])
    revoked = client.get(url)
    assert _error(revoked) == (403, "FORBIDDEN")
    assert "revoked" in revoked.get_json()["errors"][0]["message"]


def test_the_lifetime_is_configured(make_app: Any) -> None:
    app = make_app(enabled=["surveys"], RAPPORT_SIGNED_LINK_TTL="60")
    with app.app_context():
        link, _ = _link(app, make_survey().id)
    expires = dt.datetime.fromisoformat(link["expiresAt"])
    assert dt.timedelta(seconds=50) < expires - utcnow() <= dt.timedelta(seconds=60)


def test_bad_parameters_give_no_link(surveys_app: Flask, survey_id: int) -> None:  # noqa: F811
    gql = GraphQL(surveys_app, admin_token(surveys_app, ("surveys:read",)))
    body = gql.raw(LINK, {"id": global_id("Survey", survey_id), "clusters": 1}).get_json()
    assert body["data"] is None or body["data"]["node"] is None
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "options.nClusters" in body["errors"][0]["message"]


def test_the_link_needs_the_read_scope(surveys_app: Flask,
                                       survey_id: int) -> None:  # noqa: F811
    gql = GraphQL(surveys_app, admin_token(surveys_app, ("surveys:respond",)))
    body = gql.raw(LINK, {"id": global_id("Survey", survey_id)}).get_json()
    assert "reportLink" not in str(body.get("data"))
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


@pytest.fixture
def served(surveys_app: Flask) -> Iterator[str]:
    with live_server(surveys_app) as url:
        yield url


@pytest.mark.sqlite_only
def test_a_browser_opens_the_signed_link_and_draws_the_charts(
        surveys_app: Flask, survey_id: int, served: str) -> None:  # noqa: F811
    link, _ = _link(surveys_app, survey_id)
    sent_headers: list[dict[str, str]] = []
    with chromium_page() as page:
        page.on("request", lambda request: sent_headers.append(request.headers))
        answer = page.goto(served + link["url"])
        assert answer is not None and answer.status == 200
        page.wait_for_function(
            "document.body.dataset.figuresRendered === document.body.dataset.figuresTotal"
            " && document.body.dataset.figuresTotal !== '0'", timeout=30_000)
        total = page.evaluate("document.body.dataset.figuresTotal")
        title = page.title()
    assert int(total) == len(CHARTS) and title == "Survey: S"
    assert sent_headers and all("authorization" not in h for h in sent_headers)
