"""``ReportLink``: what the report-link fields return (``Survey.reportLink``,
``churnReportLink``); the links themselves are made by ``core.report_links``."""

from __future__ import annotations

import graphene

from api.types import structural


@structural
class ReportLink(graphene.ObjectType):
    """A short-lived signed link to an HTML report, for a browser (no API key needed)."""

    url = graphene.String(required=True, description=(
        "A path on this server; opens the report until expiresAt, acting as the API key "
        "that asked for it (revoking the key closes the link)."))
    expires_at = graphene.DateTime(required=True, description=(
        "RAPPORT_SIGNED_LINK_TTL seconds after the link was made."))
