"""The survey report over HTTP: ``GET /reports/surveys/<id>.html`` (scope surveys:read).

``<id>`` is the survey's global id (the integer is still accepted). Either a Bearer key
with the scope, or a signed link from ``Survey.reportLink`` (``?token=``, which carries
the parameters below; see ``core.report_links``).

Query parameters, all optional: ``city``, ``country``, ``tag`` (repeat for several; a
customer segment, not for anonymous surveys), ``after`` / ``before`` (ISO 8601 submission
times), ``rotation`` (varimax, oblimin, promax), ``factors``, ``clusters`` (numbers).
Answers: 200 with the page; 400 with the typed errors for a bad parameter; 404 for an
unknown survey; 401 / 403 without a key or the scope (``core.auth.require_scope``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from core.errors import ErrorCode, UserError
from core.http import error_response, user_error_response
from core.ids import global_id, parse_id
from core.services import load
from core.report_links import report_access, report_args

from plugins.surveys import analysis

blueprint = Blueprint("surveys_reports", __name__)

#: Content-Security-Policy of the page: it is self-contained (inline style, SVG, the
#: chart self-check script), so nothing may be fetched.
PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
               "img-src data:; base-uri 'none'; form-action 'none'")


def _number(value: str | None) -> int | str | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value  # the options schema refuses it with a typed error


def report_arguments(args: Any) -> dict[str, Any]:
    """The service's keyword arguments from the query string."""
    options: dict[str, Any] = {}
    for name, key in (("rotation", "rotation"), ("factors", "n_factors"),
                      ("clusters", "n_clusters")):
        value = args.get(name)
        if value:
            options[key] = value.lower() if name == "rotation" else _number(value)
    segment = analysis.segment_from_options({
        "city": args.getlist("city"), "country": args.getlist("country"),
        "tags_all": args.getlist("tag")})
    period = {key: args[name] for name, key in (("after", "submitted_after"),
                                                ("before", "submitted_before"))
              if args.get(name)}
    return {"segment": segment, "period": period, "options": options}


def checked_arguments(args: Any) -> dict[str, Any]:
    """``report_arguments`` with the options and period checked too (``UserError``): what
    ``Survey.reportLink`` checks before it signs a link."""
    arguments = report_arguments(args)
    analysis.analysis_options(arguments["options"])
    load(analysis.PeriodSchema(), dict(arguments["period"]))
    return arguments


REPORT = "surveys"


def survey_path(survey_id: int) -> str:
    return f"/reports/surveys/{global_id('Survey', survey_id)}.html"


def _survey_id(kwargs: Any) -> int:
    try:
        return parse_id(kwargs["survey"], "Survey")
    except ValueError:
        raise LookupError(kwargs["survey"]) from None


@blueprint.get("/reports/surveys/<survey>.html")
@report_access("surveys:read", REPORT, _survey_id)
def survey_report(survey: str) -> Any:
    try:
        survey_id = _survey_id({"survey": survey})
    except LookupError:
        return error_response(404, "NOT_FOUND", f"No survey with id {survey}.")
    try:
        run = analysis.run_analysis(survey_id, **report_arguments(report_args()))
    except UserError as exc:
        status = 404 if any(e.code == ErrorCode.NOT_FOUND and e.field == "surveyId"
                            for e in exc.errors) else 400
        return user_error_response(exc, status)
    page = Response(analysis.report_html(run), mimetype="text/html")
    page.headers["Content-Security-Policy"] = PAGE_POLICY
    page.headers["X-Content-Type-Options"] = "nosniff"
    page.headers["Cache-Control"] = "no-store"
    return page
