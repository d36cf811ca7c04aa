"""Fitting and scoring: ``fit_models`` turns the database into a stored model version,
``score_customers`` turns a model version into a score per customer (docs/churn.md,
"Models and scores").

Fitting, as of a calibration date ``as_of`` (default now):

1. The model kind (RAPPORT_CHURN_MODEL; ``auto``: sBG when customers carry renewal periods
   and nobody has a purchase) -> the sBG fit per renewal period. BTYD summaries as of
   ``as_of`` -> BG/NBD, then Gamma-Gamma on the repeat buyers (base currency), when there
   are purchases. A part that cannot be fitted is skipped and the notes say why; only when
   no part at all can be fitted is it a typed error, and nothing is stored.
2. The classifier, honest in time: with ``t0 = as_of - horizon``, the training customers are
   those that existed by ``t0`` and were not churned at ``t0``; their features are computed
   as of ``t0`` (with 1 - P(alive) from a BG/NBD fitted on the summaries as of ``t0``), and
   their label is 1 when a churn record is dated in ``(t0, as_of]``. The model thus learns
   to predict churn within the next ``horizon`` days from what was known at the start of
   it, the use it is put to when scoring. Too few labels or one class only: BTYD only, and
   the metrics say why.
3. One new model version, active, the previous one deactivated, in one transaction.

Scoring is a run (``plan_scoring``) split into id ranges scored independently, possibly by
several workers at once (``score_range``: keyset chunks of customer ids, one feature query
and one BTYD query per chunk, written to the run's staging rows), then published in one
transaction (``publish_run``): readers see the whole run or none of it. The scores of
older model versions are removed when a run is published.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from sqlalchemy import ScalarSelect, Select, delete, func, literal, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from api.pagination import Keyset
from core import changes
from core.app import rapport
from core.config import ConfigError
from core.db import UTCDateTime, db, utcnow
from core.ids import global_id
from core.lazy import lazy_module
from core.models import Agent, Customer, CustomerExternalId, CustomerStatus, Interaction
from core.services import transaction

from plugins.churn import btyd, factors, features
from plugins.churn.btyd import (
    BGNBDParams, ChurnModelError, FitNotConverged, GammaGammaParams, InsufficientData,
    InvalidModelData,
)
from plugins.churn.errors import ChurnErrorCode
from plugins.churn.models import (
    ChurnModelVersion, ChurnRecord, ChurnScore, ChurnScoreRun, ChurnScoreStaging,
    ScoringRunStatus, TimeUnit,
)

if TYPE_CHECKING:
    import numpy as np

    from plugins.churn import classifier as classifiers
    from plugins.churn.classifier import ChurnClassifier
else:  # imported on first use (scikit-learn): the app starts without the statistics stack
    np = lazy_module("numpy")
    classifiers = lazy_module("plugins.churn.classifier")

EXTENSION = "rapport_churn"
#: Training rows kept at most (a uniform sample beyond: the base rate is unchanged).
MAX_TRAINING_ROWS = 200_000
TOP_FACTORS = 5
#: PostgreSQL advisory lock key held by a scoring run (any fixed 64-bit number of ours).
_SCORE_LOCK = 0x63_68_75_72_6E_73_63
DEFAULT_SCORE_CHUNK = 20_000
MAX_HORIZON_DAYS = 3650
#: A month in days: CLV is discounted monthly.
MONTH_DAYS = 365.25 / 12
#: RAPPORT_CHURN_MODEL: non-contractual (BG/NBD), contractual (sBG), or chosen from the data.
MODEL_BGNBD, MODEL_SBG, MODEL_AUTO = "bgnbd", "sbg", "auto"
MODEL_CHOICES = (MODEL_BGNBD, MODEL_SBG, MODEL_AUTO)
DEFAULT_MARGIN_ATTRIBUTE = "monthly_charge"

#: ``progress(done, total)``: customers processed so far out of the total of the step.
Progress = Callable[[int, int], None]


# --- Errors -----------------------------------------------------------------------------------


class NoModel(ChurnModelError):
    """Scoring (or reading) needs a fitted model and there is none."""

    code = ChurnErrorCode.NO_MODEL


class FeaturesChanged(ChurnModelError):
    """The installed plugins give other feature columns than the model was trained on."""

    code = ChurnErrorCode.FEATURES_CHANGED


# --- Settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnSettings:
    #: CLV horizon, in months (``RAPPORT_CHURN_CLV_HORIZON_MONTHS``, default 12).
    clv_horizon_months: int
    #: Yearly discount rate (``RAPPORT_CHURN_DISCOUNT_RATE``, default 0.1).
    discount_rate: float
    #: ``RAPPORT_CHURN_MODEL``: ``bgnbd``, ``sbg`` or ``auto`` (default).
    model: str = "auto"
    #: ``RAPPORT_CHURN_MARGIN_ATTRIBUTE``: the declared number attribute holding a
    #: subscriber's margin per renewal period (sBG CLV); default ``monthly_charge``.
    margin_attribute: str = DEFAULT_MARGIN_ATTRIBUTE

    @property
    def monthly_discount_rate(self) -> float:
        return float((1.0 + self.discount_rate) ** (1.0 / 12.0) - 1.0)


def read_settings(app: Flask) -> ChurnSettings:
    """Validate the plugin's settings once, at start-up: a bad value stops the app."""
    extra = rapport(app).settings.extra
    raw_months = str(extra.get("RAPPORT_CHURN_CLV_HORIZON_MONTHS", "12")).strip()
    if not raw_months.isdigit() or not 1 <= int(raw_months) <= 120:
        raise ConfigError(f"RAPPORT_CHURN_CLV_HORIZON_MONTHS={raw_months!r}: give a whole "
                          f"number of months from 1 to 120")
    raw_rate = str(extra.get("RAPPORT_CHURN_DISCOUNT_RATE", "0.1")).strip()
    try:
        rate = float(raw_rate)
    except ValueError:
        rate = -1.0
    if not (0.0 <= rate <= 1.0) or not math.isfinite(rate):
        raise ConfigError(f"RAPPORT_CHURN_DISCOUNT_RATE={raw_rate!r}: give a yearly rate from "
                          f"0 to 1 (0.1 = 10 % a year)")
    model = str(extra.get("RAPPORT_CHURN_MODEL", "auto")).strip().lower()
    if model not in MODEL_CHOICES:
        raise ConfigError(f"RAPPORT_CHURN_MODEL={model!r}: give one of "
                          f"{', '.join(MODEL_CHOICES)}")
    margin = str(extra.get("RAPPORT_CHURN_MARGIN_ATTRIBUTE",
                           DEFAULT_MARGIN_ATTRIBUTE)).strip()
    if not margin or len(margin) > 64:
        raise ConfigError(f"RAPPORT_CHURN_MARGIN_ATTRIBUTE={margin!r}: give the key of a "
                          f"declared number attribute (at most 64 characters)")
    return ChurnSettings(int(raw_months), rate, model, margin)


def churn_settings() -> ChurnSettings:
    found = current_app.extensions.get(EXTENSION)
    return found if found is not None else read_settings(current_app)


# --- Fitting ----------------------------------------------------------------------------------


@dataclass
class _Summaries:
    customer_ids: np.ndarray
    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    monetary: np.ndarray

    @classmethod
    def collect(cls, as_of: dt.datetime, time_unit: TimeUnit, chunk_size: int,
                share: float = 1.0) -> _Summaries:
        chunks = list(features.btyd_chunks(as_of, time_unit, chunk_size, share=share))
        if not chunks:
            empty = np.empty(0)
            return cls(empty.astype(np.int64), empty, empty, empty, empty)
        return cls(*(np.concatenate([getattr(c, name) for c in chunks]) for name in
                     ("customer_ids", "frequency", "recency", "T", "monetary")))


def _aware(when: dt.datetime | None) -> dt.datetime:
    moment = when or utcnow()
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def _checked_fit_args(time_unit: str, classifier: str, horizon_days: int) -> TimeUnit:
    if time_unit not in {u.value for u in TimeUnit}:
        raise InvalidModelData(f"time unit must be day or week (got {time_unit!r})", "timeUnit")
    if classifier not in classifiers.KINDS:
        raise InvalidModelData(
            f"unknown classifier {classifier!r}; one of {', '.join(classifiers.KINDS)}",
            "classifier")
    if not isinstance(horizon_days, int) or not 1 <= horizon_days <= MAX_HORIZON_DAYS:
        raise InvalidModelData(f"the horizon must be from 1 to {MAX_HORIZON_DAYS} days "
                               f"(got {horizon_days!r})", "horizonDays")
    return TimeUnit(time_unit)


def _fit_bgnbd(summaries: _Summaries, time_unit: TimeUnit, when: str) -> BGNBDParams:
    try:
        return btyd.fit_bgnbd(summaries.frequency, summaries.recency, summaries.T,
                              time_unit.value)
    except ChurnModelError as exc:
        # Say which fit failed: the calibration one or the one at the training date.
        raise type(exc)(f"{exc.errors[0].message} (BG/NBD as of {when})",
                        exc.errors[0].field) from None


def _fit_gamma_gamma(summaries: _Summaries) -> tuple[GammaGammaParams | None, str | None]:
    """Gamma-Gamma, or None and why. A fit with q <= 1 is a valid maximum but describes
    spends without a finite mean: no expected order value exists, so it is not kept
    (stored, it would make every scoring run fail)."""
    try:
        fitted = btyd.fit_gamma_gamma(summaries.frequency, summaries.monetary)
    except (InsufficientData, FitNotConverged) as exc:
        return None, f"no Gamma-Gamma model, so no CLV: {exc.errors[0].message}"
    if fitted.q <= 1.0:
        return None, (f"no Gamma-Gamma model, so no CLV: its fit has q = {fitted.q:.3g} <= 1, "
                      f"spends too heavy-tailed for a finite mean order value (check for "
                      f"outlier amounts)")
    return fitted, None


def _churned_at(moment: dt.datetime) -> Select[Any]:
    """Customer ids churned at ``moment``: a record dated by then, not reactivated by then."""
    return select(ChurnRecord.customer_id).where(
        ChurnRecord.churned_at <= moment,
        or_(ChurnRecord.reactivated_at.is_(None), ChurnRecord.reactivated_at > moment))


@dataclass
class _TrainingSet:
    X: np.ndarray
    y: np.ndarray
    dates: np.ndarray
    names: tuple[str, ...]
    population: int


def _training_share(t0: dt.datetime) -> tuple[int, float]:
    """The customers existing at ``t0`` and the share of them the classifier trains on:
    all of them up to MAX_TRAINING_ROWS, else a sample of that size chosen in SQL (the
    features of the others are never computed)."""
    population = db.session.scalar(select(func.count()).select_from(Customer).where(
        features._existing_by(t0))) or 0
    return population, min(1.0, MAX_TRAINING_ROWS / max(population, 1))


def _training_set(spec: features.FeatureSpec, as_of: dt.datetime,
                  bgnbd_t0: BGNBDParams | None, summaries_t0: _Summaries | None,
                  chunk_size: int, population: int, share: float,
                  progress: Progress | None) -> _TrainingSet:
    """Features as of ``spec.as_of`` (t0) of the customers existing and not churned then
    (the ``share`` sample of them), with 1 - P(alive) as of t0 when there is a BG/NBD
    model (``bgnbd_t0``), and the label churned in (t0, as_of]."""
    t0 = spec.as_of
    excluded = np.unique(np.asarray(db.session.scalars(_churned_at(t0)).all(), np.int64))
    positive = np.unique(np.asarray(db.session.scalars(select(ChurnRecord.customer_id).where(
        ChurnRecord.churned_at > t0, ChurnRecord.churned_at <= as_of)).all(), np.int64))
    summary_ids = alive_t0 = np.empty(0)
    if bgnbd_t0 is not None and summaries_t0 is not None:
        alive_t0 = btyd.probability_alive(bgnbd_t0, summaries_t0.frequency,
                                          summaries_t0.recency, summaries_t0.T)
        order = np.argsort(summaries_t0.customer_ids)
        summary_ids, alive_t0 = summaries_t0.customer_ids[order], alive_t0[order]
    names = features.feature_names(spec)
    rows: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    done = 0
    expected = round(population * share)
    for chunk in features.feature_chunks(spec, chunk_size, share=share):
        done += len(chunk.customer_ids)
        chunk_ids = chunk.customer_ids
        keep = ~np.isin(chunk_ids, excluded)
        values = chunk.values[keep]
        if bgnbd_t0 is not None:
            alive = _lookup(summary_ids, alive_t0, chunk_ids[keep])
            values, _ = classifiers.with_dropout_feature(values, names, alive)
        rows.append(values)
        ids.append(chunk_ids[keep])
        if progress:
            progress(done, max(expected, done))
    all_ids = np.concatenate(ids) if ids else np.empty(0, np.int64)
    extra = ("btyd_dropout_probability",) if bgnbd_t0 is not None else ()
    X = np.vstack(rows) if rows else np.empty((0, len(names) + len(extra)))
    y = np.isin(all_ids, positive).astype(float)
    return _TrainingSet(X, y, _start_dates(all_ids), (*names, *extra), population)


def _backtest(params: BGNBDParams, summaries: _Summaries, t0: dt.datetime,
              as_of: dt.datetime, unit: TimeUnit) -> dict[str, Any]:
    """BG/NBD fitted as of t0 against the purchase days of (t0, as_of] (validation.py)."""
    from plugins.churn import validation

    order = np.argsort(summaries.customer_ids)
    ids = summaries.customer_ids[order]
    actual, by_week = validation.holdout_purchase_days(ids, t0, as_of)
    return validation.backtest(params, summaries.frequency[order], summaries.recency[order],
                               summaries.T[order], actual, by_week,
                               (as_of - t0).total_seconds() / 86400.0,
                               7.0 if unit == TimeUnit.WEEK else 1.0)


def _choose_model(setting: str, summaries: _Summaries, as_of: dt.datetime) -> str:
    """RAPPORT_CHURN_MODEL resolved: ``auto`` is sBG when customers carry renewal periods
    and nobody has a purchase, BG/NBD otherwise."""
    if setting != MODEL_AUTO:
        return setting
    if len(summaries.customer_ids):
        return MODEL_BGNBD
    has_periods = db.session.scalar(select(Customer.id).where(
        Customer.tenure_periods.is_not(None), features._existing_by(as_of)).limit(1))
    return MODEL_SBG if has_periods is not None else MODEL_BGNBD


def _fit_sbg(as_of: dt.datetime, notes: list[str]) -> dict[str, Any]:
    """One sBG fit per renewal period length (month, year) from the customers existing by
    ``as_of`` that carry ``tenure_periods``: churned = churned at ``as_of``. A period that
    cannot be fitted maps to the reason (also added to ``notes``)."""
    from plugins.churn import sbg

    churned = _churned_at(as_of).subquery()
    rows = db.session.execute(select(
        func.coalesce(Customer.period, "month"), Customer.tenure_periods,
        Customer.id.in_(select(churned.c.customer_id))).where(
        Customer.tenure_periods.is_not(None), features._existing_by(as_of))).all()
    if not rows:
        notes.append("no sBG model: no customer carries tenure_periods")
        return {}
    fits: dict[str, Any] = {}
    for period in sorted({r[0] for r in rows}):
        tenure = np.asarray([r[1] for r in rows if r[0] == period], dtype=np.int64)
        left = np.asarray([bool(r[2]) for r in rows if r[0] == period])
        unusable = left & (tenure < 1)
        if unusable.any():
            notes.append(f"sBG ({period}): {int(unusable.sum())} churned customers with 0 "
                         f"completed periods left out (churn happens at a period's end)")
        try:
            fitted = sbg.fit_sbg(tenure[~unusable], left[~unusable], period)  # type: ignore[arg-type]
        except ChurnModelError as exc:
            fits[period] = exc.errors[0].message
            notes.append(f"no sBG model for {period}ly renewals: {exc.errors[0].message}")
            continue
        fits[period] = fitted.to_dict()
    return fits


def _margin_note(spec: features.FeatureSpec) -> str:
    """What the subscribers' CLV is made of, or why they have none."""
    settings = churn_settings()
    key = settings.margin_attribute
    if margin_column(spec, key) is None:
        return (f"no subscriber CLV: no number attribute {key!r} is declared "
                f"(RAPPORT_CHURN_MARGIN_ATTRIBUTE names the attribute holding the margin "
                f"per renewal period)")
    if settings.discount_rate <= 0:
        return ("no subscriber CLV: RAPPORT_CHURN_DISCOUNT_RATE is 0, and the undiscounted "
                "remaining lifetime of an sBG subscriber can be infinite")
    return (f"subscriber CLV = discounted expected residual lifetime (DERL) x the attribute "
            f"{key!r} as margin per renewal period; null for a subscriber without it")


def _start_dates(customer_ids: np.ndarray) -> np.ndarray:
    """When each customer started to exist (creation, or an earlier interaction), as epoch
    seconds: the time-aware validation trains on older customers, tests on newer ones."""
    if not len(customer_ids):
        return np.empty(0)
    starts: dict[int, float] = {}
    for low in range(0, len(customer_ids), 10_000):
        part = [int(i) for i in customer_ids[low:low + 10_000]]
        first = (select(Interaction.customer_id,
                        func.min(Interaction.occurred_at).label("first"))
                 .where(Interaction.customer_id.in_(part))
                 .group_by(Interaction.customer_id).subquery())
        for cid, created, first_at in db.session.execute(
                select(Customer.id, Customer.created_at, first.c.first)
                .outerjoin(first, first.c.customer_id == Customer.id)
                .where(Customer.id.in_(part))):
            moment = min(created, first_at) if first_at is not None else created
            starts[cid] = _aware(moment).timestamp()
    return np.asarray([starts[int(i)] for i in customer_ids])


def _lookup(sorted_ids: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``values`` of ``wanted`` ids (NaN where absent); ``sorted_ids`` ascending."""
    out = np.full(len(wanted), np.nan)
    if not len(sorted_ids):
        return out
    at = np.clip(np.searchsorted(sorted_ids, wanted), 0, len(sorted_ids) - 1)
    found = sorted_ids[at] == wanted
    out[found] = values[at[found]]
    return out


def _metrics_dict(value: Any) -> Any:
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


def fit_models(as_of: dt.datetime | None = None, time_unit: str = "day",
               classifier: str = "logistic", horizon_days: int = 90,
               progress: Progress | None = None, *,
               chunk_size: int = features.DEFAULT_CHUNK) -> ChurnModelVersion:
    """Fit the models the data allow as of ``as_of`` and store them as the new active
    model version (module docstring): sBG when RAPPORT_CHURN_MODEL resolves to it; BG/NBD
    and Gamma-Gamma when there are purchases; the classifier with enough churn records. A
    part that cannot be fitted is skipped with the reason in the notes.

    Raises ``InvalidModelData`` (bad arguments) and ``InsufficientData`` when no part at all
    could be fitted; nothing is stored then.
    """
    unit = _checked_fit_args(time_unit, classifier, horizon_days)
    calibration = _aware(as_of)
    if calibration > utcnow() + dt.timedelta(minutes=5):
        raise InvalidModelData("the calibration date is in the future", "asOf")
    notes: list[str] = []
    features.refresh_statistics(calibration)
    summaries = _Summaries.collect(calibration, unit, chunk_size)
    chosen = _choose_model(churn_settings().model, summaries, calibration)
    bgnbd: BGNBDParams | None = None
    gamma_gamma: GammaGammaParams | None = None
    sbg_fits: dict[str, Any] = {}
    if chosen == MODEL_SBG:
        sbg_fits = _fit_sbg(calibration, notes)
        if any(isinstance(f, dict) for f in sbg_fits.values()):
            notes.append(_margin_note(features.feature_spec(calibration)))
    if len(summaries.customer_ids):
        # Purchases exist: BG/NBD and Gamma-Gamma describe them, whatever the model kind.
        try:
            bgnbd = _fit_bgnbd(summaries, unit, calibration.isoformat())
        except (InsufficientData, FitNotConverged) as exc:
            notes.append(f"no BG/NBD model: {exc.errors[0].message}")
        if bgnbd is not None:
            gamma_gamma, why = _fit_gamma_gamma(summaries)
            if why:
                notes.append(why)
            elif gamma_gamma is not None and gamma_gamma.warning:
                notes.append(gamma_gamma.warning)
        else:
            notes.append("no Gamma-Gamma model, so no purchase CLV: it needs BG/NBD")
    else:
        notes.append("no BG/NBD or Gamma-Gamma model: no customer has a purchase in "
                     f"{rapport().settings.base_currency} by {calibration.isoformat()}")

    t0 = calibration - dt.timedelta(days=horizon_days)
    spec = features.feature_spec(t0)
    trained: ChurnClassifier | None = None
    training: dict[str, Any] = {"as_of": t0.isoformat(), "horizon_days": horizon_days}
    metrics: dict[str, Any] = {}
    with_dropout = bgnbd is not None
    try:
        population, share = _training_share(t0)
        bgnbd_t0: BGNBDParams | None = None
        summaries_t0: _Summaries | None = None
        if with_dropout:
            summaries_t0 = _Summaries.collect(t0, unit, chunk_size, share)
            try:
                bgnbd_t0 = _fit_bgnbd(summaries_t0, unit, t0.isoformat())
            except (InsufficientData, FitNotConverged) as exc:
                # The classifier still learns from the other features.
                with_dropout = False
                notes.append(f"the classifier has no 1 - P(alive) feature: "
                             f"{exc.errors[0].message}")
        if bgnbd_t0 is not None and summaries_t0 is not None:
            metrics["validation"] = _backtest(bgnbd_t0, summaries_t0, t0, calibration, unit)
        data = _training_set(spec, calibration, bgnbd_t0, summaries_t0, chunk_size,
                             population, share, progress)
        training.update(customers=data.population, labelled=len(data.y),
                        churned=int(data.y.sum()))
        X, names = data.X, data.names
        if len(X) >= classifiers.MIN_LABELS:
            # Columns without information (no data, or a quantity counted twice) are
            # left out of the model and so of its explanations (factors.py).
            choice = factors.select_columns(X, names, features.feature_layout(spec))
            if not choice.kept:
                raise InsufficientData("no feature varies among the training customers")
            notes += choice.notes()
            X, names = X[:, choice.kept], tuple(names[j] for j in choice.kept)
            with_dropout = classifiers.DROPOUT_FEATURE in names
        result = classifiers.train_classifier(X, names, data.y, kind=classifier,
                                              label_dates=data.dates, trained_at=utcnow())
        trained = result.classifier
        metrics["classifier"] = {
            "kind": classifier, "trained_at": trained.trained_at.isoformat(),
            "cross_validation": _metrics_dict(trained.cross_validation),
            "time_validation": _metrics_dict(trained.time_validation),
            "notes": list(trained.notes)}
    except (InsufficientData, FitNotConverged) as exc:
        fallback = ("1 - P(alive)" if bgnbd is not None else
                    "the sBG churn probability of the next renewal" if sbg_fits else "none")
        notes.append(f"no classifier, risk = {fallback}: {exc.errors[0].message}")
    if bgnbd is None and trained is None and not any(
            isinstance(f, dict) for f in sbg_fits.values()):
        # Nothing at all to score with: say why rather than store an empty model.
        raise InsufficientData("no churn model could be fitted: " + "; ".join(notes))
    metrics.update(training=training, notes=notes, model=chosen)
    if bgnbd is not None:
        metrics["bgnbd"] = {"log_likelihood": bgnbd.log_likelihood,
                            "n_customers": bgnbd.n_customers,
                            "n_repeat_buyers": bgnbd.n_repeat_buyers,
                            "converged": bgnbd.optimiser.converged}
    if gamma_gamma is not None:
        metrics["gamma_gamma"] = {"log_likelihood": gamma_gamma.log_likelihood,
                                  "n_customers": gamma_gamma.n_customers,
                                  "frequency_monetary_correlation":
                                      gamma_gamma.frequency_monetary_correlation}
    params = {"model": chosen, "bgnbd": bgnbd.to_dict() if bgnbd else None,
              "gamma_gamma": gamma_gamma.to_dict() if gamma_gamma else None,
              "sbg": sbg_fits or None, "dropout_feature": with_dropout,
              "feature_spec": spec.to_json(), "horizon_days": horizon_days,
              "classifier": trained.kind if trained else None}
    if trained:
        kind = trained.kind
    elif chosen == MODEL_SBG:
        kind = "sbg"
    else:
        kind = "bgnbd+gg" if gamma_gamma else "bgnbd"
    with transaction():
        db.session.execute(update(ChurnModelVersion).where(ChurnModelVersion.active.is_(True))
                           .values(active=False))
        version = ChurnModelVersion(
            as_of=calibration, time_unit=unit, kind=kind, params=params, metrics=metrics,
            feature_names=list(trained.feature_names) if trained else [],
            artifact=trained.to_bytes(key=_key()) if trained else None, active=True)
        db.session.add(version)
        db.session.flush()
        changes.record(None, [], {"modelVersion": [None, version.id], "kind": [None, kind],
                                  "asOf": [None, calibration]})
    return version


def _key() -> bytes:
    return rapport().settings.secret_key.encode()


# --- The active model ------------------------------------------------------------------------


@dataclass
class LoadedModel:
    version: ChurnModelVersion
    bgnbd: BGNBDParams | None
    gamma_gamma: GammaGammaParams | None
    spec: features.FeatureSpec
    classifier: ChurnClassifier | None
    #: (alpha, beta) of the sBG fit per renewal period length, when the model has one.
    sbg: dict[str, tuple[float, float]] = field(default_factory=dict)
    _layout: dict[str, features.FactorColumn] | None = field(default=None, repr=False)
    _grouping: factors.FactorGrouping | None = field(default=None, repr=False)

    @property
    def time_unit(self) -> TimeUnit:
        return self.version.time_unit

    def layout(self) -> dict[str, features.FactorColumn]:
        """The factor of each column of the feature table (one query, then kept)."""
        if self._layout is None:
            self._layout = features.feature_layout(self.spec)
        return self._layout

    def table_names(self) -> list[str]:
        return list(self.layout())

    def grouping(self) -> factors.FactorGrouping:
        if self._grouping is None:
            assert self.classifier is not None
            self._grouping = factors.FactorGrouping.build(
                self.layout(), self.table_names(), self.classifier.feature_names)
        return self._grouping

    def classifier_columns(self) -> list[int]:
        """Positions in the feature table of the classifier's columns (the BG/NBD dropout
        probability, appended after them, excepted)."""
        assert self.classifier is not None
        position = {name: i for i, name in enumerate(self.table_names())}
        return [position[n] for n in self.classifier.feature_names
                if n != classifiers.DROPOUT_FEATURE]


def active_version() -> ChurnModelVersion | None:
    return db.session.scalars(select(ChurnModelVersion).where(
        ChurnModelVersion.active.is_(True)).order_by(ChurnModelVersion.id.desc())
        .limit(1)).first()


def load_active_model() -> LoadedModel:
    version = active_version()
    if version is None:
        raise NoModel("no churn model is fitted yet: run `rapport churn fit` first")
    return load_model(version)


# --- Scoring ----------------------------------------------------------------------------------


@dataclass
class ScoreSummary:
    model_version: int
    scored_at: dt.datetime
    customers: int = 0
    with_purchases: int = 0
    mean_risk: float = 0.0
    high_risk: int = 0
    total_clv: float = 0.0
    removed_old_scores: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class ScoredChunk:
    customer_ids: np.ndarray
    risk: np.ndarray
    p_alive: np.ndarray          # NaN: no purchase
    frequency: np.ndarray        # NaN: no purchase
    recency: np.ndarray
    T: np.ndarray
    expected_aov: np.ndarray     # NaN: no purchase or no Gamma-Gamma
    clv: np.ndarray
    priority: np.ndarray
    #: Top factors as (column index into ``factor_names``, rounded contribution), rows x k;
    #: a contribution of exactly 0 is no factor. Empty (rows x 0) without a classifier.
    factor_index: np.ndarray
    factor_value: np.ndarray
    factor_names: tuple[str, ...] = ()

    def top_factors(self) -> list[list[dict[str, Any]]]:
        """Per customer, ``[{"feature", "contribution"}, ...]`` (the stored JSON)."""
        names = self.factor_names
        return [[{"feature": names[j], "contribution": v} for j, v in zip(picks, row) if v != 0]
                for picks, row in zip(self.factor_index.tolist(), self.factor_value.tolist())]

    def top_factors_json(self) -> list[str]:
        """The same as JSON texts, built from per-feature templates (a million customers
        make five million factors: no dict and no json.dumps per factor)."""
        head = [f'{{"feature": {json.dumps(name)}, "contribution": '
                for name in self.factor_names]
        return ["[" + ", ".join([head[j] + repr(v) + "}" for j, v in zip(picks, row) if v != 0])
                + "]"
                for picks, row in zip(self.factor_index.tolist(), self.factor_value.tolist())]


def chunk_statements(model: LoadedModel, customers: Any, id_range: features.IdRange,
                     now: dt.datetime) -> list[Select[Any]]:
    """The feature query and the BTYD summary query of one keyset chunk."""
    spec = model.spec.at(now)
    btyd_stmt = features.btyd_select(customers, now, model.time_unit, spec.base_currency,
                                     id_range)
    return [features.feature_select(customers, spec, id_range)
            .order_by(customers.c.customer_id),
            btyd_stmt.order_by(btyd_stmt.selected_columns.customer_id)]


def score_chunk(model: LoadedModel, table: np.ndarray, summary: np.ndarray,
                settings: ChurnSettings) -> ScoredChunk | None:
    """P(alive), CLV, risk and top factors of one chunk from its feature matrix (customer
    id first) and BTYD summary matrix (``chunk_statements``)."""
    if not len(table):
        return None
    ids = table[:, 0].astype(np.int64)
    summary = summary.reshape(-1, 5)
    summary_ids = summary[:, 0].astype(np.int64)
    x, tx, age, m = (_lookup(summary_ids, summary[:, i], ids) for i in (1, 2, 3, 4))
    bought = ~np.isnan(x)
    alive = np.full(len(ids), np.nan)
    aov = np.full(len(ids), np.nan)
    clv = np.full(len(ids), np.nan)
    if bought.any() and model.bgnbd is not None:
        xb, txb, ab = x[bought], tx[bought], age[bought]
        alive[bought] = btyd.probability_alive(model.bgnbd, xb, txb, ab)
        if model.gamma_gamma is not None:
            mb = np.where(xb > 0, np.nan_to_num(m[bought]), 0.0)
            aov[bought] = btyd.expected_order_value(model.gamma_gamma, xb, mb)
            unit_days = 7.0 if model.time_unit == TimeUnit.WEEK else 1.0
            clv[bought] = btyd.customer_lifetime_value(
                model.bgnbd, model.gamma_gamma, xb, txb, ab, mb,
                periods=settings.clv_horizon_months, period_length=MONTH_DAYS / unit_days,
                discount_rate=settings.monthly_discount_rate)
    if model.classifier is not None:
        columns = model.classifier_columns()
        X = table[:, 1:][:, columns]
        if tuple(model.classifier.feature_names)[-1:] == (classifiers.DROPOUT_FEATURE,):
            X, _ = classifiers.with_dropout_feature(
                X, model.classifier.feature_names[:-1], alive)
        supervised = model.classifier.predict_risk(X)
        explained = model.classifier.explain(X)
        grouping = model.grouping()
        factor_index, factor_value = grouping.top(explained.contributions, table[:, 1:],
                                                  TOP_FACTORS)
        factor_value = np.round(factor_value, 6)
        factor_names = grouping.names
        risk, _ = classifiers.churn_risk(_base_alive(model, table, bought, alive), supervised)
    else:
        risk, _ = classifiers.churn_risk(_base_alive(model, table, bought, alive))
        factor_index = np.empty((len(ids), 0), dtype=np.intp)
        factor_value = np.empty((len(ids), 0))
        factor_names = ()
    valued = _subscriber_clv(model, table, bought, alive, clv, settings)
    risk = np.clip(risk, 0.0, 1.0)
    # Without a Gamma-Gamma model nor a subscriber margin nobody has a CLV: rank by risk
    # alone rather than tie everyone at 0. With one, a customer without a CLV has no
    # value to save (0).
    priority = (risk * np.nan_to_num(clv) if model.gamma_gamma is not None or valued
                else risk.copy())
    return ScoredChunk(ids, risk, alive, x, tx, age, aov, clv, priority, factor_index,
                       factor_value, factor_names)


def _subscribers(model: LoadedModel, table: np.ndarray, bought: np.ndarray,
                 alive: np.ndarray) -> Iterator[tuple[str, float, float, np.ndarray,
                                                      np.ndarray]]:
    """Per fitted sBG period: (period, alpha, beta, the rows of its subscribers, their
    completed periods). A subscriber is a customer with ``tenure_periods`` and no BG/NBD
    P(alive) (a buyer of a BG/NBD model is described by that model)."""
    if not (model.sbg and model.spec.contract):
        return
    names = model.table_names()
    tenure = table[:, 1 + names.index("tenure_periods")]
    known = table[:, 1 + names.index("tenure_periods_missing")] == 0
    yearly = table[:, 1 + names.index("period_year")] == 1
    described = bought & ~np.isnan(alive)
    for period, (a, b) in model.sbg.items():
        rows = known & (yearly if period == "year" else ~yearly) & ~described
        yield period, a, b, rows, tenure


def _base_alive(model: LoadedModel, table: np.ndarray, bought: np.ndarray,
                alive: np.ndarray) -> np.ndarray:
    """P(alive) where BG/NBD gives one; for subscribers of an sBG model the probability
    of renewing at the end of the current period, (beta + n) / (alpha + beta + n); else 1."""
    base = np.where(bought & ~np.isnan(alive), alive, 1.0)
    for _, a, b, rows, tenure in _subscribers(model, table, bought, alive):
        base[rows] = (b + tenure[rows]) / (a + b + tenure[rows])
    return base


def margin_column(spec: features.FeatureSpec, attribute: str,
                  layout: dict[str, features.FactorColumn] | None = None) -> str | None:
    """The feature column holding the margin per renewal period: the declared number
    attribute named by RAPPORT_CHURN_MARGIN_ATTRIBUTE, or None."""
    if not any(key == attribute and kind == "number" for key, kind, _ in spec.attributes):
        return None
    if layout is None:
        empty = select(Customer.id.label("customer_id")).where(Customer.id < 0).subquery()
        layout = {}
        features.feature_select(empty, spec, layout=layout)
    return next((name for name, c in layout.items()
                 if c.group == f"attr:{attribute}" and c.role == "value"), None)


def period_discount_rate(settings: ChurnSettings, period: str) -> float:
    """RAPPORT_CHURN_DISCOUNT_RATE (yearly) as the rate of one renewal period."""
    return settings.discount_rate if period == "year" else settings.monthly_discount_rate


def _subscriber_clv(model: LoadedModel, table: np.ndarray, bought: np.ndarray,
                    alive: np.ndarray, clv: np.ndarray, settings: ChurnSettings) -> bool:
    """Fill ``clv`` of the sBG subscribers that have a margin: DERL (their completed
    periods, the period's discount rate) x margin per period. Whether subscribers can have
    a CLV at all (an sBG fit, a margin attribute, a discount rate above 0)."""
    if not model.sbg or settings.discount_rate <= 0:
        return False
    column = margin_column(model.spec, settings.margin_attribute, model.layout())
    if column is None:
        return False
    from plugins.churn import sbg

    names = model.table_names()
    margin = table[:, 1 + names.index(column)]
    has_margin = table[:, 1 + names.index(f"{column}_missing")] == 0
    for period, a, b, rows, tenure in _subscribers(model, table, bought, alive):
        rows = rows & has_margin
        if rows.any():
            clv[rows] = sbg.subscriber_lifetime_value(
                (a, b), tenure[rows], margin[rows], period_discount_rate(settings, period))
    return True


def _nullable(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _score_rows(chunk: ScoredChunk, version_id: int, now: dt.datetime
                ) -> list[dict[str, Any]]:
    factors = chunk.top_factors()
    return [{"customer_id": int(cid), "model_version_id": version_id, "scored_at": now,
             "risk": float(chunk.risk[i]), "p_alive": _nullable(chunk.p_alive[i]),
             "frequency": None if math.isnan(chunk.frequency[i]) else int(chunk.frequency[i]),
             "recency": _nullable(chunk.recency[i]), "T": _nullable(chunk.T[i]),
             "expected_aov": _nullable(chunk.expected_aov[i]), "clv": _nullable(chunk.clv[i]),
             "priority": float(chunk.priority[i]), "top_factors": factors[i]}
            for i, cid in enumerate(chunk.customer_ids)]


_COPIED = ("customer_id", "model_version_id", "scored_at", "risk", "p_alive", "frequency",
           "recency", "T", "expected_aov", "clv", "priority", "top_factors")


def _text_cells(values: np.ndarray, integer: bool = False) -> list[str]:
    """COPY text cells of a float column: ``\\N`` for NaN."""
    if integer:
        return ["\\N" if v != v else str(int(v)) for v in values.tolist()]
    return ["\\N" if v != v else repr(v) for v in values.tolist()]


_STAGED = ("run_id", "customer_id", "risk", "p_alive", "frequency", "recency", "T",
           "expected_aov", "clv", "priority", "top_factors")
_STAGING_COPY = ("COPY churn_score_staging (" + ", ".join(f'"{c}"' for c in _STAGED)
                 + ") FROM STDIN")


def _copy_in(driver: Any, sql: str, block: str) -> None:
    """COPY a block on the chunk's own connection (its transaction)."""
    with driver.cursor() as cursor, cursor.copy(sql) as copy:
        copy.write(block)


class _Writer:
    """Writes chunks on the run's connection from a thread, one at a time, so that the
    database stores chunk i (index and key checks: about half a second per 20,000 scores)
    while Python scores chunk i + 1. Between ``write`` and ``wait`` nothing else may use
    the session: the scoring loop runs no query then (``customer_chunks`` reads its ids
    up front, the read-ahead has its own connection)."""

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.driver = db.session.connection().connection.driver_connection
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="churn-score-writer")
        self.pending: Future[None] | None = None

    def write(self, block: str) -> None:
        self.wait()
        self.pending = self.pool.submit(_copy_in, self.driver, self.sql, block)

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)


def count_scorable(now: dt.datetime) -> int:
    return db.session.scalar(select(func.count()).select_from(Customer).where(
        features._existing_by(now))) or 0


#: An open run of the CLI (no job to ask about) counts as abandoned after this long.
CLI_RUN_ABANDONED_AFTER = dt.timedelta(hours=1)
MAX_SCORE_PARTS = 256


class ScoringInProgress(ChurnModelError):
    code = ChurnErrorCode.SCORING_IN_PROGRESS


class ScoringRunClosed(ChurnModelError):
    code = ChurnErrorCode.SCORING_RUN_CLOSED


@dataclass
class ScoringPlan:
    """A run opened by ``plan_scoring``: score each id range (``score_range``), then
    ``publish_run``."""

    run_id: int
    model_version: int
    scored_at: dt.datetime
    customers: int
    #: (after, up_to]: contiguous ranges of customer ids, about the same count in each.
    ranges: list[features.IdRange]
    #: Customers in each range (as planned).
    sizes: list[int]


@dataclass
class RangeTotals:
    """What one chunk scored (a chunk job's result)."""

    customers: int = 0
    with_purchases: int = 0
    high_risk: int = 0
    risk_sum: float = 0.0
    clv_sum: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"customers": self.customers, "withPurchases": self.with_purchases,
                "highRisk": self.high_risk, "riskSum": self.risk_sum, "clvSum": self.clv_sum}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RangeTotals:
        return cls(int(data["customers"]), int(data["withPurchases"]), int(data["highRisk"]),
                   float(data["riskSum"]), float(data["clvSum"]))


def load_model(version: ChurnModelVersion) -> LoadedModel:
    """The version ready to score: its factor layout is read here (one query), before a
    scoring run hands its connection to the writer thread between chunks."""
    params = version.params
    gg = params.get("gamma_gamma")
    model = LoadedModel(
        version=version,
        bgnbd=BGNBDParams.from_dict(params["bgnbd"]) if params.get("bgnbd") else None,
        sbg={period: (fit["alpha"], fit["beta"]) for period, fit in
             (params.get("sbg") or {}).items() if isinstance(fit, dict)},
        gamma_gamma=GammaGammaParams.from_dict(gg) if gg else None,
        spec=features.FeatureSpec.from_json(params["feature_spec"]),
        classifier=classifiers.ChurnClassifier.from_bytes(version.artifact, key=_key())
        if version.artifact else None)
    model.layout()
    if model.classifier is not None:
        model.grouping()
    return model


def _check_features(model: LoadedModel, now: dt.datetime) -> None:
    """Every column the classifier was trained on is still computed (a column it left out
    may come or go: a plugin installed or removed that it did not use)."""
    if model.classifier is not None:
        available = set(features.feature_names(model.spec.at(now)))
        if any(n not in available and n != classifiers.DROPOUT_FEATURE
               for n in model.classifier.feature_names):
            raise FeaturesChanged(
                "the installed plugins give other churn features than the model was "
                "trained on: run `rapport churn fit` again")


def _close_abandoned_runs(now: dt.datetime) -> None:
    """An open run whose job ended (or whose CLI process is long gone) will never publish:
    fail it, so it no longer blocks the next run."""
    from core.job_tables import FINISHED, Job

    for run in db.session.scalars(select(ChurnScoreRun).where(
            ChurnScoreRun.status == ScoringRunStatus.OPEN).with_for_update()):
        if run.job_id is not None:
            status = db.session.scalar(select(Job.status).where(Job.id == run.job_id))
            gone = status is None or status in FINISHED
        else:
            gone = now - run.created_at > CLI_RUN_ABANDONED_AFTER
        if gone:
            run.status, run.finished_at = ScoringRunStatus.FAILED, now
            run.message = "abandoned: its job or process ended before publishing"


def split_ids(ids: np.ndarray, parts: int, batch: int) -> list[tuple[features.IdRange, int]]:
    """Up to ``parts`` contiguous (after, up_to] ranges of ``ids`` (ascending), with their
    counts, each made of whole batches of ``batch`` ids counted from the first id.

    Whole batches make a split run equal a one-chunk run to the last bit: every customer
    is scored in the same batch of customers either way, and the classifier's matrix
    products round differently for a row in a batch of another shape (1 ulp, measured)."""
    if not len(ids):
        return []
    batches = -(-len(ids) // batch)
    ranges, after = [], int(ids[0]) - 1
    for group in np.array_split(np.arange(batches), min(parts, batches)):
        first, last = int(group[0]) * batch, min((int(group[-1]) + 1) * batch, len(ids))
        ranges.append(((after, int(ids[last - 1])), last - first))
        after = int(ids[last - 1])
    return ranges


def plan_scoring(parts: int = 1, job_id: int | None = None,
                 chunk_size: int = DEFAULT_SCORE_CHUNK,
                 as_of: dt.datetime | None = None) -> ScoringPlan:
    """Open a scoring run with the active model: fix its clock and split the scorable
    customers into ``parts`` id ranges of whole ``chunk_size`` batches (``split_ids``).

    Raises ``NoModel``, ``FeaturesChanged``, ``ModelFormatError``, and ``ScoringInProgress``
    while another run is open (one at a time: two runs' chunks would only slow each
    other down, and the later publish would win anyway)."""
    if not isinstance(parts, int) or not 1 <= parts <= MAX_SCORE_PARTS:
        raise InvalidModelData(f"the number of chunks must be from 1 to {MAX_SCORE_PARTS}",
                               "chunks")
    features.refresh_statistics(utcnow())
    try:
        with transaction():
            model = load_active_model()
            # Scored as of a past date (``as_of``): features and BTYD summaries from the
            # facts dated by then; the run's clock is that date.
            now = _scoring_moment(as_of, model)
            _check_features(model, now)
            _close_abandoned_runs(utcnow())
            busy = db.session.scalars(select(ChurnScoreRun).where(
                ChurnScoreRun.status == ScoringRunStatus.OPEN)).first()
            if busy is not None:
                raise ScoringInProgress(
                    f"scoring run {busy.id} (started {busy.created_at:%Y-%m-%d %H:%M} UTC) "
                    f"is still open: wait for it to finish, or cancel its job")
            ids = features.fetch_matrix(select(Customer.id).where(
                features._existing_by(now)).order_by(Customer.id))[:, 0]
            if not len(ids) and as_of is not None and db.session.scalar(
                    select(ChurnScore.customer_id).limit(1)) is not None:
                # Publishing an empty run would remove every current score (a mistyped
                # year, say): refuse, and keep them.
                raise InsufficientData(
                    f"no customer existed at {now:%Y-%m-%d %H:%M} UTC: nothing to score, and "
                    f"the current scores are kept", "asOf")
            split = split_ids(ids, parts, chunk_size)
            run = ChurnScoreRun(model_version_id=model.version.id,
                                status=ScoringRunStatus.OPEN, scored_at=now,
                                chunks=len(split), job_id=job_id)
            db.session.add(run)
            db.session.flush()
            return ScoringPlan(run.id, model.version.id, now, len(ids),
                               [r for r, _ in split], [n for _, n in split])
    except IntegrityError:
        # Another run opened between our look and our insert (the unique open index).
        raise ScoringInProgress("another scoring run was opened at the same moment: wait "
                                "for it to finish") from None


def _scoring_moment(as_of: dt.datetime | None, model: LoadedModel) -> dt.datetime:
    if as_of is None:
        return utcnow()
    moment = _aware(as_of)
    if moment > utcnow() + dt.timedelta(minutes=5):
        raise InvalidModelData("the scoring date is in the future", "asOf")
    return moment


def _open_run(run_id: int) -> ChurnScoreRun:
    run = db.session.get(ChurnScoreRun, run_id)
    if run is None or run.status is not ScoringRunStatus.OPEN:
        raise ScoringRunClosed(f"scoring run {run_id} is no longer open "
                               f"({run.status.value if run else 'unknown'}"
                               f"{': ' + run.message if run and run.message else ''})")
    return run


def _stage_copy_block(chunk: ScoredChunk, run_id: int) -> str:
    """The chunk's staged rows as COPY text, built column by column."""
    n = len(chunk.customer_ids)
    factors = [f.replace("\\", "\\\\") for f in chunk.top_factors_json()]
    columns = [
        [str(run_id)] * n, [str(v) for v in chunk.customer_ids.tolist()],
        _text_cells(chunk.risk), _text_cells(chunk.p_alive),
        _text_cells(chunk.frequency, integer=True), _text_cells(chunk.recency),
        _text_cells(chunk.T), _text_cells(chunk.expected_aov), _text_cells(chunk.clv),
        _text_cells(chunk.priority), factors]
    return "".join("\t".join(row) + "\n" for row in zip(*columns))


def _stage_rows(chunk: ScoredChunk, run_id: int) -> list[dict[str, Any]]:
    return [{**{k: v for k, v in row.items() if k not in ("model_version_id", "scored_at")},
             "run_id": run_id} for row in _score_rows(chunk, 0, utcnow())]


def score_range(run_id: int, id_range: features.IdRange,
                chunk_size: int = DEFAULT_SCORE_CHUNK, progress: Progress | None = None,
                expected: int | None = None) -> RangeTotals:
    """Score the customers of one id range of an open run into its staging rows, in one
    transaction of its own. Chunks of a run share no lock: each writes only its own
    range's rows of a table without foreign keys, and reads the run row without locking
    it. Running a range again (a retried job) replaces what it wrote. ``expected``: the
    range's customer count from the plan (for progress)."""
    if not isinstance(chunk_size, int) or not 100 <= chunk_size <= 200_000:
        raise InvalidModelData("the chunk size must be from 100 to 200,000 customers",
                               "chunkSize")
    settings = churn_settings()
    totals = RangeTotals()
    with transaction():
        run = _open_run(run_id)
        version = db.session.get(ChurnModelVersion, run.model_version_id)
        assert version is not None
        model = load_model(version)
        now = run.scored_at
        postgresql = db.session.get_bind().dialect.name == "postgresql"
        staged = ChurnScoreStaging.__table__
        db.session.execute(delete(staged).where(
            staged.c.run_id == run_id, staged.c.customer_id > id_range[0],
            staged.c.customer_id <= id_range[1]))
        chunks = list(features.customer_chunks(now, chunk_size, within=id_range))
        if progress and expected is None:
            expected = _range_size(now, id_range)
        if progress:
            progress(0, expected or 0)
        jobs = ((r, chunk_statements(model, customers, r, now)) for customers, r in chunks)
        writer = _Writer(_STAGING_COPY) if postgresql else None
        try:
            for _, (table, summary_matrix) in features.matrices_ahead(
                    jobs, before_session=writer.wait if writer is not None else None):
                chunk = score_chunk(model, table, summary_matrix, settings)
                if chunk is None:
                    continue
                if writer is not None:
                    writer.write(_stage_copy_block(chunk, run_id))
                else:
                    db.session.execute(staged.insert(), _stage_rows(chunk, run_id))
                totals.customers += len(chunk.customer_ids)
                totals.with_purchases += int((~np.isnan(chunk.frequency)).sum())
                totals.high_risk += int((chunk.risk >= 0.5).sum())
                totals.risk_sum += float(chunk.risk.sum())
                totals.clv_sum += float(np.nansum(chunk.clv))
                if progress:
                    progress(totals.customers, max(expected or 0, totals.customers))
        finally:
            if writer is not None:
                writer.close()
        db.session.expire(run)
        _open_run(run_id)  # cancelled or failed meanwhile: roll our rows back
    return totals


def _range_size(now: dt.datetime, id_range: features.IdRange) -> int:
    return db.session.scalar(select(func.count()).select_from(Customer).where(
        features._existing_by(now), Customer.id > id_range[0],
        Customer.id <= id_range[1])) or 0


def publish_run(run_id: int, chunk_totals: list[RangeTotals]) -> ScoreSummary:
    """Make an open run's scores the current ones, in one transaction: readers see the
    previous run's scores until it commits, then all of this one's.

    The staged rows must number what the chunks reported (a database crash empties the
    unlogged staging table): otherwise the run fails and nothing changes."""
    with transaction():
        postgresql = db.session.get_bind().dialect.name == "postgresql"
        if postgresql:
            # Publishing steps run one at a time (a second waits for the first to commit);
            # chunks never take this lock.
            db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCORE_LOCK})
        run = _open_run(run_id)
        db.session.refresh(run, with_for_update=True)
        if run.status is not ScoringRunStatus.OPEN:
            raise ScoringRunClosed(f"scoring run {run_id} is no longer open")
        version_id, now = run.model_version_id, run.scored_at
        version = db.session.get(ChurnModelVersion, version_id)
        assert version is not None
        reported = sum(t.customers for t in chunk_totals)
        staged = ChurnScoreStaging.__table__
        found = db.session.scalar(select(func.count()).select_from(staged).where(
            staged.c.run_id == run_id)) or 0
        if found != reported:
            raise ScoringRunClosed(f"scoring run {run_id}: {found} staged scores where its "
                                   f"chunks wrote {reported} (was the database restarted?); "
                                   f"score again")
        db.session.execute(delete(ChurnScore).where(ChurnScore.model_version_id == version_id))
        removed = db.session.execute(delete(ChurnScore).where(
            ChurnScore.model_version_id != version_id)).rowcount  # type: ignore[attr-defined]
        copied = [c for c in _COPIED if c not in ("customer_id", "model_version_id",
                                                  "scored_at")]
        # A customer erased or merged away while the run was open is not published.
        source = (select(staged.c.customer_id, literal(version_id).label("model_version_id"),
                         literal(now, UTCDateTime).label("scored_at"),
                         *[staged.c[c] for c in copied])
                  .join(Customer, Customer.id == staged.c.customer_id)
                  .where(staged.c.run_id == run_id, Customer.status != CustomerStatus.ERASED)
                  .order_by(staged.c.customer_id))
        db.session.execute(ChurnScore.__table__.insert().from_select(list(_COPIED), source))
        # Counted, not taken from the cursor: psycopg may report -1 for INSERT ... SELECT.
        published = db.session.scalar(select(func.count()).select_from(ChurnScore).where(
            ChurnScore.model_version_id == version_id)) or 0
        # Other runs' rows are leftovers of failed runs (one run is open at a time).
        db.session.execute(delete(staged))
        run.status, run.finished_at, run.customers = (ScoringRunStatus.PUBLISHED, utcnow(),
                                                      published)
        summary = ScoreSummary(model_version=version_id, scored_at=now)
        summary.customers = sum(t.customers for t in chunk_totals)
        summary.with_purchases = sum(t.with_purchases for t in chunk_totals)
        summary.high_risk = sum(t.high_risk for t in chunk_totals)
        risk_sum = sum(t.risk_sum for t in chunk_totals)
        summary.total_clv = sum(t.clv_sum for t in chunk_totals)
        summary.mean_risk = risk_sum / summary.customers if summary.customers else 0.0
        summary.removed_old_scores = removed
        if published != summary.customers:
            summary.notes.append(f"{summary.customers - published} customers erased or "
                                 f"merged during the run were not published")
        if not version.artifact:
            summary.notes.append("no classifier in this model: risk = 1 - P(alive)")
        if not version.params.get("gamma_gamma"):
            summary.notes.append("no Gamma-Gamma model: no CLV, priorities are the risks")
        scored = {"modelVersion": summary.model_version, "customers": summary.customers,
                  "highRisk": summary.high_risk, "meanRisk": round(summary.mean_risk, 6),
                  "scoredAt": now}
        changes.record(None, [], {k: [None, v] for k, v in scored.items()}, [changes.Event(
            "churn.scores.updated", global_id("ChurnModel", summary.model_version), scored)])
    return summary


def abandon_run(run_id: int, reason: str) -> None:
    """Fail an open run and drop what its chunks staged (idempotent). A chunk still
    running finds the run closed when it ends and rolls its own rows back."""
    with transaction():
        db.session.execute(update(ChurnScoreRun).where(
            ChurnScoreRun.id == run_id, ChurnScoreRun.status == ScoringRunStatus.OPEN).values(
            status=ScoringRunStatus.FAILED, finished_at=utcnow(), message=reason[:500]))
        staged = ChurnScoreStaging.__table__
        db.session.execute(delete(staged).where(staged.c.run_id == run_id))


def score_customers(chunk_size: int = DEFAULT_SCORE_CHUNK, progress: Progress | None = None,
                    parts: int = 1, as_of: dt.datetime | None = None) -> ScoreSummary:
    """Score every non-erased customer with the active model, here: plan a run, score its
    ``parts`` ranges one after the other, publish it (the churn.score job runs the ranges
    as child jobs on any workers instead).

    Raises ``NoModel`` without an active model version, ``FeaturesChanged`` when the
    installed plugins no longer give the columns the classifier was trained on,
    ``ModelFormatError`` for a stored classifier that cannot be read back and
    ``ScoringInProgress`` while another run is open.
    """
    if not isinstance(chunk_size, int) or not 100 <= chunk_size <= 200_000:
        raise InvalidModelData("the chunk size must be from 100 to 200,000 customers",
                               "chunkSize")
    plan = plan_scoring(parts, chunk_size=chunk_size, as_of=as_of)
    try:
        done = 0
        if progress:
            progress(0, plan.customers)
        totals = []
        for id_range, size in zip(plan.ranges, plan.sizes):
            def advance(count: int, _total: int, before: int = done) -> None:
                if progress:
                    progress(min(before + count, plan.customers), plan.customers)

            totals.append(score_range(plan.run_id, id_range, chunk_size, advance, size))
            done += totals[-1].customers
        summary = publish_run(plan.run_id, totals)
        if progress:
            progress(summary.customers, max(plan.customers, summary.customers))
        return summary
    except BaseException as exc:
        abandon_run(plan.run_id, f"stopped: {exc!r}")
        raise


# --- Reading scores ---------------------------------------------------------------------------


def current_version_id() -> ScalarSelect[Any]:
    """The model version whose scores are read: the newest one with scores (after a scoring
    run, the only one). The (model_version_id, ...) index answers it."""
    return select(func.max(ChurnScore.model_version_id)).scalar_subquery()


def scores_of(customer_ids: list[int]) -> dict[int, ChurnScore]:
    return {s.customer_id: s for s in db.session.scalars(select(ChurnScore).where(
        ChurnScore.customer_id.in_(customer_ids),
        ChurnScore.model_version_id == current_version_id()))}


def expected_purchases(version: ChurnModelVersion, score: ChurnScore, days: float
                       ) -> float | None:
    """E[purchases in the next ``days`` days] from the stored summary, in the model's unit."""
    if (score.frequency is None or score.recency is None or score.T is None
            or not version.params.get("bgnbd")):
        return None
    unit_days = 7.0 if version.time_unit == TimeUnit.WEEK else 1.0
    params = BGNBDParams.from_dict(version.params["bgnbd"])
    return float(btyd.expected_purchases(params, days / unit_days, [score.frequency],
                                         [score.recency], [score.T])[0])


def still_customer() -> Any:
    """Not already churned: no open churn record (those are for win-back, not warnings).
    Every warning list uses it: the CSV, the API and the HTML report."""
    return ~select(ChurnRecord.id).where(
        ChurnRecord.customer_id == ChurnScore.customer_id,
        ChurnRecord.reactivated_at.is_(None)).exists()


#: The order of the warning list (the API's pages and the CSV's): biggest priority first.
WARNING_ORDER = Keyset((ChurnScore.priority, ChurnScore.customer_id), (float, int),
                       descending=True, key=lambda s: [float(s.priority), s.customer_id])


def warnings_query(min_risk: float = 0.0) -> Select[Any]:
    """Scores of the current version with risk >= ``min_risk`` of customers not already
    marked churned, biggest priority first."""
    return (select(ChurnScore).where(ChurnScore.model_version_id == current_version_id(),
                                     ChurnScore.risk >= min_risk, still_customer())
            .order_by(*WARNING_ORDER.ordering()))


def _factor_text(factors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{f['feature']} {f['contribution']:+.3f}" for f in factors)


def _cell(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula is quoted."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


WARNING_COLUMNS = ["customer_id", "external_ids", "name", "email", "phone", "owner", "risk",
                   "p_alive", "clv", "priority", "top_factors"]


def warning_rows(min_risk: float = 0.0, limit: int | None = None, page: int = 1000
                 ) -> Iterator[list[Any]]:
    """CSV rows of the warning list (``WARNING_COLUMNS``), in keyset pages of ``page``."""
    if not 0.0 <= min_risk <= 1.0:
        raise InvalidModelData("the minimum risk must be from 0 to 1", "minRisk")
    if limit is not None and limit < 1:
        raise InvalidModelData("the limit must be at least 1", "limit")
    written = 0
    after: tuple[float, int] | None = None
    while limit is None or written < limit:
        size = page if limit is None else min(page, limit - written)
        stmt = (select(ChurnScore, Customer, Agent)
                .join(Customer, Customer.id == ChurnScore.customer_id)
                .outerjoin(Agent, Agent.id == Customer.owner_id)
                .where(ChurnScore.model_version_id == current_version_id(),
                       ChurnScore.risk >= min_risk, still_customer(),
                       Customer.status != CustomerStatus.ERASED))
        if after is not None:
            stmt = stmt.where(WARNING_ORDER.after(after))
        found = db.session.execute(stmt.order_by(*WARNING_ORDER.ordering()).limit(size)).all()
        if not found:
            return
        ids = [score.customer_id for score, _, _ in found]
        external: dict[int, list[str]] = {}
        for cid, source, external_id in db.session.execute(
                select(CustomerExternalId.customer_id, CustomerExternalId.source,
                       CustomerExternalId.external_id)
                .where(CustomerExternalId.customer_id.in_(ids))
                .order_by(CustomerExternalId.source, CustomerExternalId.external_id)):
            external.setdefault(cid, []).append(f"{source}:{external_id}")
        for score, person, owner in found:
            yield [_cell(v) for v in (
                global_id("Customer", score.customer_id),
                " ".join(external.get(score.customer_id, [])),
                person.name or "", person.email or "", person.phone or "",
                f"{owner.name} <{owner.email}>" if owner is not None else "",
                f"{score.risk:.4f}", "" if score.p_alive is None else f"{score.p_alive:.4f}",
                "" if score.clv is None else f"{score.clv:.2f}", f"{score.priority:.2f}",
                _factor_text(score.top_factors or []))]
        written += len(found)
        last = found[-1][0]
        after = (last.priority, last.customer_id)


def write_warnings(handle: io.TextIOBase | Any, min_risk: float = 0.0,
                   limit: int | None = None) -> int:
    """Write the warning list as CSV to ``handle``; the number of customers written.
    ``NoModel`` when nothing was scored yet."""
    if db.session.scalar(select(func.max(ChurnScore.model_version_id))) is None:
        raise NoModel("no churn scores yet: run `rapport churn fit`, then `rapport churn score`")
    writer = csv.writer(handle)
    writer.writerow(WARNING_COLUMNS)
    count = 0
    for row in warning_rows(min_risk, limit):
        writer.writerow(row)
        count += 1
    return count

