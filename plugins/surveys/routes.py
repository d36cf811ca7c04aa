"""The survey report over HTTP: ``GET /reports/surveys/<id>.html`` (scope surveys:read).

Query parameters, all optional: ``city``, ``country``, ``tag`` (repeat for several; a
customer segment, not for anonymous surveys), ``after`` / ``before`` (ISO 8601 submission
times), ``rotation`` (varimax, oblimin, promax), ``factors``, ``clusters`` (numbers).
Answers: 200 with the page; 400 with the typed errors for a bad parameter; 404 for an
unknown survey; 401 / 403 without a key or the scope (``core.auth.require_scope``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from core.auth import require_scope
from core.errors import ErrorCode, UserError

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


@blueprint.get("/reports/surveys/<int:survey_id>.html")
@require_scope("surveys:read")
def survey_report(survey_id: int) -> Any:
    try:
        run = analysis.run_analysis(survey_id, **report_arguments(request.args))
    except UserError as exc:
        status = 404 if any(e.code == ErrorCode.NOT_FOUND and e.field == "surveyId"
                            for e in exc.errors) else 400
        return jsonify(errors=[{"field": e.field, "message": e.message, "code": e.code}
                               for e in exc.errors]), status
    page = Response(analysis.report_html(run), mimetype="text/html")
    page.headers["Content-Security-Policy"] = PAGE_POLICY
    page.headers["X-Content-Type-Options"] = "nosniff"
    page.headers["Cache-Control"] = "no-store"
    return page
