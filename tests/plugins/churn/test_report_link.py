"""``churnReportLink``: a signed link opens the churn report of the period asked for, with
no Bearer header; the period is fixed in the link."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

from core.db import utcnow
from plugins.churn.models import ChurnModelVersion
from plugins.churn.routes import default_period
from tests.conftest import GraphQL, admin_token
from tests.plugins.churn.test_html_report import (  # noqa: F401
    CHARTS, PERIOD, charts, history, scored,
)

LINK = """query ($from: Date, $to: Date) {
  churnReportLink(from: $from, to: $to) { url expiresAt } }"""


def _link(app: Flask, scopes: tuple[str, ...] = ("churn:read",), **variables: Any) -> Any:
    return GraphQL(app, admin_token(app, scopes)).raw(LINK, variables).get_json()


def test_a_signed_link_opens_the_report_of_its_period(
        scored: ChurnModelVersion, churn_app: Flask) -> None:  # noqa: F811
    body = _link(churn_app, **{"from": PERIOD[0], "to": PERIOD[1]})
    link = body["data"]["churnReportLink"]
    assert urlsplit(link["url"]).path == "/reports/churn.html"
    expires = dt.datetime.fromisoformat(link["expiresAt"])
    assert dt.timedelta(seconds=590) < expires - utcnow() <= dt.timedelta(seconds=600)
    client = churn_app.test_client()
    answer = client.get(link["url"] + "&from=2020-01-01")  # not the link's: ignored
    assert answer.status_code == 200, answer.get_json()
    page = answer.get_data(as_text=True)
    assert charts(page) == CHARTS
    first = dt.date.fromisoformat(PERIOD[0])
    assert f"{first:%d %b %Y} to " in page

    default = _link(churn_app)["data"]["churnReportLink"]
    since, _ = default_period(utcnow())
    opened = client.get(default["url"])
    assert opened.status_code == 200
    assert f"{dt.date.fromisoformat(since):%d %b %Y} to " in opened.get_data(as_text=True)


def test_a_bad_period_or_a_missing_scope_gives_no_link(churn_app: Flask) -> None:
    bad = _link(churn_app, **{"from": "2026-05-01", "to": "2026-04-01"})
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert not bad.get("data")
    refused = _link(churn_app, ("churn:write",))
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_an_altered_link_is_refused(churn_app: Flask) -> None:
    link = _link(churn_app)["data"]["churnReportLink"]
    token = urlsplit(link["url"]).query
    answer = churn_app.test_client().get(f"/reports/churn.html?{token}x")
    assert answer.status_code == 403
    assert answer.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
