"""Crisis early warning: abnormal rises in daily complaint counts.

For each series (all complaints, each type, critical ones) the count of the last day and
of the last two days is compared with a Poisson law whose rate is the mean daily count of
the ``BASELINE_DAYS`` before them. The score is ``-log10`` of the smaller upper-tail
probability ``P(X >= count)``, doubled for the two windows tried (Bonferroni). A series
alarms when the score reaches the sensitivity (default 4: a chance of 1 in 10,000 a day
under the baseline) and the window holds at least the minimum volume of complaints.

Measured on simulated series (bench/bench_complaints.py): see docs/complaints.md.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import case, func, literal, select

from core import changes
from core.db import db, utcnow
from core.errors import camel
from core.models import Alert
from core.services import transaction
from core.services.staff import raise_alert

from plugins.complaints.config import complaint_settings
from plugins.complaints.models import Complaint, Severity
from plugins.complaints.stats import local_midnight

BASELINE_DAYS = 28
WINDOWS = (1, 2)
#: The baseline rate never goes below this (a type never seen before is not infinitely
#: surprising).
MIN_RATE = 0.2
#: Critical complaints are rare: a handful at once is already a signal.
CRITICAL_MIN_VOLUME = 3
SPIKE_ALERT = "complaint_spike"
ALL, CRITICAL = "all", "critical"


def poisson_tail(count: int, mu: float) -> float:
    """``P(X >= count)`` for ``X ~ Poisson(mu)``, accurate far into the tail."""
    if count <= 0:
        return 1.0
    if count <= mu:
        term, below = math.exp(-mu), 0.0
        for k in range(count):
            below += term
            term *= mu / (k + 1)
        return max(0.0, 1.0 - below)
    term = math.exp(-mu + count * math.log(mu) - math.lgamma(count + 1))
    total, k = 0.0, count
    while term > total * 1e-17:
        total += term
        k += 1
        term *= mu / k
    return min(1.0, total)


def poisson_variate(rng: random.Random, mu: float) -> int:
    """A Poisson draw (Knuth's product of uniforms; fine for the daily rates here)."""
    limit, product, count = math.exp(-mu), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


@dataclass(frozen=True)
class Detection:
    series: str
    window_days: int
    window_count: int
    expected: float
    score: float
    p_value: float


def check_last_day(counts: Sequence[int], sensitivity: float, min_volume: int,
                  series: str = ALL) -> Detection | None:
    """Test the last day of ``counts`` (daily counts, oldest first) against the
    ``BASELINE_DAYS`` before the longest window; None when nothing is abnormal."""
    longest = max(WINDOWS)
    if len(counts) < BASELINE_DAYS + longest:
        return None
    baseline = counts[-longest - BASELINE_DAYS:-longest]
    rate = max(sum(baseline) / BASELINE_DAYS, MIN_RATE)
    best: Detection | None = None
    for window in WINDOWS:
        observed = sum(counts[-window:])
        expected = rate * window
        p_value = min(1.0, poisson_tail(observed, expected) * len(WINDOWS))
        score = -math.log10(p_value) if p_value > 0 else 300.0
        if best is None or score > best.score:
            best = Detection(series, window, observed, round(expected, 3), round(score, 3),
                             p_value)
    if best.score >= sensitivity and best.window_count >= min_volume:
        return best
    return None


def scan(counts: Sequence[int], sensitivity: float, min_volume: int) -> list[int]:
    """The indices of every day of ``counts`` that alarms (for measuring the test)."""
    return [day for day in range(BASELINE_DAYS + max(WINDOWS) - 1, len(counts))
            if check_last_day(counts[:day + 1], sensitivity, min_volume) is not None]


# --- On the database -----------------------------------------------------------------------


def _day_key(days: Sequence[dt.date], tz: Any) -> Any:
    whens = [(Complaint.filed_at < local_midnight(day + dt.timedelta(days=1), tz),
              literal(day.isoformat())) for day in days]
    return case(*whens, else_=literal("later"))


def daily_counts(as_of: dt.datetime) -> tuple[dt.date, dict[str, list[int]]]:
    """Per series, the counts of the days up to ``as_of``'s (business time zone) day."""
    tz = complaint_settings().timezone
    today = as_of.astimezone(tz).date()
    days = [today - dt.timedelta(days=n)
            for n in range(BASELINE_DAYS + max(WINDOWS) - 1, -1, -1)]
    key = _day_key(days, tz).label("day")
    critical = (Complaint.severity == Severity.CRITICAL).label("critical")
    rows = db.session.execute(
        select(key, Complaint.type, critical, func.count())
        .where(Complaint.filed_at >= local_midnight(days[0], tz), Complaint.filed_at <= as_of)
        .group_by(key, Complaint.type, critical)).all()
    index = {day.isoformat(): n for n, day in enumerate(days)}
    series: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    series[ALL], series[CRITICAL] = [0] * len(days), [0] * len(days)
    for day, type_, critical, count in rows:
        position = index.get(day)
        if position is None:
            continue
        series[ALL][position] += count
        series[f"type:{type_}"][position] += count
        if critical:
            series[CRITICAL][position] += count
    return today, dict(series)


@dataclass
class DetectionRun:
    day: dt.date
    detections: list[Detection]
    alerts: list[int]


def detect_spikes(as_of: dt.datetime | None = None) -> DetectionRun:
    """Test every series on ``as_of``'s day and raise a ``complaint_spike`` alert for each
    detection not already alerted that day (the job may run as often as wanted)."""
    with transaction():
        return raise_spike_alerts(as_of or utcnow())


def raise_spike_alerts(as_of: dt.datetime) -> DetectionRun:
    """``detect_spikes`` in the caller's transaction (the demo data uses it)."""
    settings = complaint_settings()
    today, series = daily_counts(as_of)
    found = []
    for name, counts in sorted(series.items()):
        volume = CRITICAL_MIN_VOLUME if name == CRITICAL else settings.min_volume
        detection = check_last_day(counts, settings.sensitivity, volume, name)
        if detection is not None:
            found.append(detection)
    already = {(a.evidence.get("series"), a.evidence.get("day"))
               for a in db.session.scalars(select(Alert).where(
                   Alert.kind == SPIKE_ALERT,
                   Alert.raised_at >= local_midnight(today, settings.timezone)
                   - dt.timedelta(days=1)))}
    alerts = []
    for detection in found:
        if (detection.series, today.isoformat()) in already:
            continue
        evidence = {**{camel(k): v for k, v in asdict(detection).items()},
                    "day": today.isoformat(),
                    "type": detection.series.removeprefix("type:")
                    if detection.series.startswith("type:") else None,
                    "baselineDays": BASELINE_DAYS, "sensitivity": settings.sensitivity}
        severity = "critical" if detection.series == CRITICAL else "high"
        alerts.append(raise_alert(SPIKE_ALERT, severity, "complaints", evidence).id)
    changes.record(None, [], {"detections": [None, len(found)], "alerts": [None, len(alerts)],
                              "day": [None, today]})
    return DetectionRun(today, found, alerts)
