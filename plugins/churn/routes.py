"""The churn report over HTTP: ``GET /reports/churn.html`` (scope churn:read).

Query parameters ``from`` and ``to`` (YYYY-MM-DD, ``to`` included), both optional: by
default the twelve months up to today (the current month and the eleven before, in
RAPPORT_TIMEZONE). Either a Bearer key with the scope, or a signed link from
``churnReportLink`` (``?token=``, which carries the period; see ``core.report_links``).
Answers: 200 with the page (``html_report.render_churn_report``; owner names and teams in
"Churn by advisor" only for a key with agents:read, else the owners' global ids); 400
with the typed errors of a bad period; 401 / 403 without a key or the scope
(``core.auth.require_scope``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, g

from core.db import utcnow
from core.errors import UserError
from core.http import user_error_response
from core.report_links import report_access, report_args

from plugins.churn.html_report import render_churn_report
from plugins.churn.report import business_tz

blueprint = Blueprint("churn_reports", __name__)

#: Content-Security-Policy of the page: self-contained (inline style, SVG, the chart
#: self-check script), so nothing may be fetched.
PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
               "img-src data:; base-uri 'none'; form-action 'none'")
DEFAULT_MONTHS = 12


def default_period(now: dt.datetime) -> tuple[str, str]:
    """The current month and the DEFAULT_MONTHS - 1 before it, up to today."""
    today = now.astimezone(business_tz()).date()
    first = today.replace(day=1)
    for _ in range(DEFAULT_MONTHS - 1):
        first = (first - dt.timedelta(days=1)).replace(day=1)
    return first.isoformat(), today.isoformat()


REPORT = "churn"
PATH = "/reports/churn.html"


@blueprint.get(PATH)
@report_access("churn:read", REPORT)
def churn_report_page() -> Any:
    since, until = default_period(utcnow())
    args = report_args()
    try:
        # Owner names and teams are agents' data: shown to a key that may read agents.
        page = render_churn_report(args.get("from", since), args.get("to", until),
                                   show_names=g.rapport_principal.allows("agents:read"))
    except UserError as exc:
        return user_error_response(exc, 400)
    answer = Response(page, mimetype="text/html")
    answer.headers["Content-Security-Policy"] = PAGE_POLICY
    answer.headers["X-Content-Type-Options"] = "nosniff"
    answer.headers["Cache-Control"] = "no-store"
    return answer
