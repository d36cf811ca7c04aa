"""Churn tables: churn records, win-back campaigns and attempts, model versions, scores,
and the churn-rate alerts already raised.

A churn record is a fact (who left, when, of which type and for which reason); it is
closed by a reactivation, never deleted, so the monthly report of a past period does not
change. At most one record per customer is open (not reactivated) at a time: a partial
unique index guards it on both databases. Model versions and scores are written by the
fitting and scoring step (``rapport churn fit/score``); a score keeps the customer's BTYD
summary as of the calibration date, so ``expectedPurchases(days)`` is computed at read time.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, Enum, Float, ForeignKey, Index, Integer, LargeBinary, String,
    Text, UniqueConstraint, text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import BigIntPK, JSONDocument, UTCDateTime, db, plugin_table, utcnow

PLUGIN = "churn"


def _table_args(*items: Any) -> tuple[Any, ...]:
    return (*items, plugin_table(PLUGIN))


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=30, values_callable=lambda e: [m.value for m in e])


class ChurnType(enum.StrEnum):
    """Kinds of churn by cause (DOMAIN.md section 7)."""

    NATURAL = "natural"          # moved away, died, business closed
    MALICIOUS = "malicious"      # left to escape obligations (unpaid bills)
    COMPETITIVE = "competitive"  # taken by a competitor
    NEGLIGENCE = "negligence"    # driven away by our own failures
    OTHER = "other"              # not stated (a snapshot export's churned flag)


class ChurnReason(enum.StrEnum):
    """Keaveney's eight reasons, plus OTHER."""

    PRICING = "pricing"
    INCONVENIENCE = "inconvenience"
    CORE_SERVICE_FAILURE = "core_service_failure"
    SERVICE_ENCOUNTER_FAILURE = "service_encounter_failure"
    RESPONSE_TO_FAILURE = "response_to_failure"
    COMPETITION = "competition"
    ETHICAL = "ethical"
    INVOLUNTARY = "involuntary"
    OTHER = "other"


class WinbackStrategy(enum.StrEnum):
    RELATIONSHIP = "relationship"
    PRICE = "price"
    SERVICE = "service"
    PRODUCT = "product"
    OTHER = "other"


class WinbackOutcome(enum.StrEnum):
    PENDING = "pending"
    WON_BACK = "won_back"
    LOST = "lost"


class TimeUnit(enum.StrEnum):
    DAY = "day"
    WEEK = "week"


class ChurnRecord(db.Model):
    __tablename__ = "churn_records"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    type: Mapped[ChurnType] = mapped_column(_enum(ChurnType))
    reason: Mapped[ChurnReason] = mapped_column(_enum(ChurnReason))
    churned_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(Text)
    recorded_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Set when the customer came back (a purchase, a won win-back, by hand, a merge).
    reactivated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reactivation_reason: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = _table_args(
        Index("ix_churn_records_customer", "customer_id", "churned_at", "id"),
        Index("ix_churn_records_churned_at", "churned_at"),
        # One open record per customer: a concurrent second mark fails instead of doubling.
        Index("uq_churn_records_open", "customer_id", unique=True,
              postgresql_where=text("reactivated_at IS NULL"),
              sqlite_where=text("reactivated_at IS NULL")),
        CheckConstraint("reactivated_at IS NULL OR reactivated_at >= churned_at",
                        name="reactivated_after_churn"),
    )


class WinbackCampaign(db.Model):
    __tablename__ = "churn_winback_campaigns"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    strategy: Mapped[WinbackStrategy] = mapped_column(_enum(WinbackStrategy))
    description: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = _table_args(
        CheckConstraint("ended_at IS NULL OR ended_at >= started_at", name="ends_after_start"))


class WinbackAttempt(db.Model):
    __tablename__ = "churn_winback_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("churn_winback_campaigns.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    outcome: Mapped[WinbackOutcome] = mapped_column(_enum(WinbackOutcome),
                                                    default=WinbackOutcome.PENDING)
    note: Mapped[str | None] = mapped_column(Text)
    attempted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = _table_args(
        Index("ix_churn_winback_attempts_customer", "customer_id", "outcome"),
        Index("ix_churn_winback_attempts_campaign", "campaign_id", "attempted_at"),
        CheckConstraint("(outcome = 'pending') = (resolved_at IS NULL)",
                        name="resolved_when_decided"),
    )


class ChurnModelVersion(db.Model):
    """A fitted model: BTYD parameters and/or a serialised classifier, with its metrics."""

    __tablename__ = "churn_model_versions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The calibration date: the features and BTYD summaries are as of it.
    as_of: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    time_unit: Mapped[TimeUnit] = mapped_column(_enum(TimeUnit), default=TimeUnit.DAY)
    #: ``bgnbd+gg``, ``logistic``, ``knn``, ``gradient_boosting``...
    kind: Mapped[str] = mapped_column(String(40))
    #: BG/NBD r, alpha, a, b, log_likelihood; Gamma-Gamma p, q, gamma.
    params: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    #: roc_auc, pr_auc, calibration...
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    feature_names: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    artifact: Mapped[bytes | None] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = _table_args(Index("ix_churn_model_versions_active", "active", "kind"))


class ChurnScore(db.Model):
    """A customer's latest score under one model version."""

    __tablename__ = "churn_scores"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("churn_model_versions.id"))
    scored_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    risk: Mapped[float] = mapped_column(Float)
    p_alive: Mapped[float | None] = mapped_column(Float)
    #: BTYD summary as of the version's calibration date, in its time unit.
    frequency: Mapped[int | None] = mapped_column(Integer)
    recency: Mapped[float | None] = mapped_column(Float)
    T: Mapped[float | None] = mapped_column(Float)
    expected_aov: Mapped[float | None] = mapped_column(Float)
    clv: Mapped[float | None] = mapped_column(Float)
    #: risk x clv: the order of the warning list (biggest customers at risk first).
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    top_factors: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)

    __table_args__ = _table_args(
        UniqueConstraint("customer_id", "model_version_id"),
        Index("ix_churn_scores_ranking", "model_version_id", "priority", "customer_id"),
        CheckConstraint("risk >= 0 AND risk <= 1", name="risk_is_probability"),
    )


class ScoringRunStatus(enum.StrEnum):
    OPEN = "open"
    PUBLISHED = "published"
    FAILED = "failed"


class ChurnScoreRun(db.Model):
    """One scoring run: its model version and time, split into chunks scored in parallel
    (docs/churn.md, "Scoring across workers"). At most one run is open at a time."""

    __tablename__ = "churn_score_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("churn_model_versions.id"))
    status: Mapped[ScoringRunStatus] = mapped_column(_enum(ScoringRunStatus),
                                                     default=ScoringRunStatus.OPEN)
    #: The run's clock: every chunk computes its features and summaries as of it.
    scored_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    chunks: Mapped[int] = mapped_column(Integer)
    #: The churn.score job running it (none for the CLI).
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    customers: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = _table_args(
        # One open run: a second one fails to start instead of interleaving its scores.
        Index("uq_churn_score_runs_open", "status", unique=True,
              postgresql_where=text("status = 'open'"), sqlite_where=text("status = 'open'")),
    )


class ChurnScoreStaging(db.Model):
    """Scores of an open run, written by its chunks; the run's last step moves them into
    ``churn_scores`` in one transaction. No foreign key: the chunks' writes check nothing
    another chunk could hold."""

    __tablename__ = "churn_score_staging"

    run_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    risk: Mapped[float] = mapped_column(Float)
    p_alive: Mapped[float | None] = mapped_column(Float)
    frequency: Mapped[int | None] = mapped_column(Integer)
    recency: Mapped[float | None] = mapped_column(Float)
    T: Mapped[float | None] = mapped_column(Float)
    expected_aov: Mapped[float | None] = mapped_column(Float)
    clv: Mapped[float | None] = mapped_column(Float)
    priority: Mapped[float] = mapped_column(Float)
    top_factors: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)

    __table_args__ = _table_args()


class ChurnRateAlert(db.Model):
    """A month already alerted, once per month and kind: ``churn_rate_jump``, or
    ``churn_owner_bottom:<agent id>`` (an owner at the bottom three months running)."""

    __tablename__ = "churn_rate_alerts"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id", ondelete="SET NULL"))
    raised_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = _table_args()
