"""Calibration/holdout backtest of BG/NBD: fitted as of T, compared with (T, T + h].

The standard BTYD checks (Fader, Hardie & Lee 2005): per customer, the purchases BG/NBD
predicted for the holdout given the calibration history against those made; their sums,
correlation and mean absolute error; the tracking chart of cumulative repeat purchases
by week, actual against predicted; and the conditional expectations: mean predicted and
actual holdout purchases by number of calibration repeat purchases (0, 1, ..., 7+).

Purchases count as purchase days, as in calibration (CONTRACTS.md, "Statistics
conventions"). ``fit_models`` runs it with T = the classifier's training date, h = the
horizon, on the BG/NBD fitted as of T: the same split the classifier is judged on.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, cast, func, select

from core.app import rapport
from core.db import db
from core.lazy import lazy_module
from core.models import Interaction

from plugins.churn import btyd, features

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

#: Conditional expectations group calibration frequencies 0..TOP_FREQUENCY-1 and "7+".
TOP_FREQUENCY = 7


def holdout_purchase_days(customer_ids: np.ndarray, start: dt.datetime, end: dt.datetime
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per customer of ``customer_ids`` (sorted), the purchase days (RAPPORT_TIMEZONE, the
    offset at ``start``) in (start, end] in the base currency; and per week of the holdout
    (week 1 = the first 7 days) the purchase days of those customers."""
    offset = start.astimezone(rapport().settings.tz).utcoffset() or dt.timedelta()
    shift = offset.total_seconds() / 86400.0
    day = features._floor(features._epoch_days(Interaction.occurred_at) + shift).label("day")
    start_day = int(np.floor(start.timestamp() / 86400.0 + shift))
    wanted = [int(i) for i in customer_ids]
    per_customer = np.zeros(len(customer_ids))
    weeks = max(1, int(np.ceil((end - start).total_seconds() / 86400.0 / 7.0)))
    per_week = np.zeros(weeks)
    for low in range(0, len(wanted), 10_000):
        part = wanted[low:low + 10_000]
        days = (select(Interaction.customer_id, day)
                .where(Interaction.customer_id.in_(part), Interaction.kind == "purchase",
                       Interaction.currency == rapport().settings.base_currency,
                       Interaction.occurred_at > start, Interaction.occurred_at <= end)
                .group_by(Interaction.customer_id, day).subquery())
        for cid, count in db.session.execute(select(days.c.customer_id, func.count())
                                             .group_by(days.c.customer_id)):
            per_customer[np.searchsorted(customer_ids, cid)] = count
        for week, count in db.session.execute(
                select(cast((days.c.day - start_day - 1) / 7, Float).label("w"), func.count())
                .group_by("w")):
            index = min(max(int(week), 0), weeks - 1)
            per_week[index] += count
    return per_customer, per_week


def backtest(params: btyd.BGNBDParams, frequency: np.ndarray, recency: np.ndarray,
             age: np.ndarray, actual: np.ndarray, actual_by_week: np.ndarray,
             horizon_days: float, unit_days: float) -> dict[str, Any]:
    """The checks of the module docstring from calibration summaries (in the model's unit)
    and the holdout's actual purchase days per customer and per week."""
    horizon = horizon_days / unit_days
    predicted = btyd.expected_purchases(params, horizon, frequency, recency, age)
    weeks = len(actual_by_week)
    tracking = []
    cumulative = 0.0
    for week in range(1, weeks + 1):
        until = min(week * 7.0, horizon_days) / unit_days
        expected = float(np.sum(btyd.expected_purchases(params, until, frequency, recency,
                                                        age)))
        cumulative += float(actual_by_week[week - 1])
        tracking.append({"week": week, "actual": cumulative, "predicted": expected})
    groups = []
    capped = np.minimum(frequency, TOP_FREQUENCY)
    for value in range(TOP_FREQUENCY + 1):
        mask = capped == value
        if mask.any():
            groups.append({"frequency": value, "orMore": value == TOP_FREQUENCY,
                           "customers": int(mask.sum()),
                           "predicted": float(predicted[mask].mean()),
                           "actual": float(actual[mask].mean())})
    correlation = (float(np.corrcoef(predicted, actual)[0, 1])
                   if len(actual) > 1 and actual.std() > 0 and predicted.std() > 0 else None)
    return {"horizonDays": horizon_days, "customers": int(len(actual)),
            "predictedTotal": float(predicted.sum()), "actualTotal": float(actual.sum()),
            "correlation": correlation,
            "meanAbsoluteError": float(np.mean(np.abs(predicted - actual))) if len(actual)
            else None,
            "byFrequency": groups, "tracking": tracking}
