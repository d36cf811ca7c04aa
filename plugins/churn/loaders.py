"""DataLoaders of the churn types: one query per relation for a whole page."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import defer

from api import ModelByIdLoader, RapportLoader
from core.db import db

from plugins.churn import modeling, service
from plugins.churn.models import (
    ChurnModelVersion, ChurnRecord, ChurnScore, WinbackAttempt, WinbackCampaign, WinbackOutcome,
)


class ChurnRecordByIdLoader(ModelByIdLoader):
    model = ChurnRecord


class WinbackCampaignByIdLoader(ModelByIdLoader):
    model = WinbackCampaign


class WinbackAttemptByIdLoader(ModelByIdLoader):
    model = WinbackAttempt


class ChurnRecordsByCustomerLoader(RapportLoader):
    """Each customer's churn history, newest first."""

    def load_batch(self, keys: list[int]) -> list[list[ChurnRecord]]:
        found = service.records_of(keys)
        return [found.get(k, []) for k in keys]


class WinbackAttemptsByCustomerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[list[WinbackAttempt]]:
        found: dict[int, list[WinbackAttempt]] = defaultdict(list)
        for attempt in db.session.scalars(select(WinbackAttempt).where(
                WinbackAttempt.customer_id.in_(keys)).order_by(
                WinbackAttempt.customer_id, WinbackAttempt.attempted_at.desc(),
                WinbackAttempt.id.desc())):
            found[attempt.customer_id].append(attempt)
        return [found.get(k, []) for k in keys]


class WinbackOutcomesByCampaignLoader(RapportLoader):
    """``{outcome: count}`` of each campaign's attempts (every outcome present, 0 or more)."""

    def load_batch(self, keys: list[int]) -> list[dict[WinbackOutcome, int]]:
        counts: dict[int, dict[WinbackOutcome, int]] = {
            k: {o: 0 for o in WinbackOutcome} for k in keys}
        for campaign_id, outcome, count in db.session.execute(
                select(WinbackAttempt.campaign_id, WinbackAttempt.outcome, func.count())
                .where(WinbackAttempt.campaign_id.in_(keys))
                .group_by(WinbackAttempt.campaign_id, WinbackAttempt.outcome)):
            counts[campaign_id][outcome] = count
        return [counts[k] for k in keys]


class ChurnScoreByCustomerLoader(RapportLoader):
    """Each customer's score under the current model version (None when unscored)."""

    def load_batch(self, keys: list[int]) -> list[ChurnScore | None]:
        found = modeling.scores_of(keys)
        return [found.get(k) for k in keys]


class ChurnModelVersionByIdLoader(RapportLoader):
    """Model versions without their classifier bytes (parameters and metrics only)."""

    def load_batch(self, keys: list[int]) -> list[ChurnModelVersion | None]:
        rows = db.session.scalars(select(ChurnModelVersion).options(
            defer(ChurnModelVersion.artifact)).where(ChurnModelVersion.id.in_(keys))).all()
        by_id = {row.id: row for row in rows}
        return [by_id.get(k) for k in keys]
