"""The complaints jobs: SLA escalation and spike detection (``rapport complaints escalate |
detect`` run the same functions)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from marshmallow import Schema, fields

from core.db import utcnow
from core.ids import global_id
from core.jobs import JobKind, Progress

from plugins.complaints import detection, service


class AsOfParameters(Schema):
    as_of = fields.AwareDateTime(data_key="asOf", load_default=None,
                                 default_timezone=dt.timezone.utc,
                                 metadata={"description": "default: when the job runs"})


def escalate(parameters: dict[str, Any], progress: Progress) -> dict[str, Any]:
    when = parameters.get("as_of") or utcnow()
    progress(0.0, "escalating overdue complaints")
    run = service.escalate_overdue(when)
    return {"asOf": when.isoformat(),
            "escalated": [global_id("Complaint", i) for i in run.escalated],
            "alerts": [global_id("Alert", i) for i in run.alerts]}


def detect(parameters: dict[str, Any], progress: Progress) -> dict[str, Any]:
    when = parameters.get("as_of") or utcnow()
    progress(0.0, "testing daily complaint counts")
    run = detection.detect_spikes(when)
    return {"day": run.day.isoformat(), "alerts": [global_id("Alert", i) for i in run.alerts],
            "detections": [
        {"series": d.series, "windowDays": d.window_days, "windowCount": d.window_count,
         "expected": d.expected, "score": d.score, "pValue": d.p_value}
        for d in run.detections]}


COMPLAINT_JOB_KINDS = [
    JobKind("complaints.escalate", AsOfParameters, "complaints", escalate,
            "Escalate complaints past an SLA target: severity up, timeline entry, alert."),
    JobKind("complaints.detect", AsOfParameters, "complaints", detect,
            "Test daily complaint counts for abnormal rises; alert on each new detection."),
]
