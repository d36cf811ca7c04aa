"""The loyalty programme's jobs: point expiry and tier re-evaluation (``rapport loyalty
expire | tiers`` run the same functions)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from marshmallow import Schema, fields

from core.db import utcnow
from core.jobs import JobKind, Progress

from plugins.loyalty import service


class ExpireParameters(Schema):
    as_of = fields.AwareDateTime(data_key="asOf", load_default=None,
                                 default_timezone=dt.timezone.utc,
                                 metadata={"description": "default: when the job runs"})


class TiersParameters(Schema):
    pass


def expire(parameters: dict[str, Any], progress: Progress) -> dict[str, Any]:
    when = parameters.get("as_of") or utcnow()
    run = service.expire_points(when, on_progress=progress.counter(
        service.lots_due(when), "{done} of {total} lots expired"))
    return {"asOf": when.isoformat(), "points": run.points, "lots": run.lots,
            "customers": run.customers}


def tiers(parameters: dict[str, Any], progress: Progress) -> dict[str, Any]:
    moved = service.reevaluate_tiers(on_progress=progress.counter(
        service.member_count(), "{done} of {total} members re-evaluated"))
    return {"moved": moved}


LOYALTY_JOB_KINDS = [
    JobKind("loyalty.expire", ExpireParameters, "loyalty", expire,
            "Write expiry entries for every lot past its expiry."),
    JobKind("loyalty.tiers", TiersParameters, "loyalty", tiers,
            "Re-evaluate every member's tier (moves down happen only here)."),
]
