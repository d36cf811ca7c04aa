"""Fitting and scoring: ``fit_models`` turns the database into a stored model version,
``score_customers`` turns a model version into a score per customer (docs/churn.md,
"Models and scores").

Fitting, as of a calibration date ``as_of`` (default now):

1. BTYD summaries as of ``as_of`` -> BG/NBD, then Gamma-Gamma on the repeat buyers (base
   currency). BG/NBD is required: too few customers or no repeat buyer is a typed error and
   nothing is stored. A Gamma-Gamma that cannot be fitted leaves CLV empty and says why in
   the metrics.
2. The classifier, honest in time: with ``t0 = as_of - horizon``, the training customers are
   those that existed by ``t0`` and were not churned at ``t0``; their features are computed
   as of ``t0`` (with 1 - P(alive) from a BG/NBD fitted on the summaries as of ``t0``), and
   their label is 1 when a churn record is dated in ``(t0, as_of]``. The model thus learns
   to predict churn within the next ``horizon`` days from what was known at the start of
   it, the use it is put to when scoring. Too few labels or one class only: BTYD only, and
   the metrics say why.
3. One new model version, active, the previous one deactivated, in one transaction.

Scoring, chunk by chunk (keyset chunks of customer ids, one feature query and one BTYD
query per chunk, one set-based upsert per chunk), in one transaction: readers see the whole
run or none of it. The scores of older model versions are removed at the end of a run.
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
from typing import Any

import numpy as np
from flask import Flask, current_app
from sqlalchemy import ScalarSelect, Select, delete, func, or_, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from api.pagination import after_condition
from core.app import rapport
from core.config import ConfigError
from core.db import db, utcnow
from core.models import Agent, Customer, CustomerExternalId, CustomerStatus, Interaction
from core.services import transaction

from plugins.churn import btyd, features
from plugins.churn.btyd import (
    BGNBDParams, ChurnModelError, FitNotConverged, GammaGammaParams, InsufficientData,
    InvalidModelData,
)
from plugins.churn.classifier import (
    KINDS, ChurnClassifier, churn_risk, train_classifier, with_dropout_feature,
)
from plugins.churn.errors import ChurnErrorCode
from plugins.churn.models import ChurnModelVersion, ChurnRecord, ChurnScore, TimeUnit

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
    return ChurnSettings(int(raw_months), rate)


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
    if classifier not in KINDS:
        raise InvalidModelData(f"unknown classifier {classifier!r}; one of {', '.join(KINDS)}",
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


def _training_set(spec: features.FeatureSpec, as_of: dt.datetime, bgnbd_t0: BGNBDParams,
                  summaries_t0: _Summaries, chunk_size: int, population: int, share: float,
                  progress: Progress | None) -> _TrainingSet:
    """Features as of ``spec.as_of`` (t0) of the customers existing and not churned then
    (the ``share`` sample of them), with 1 - P(alive) as of t0 and the label churned in
    (t0, as_of]."""
    t0 = spec.as_of
    excluded = np.unique(np.asarray(db.session.scalars(_churned_at(t0)).all(), np.int64))
    positive = np.unique(np.asarray(db.session.scalars(select(ChurnRecord.customer_id).where(
        ChurnRecord.churned_at > t0, ChurnRecord.churned_at <= as_of)).all(), np.int64))
    alive_t0 = btyd.probability_alive(bgnbd_t0, summaries_t0.frequency, summaries_t0.recency,
                                      summaries_t0.T)
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
        alive = _lookup(summary_ids, alive_t0, chunk_ids[keep])
        X, full_names = with_dropout_feature(values, names, alive)
        rows.append(X)
        ids.append(chunk_ids[keep])
        if progress:
            progress(done, max(expected, done))
    all_ids = np.concatenate(ids) if ids else np.empty(0, np.int64)
    X = np.vstack(rows) if rows else np.empty((0, len(names) + 1))
    y = np.isin(all_ids, positive).astype(float)
    return _TrainingSet(X, y, _start_dates(all_ids), (*names, "btyd_dropout_probability"),
                        population)


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
    """Fit BG/NBD, Gamma-Gamma and (with enough churn records) the classifier as of
    ``as_of``; store them as the new active model version (module docstring).

    Raises ``InvalidModelData`` (bad arguments), ``InsufficientData`` (too few customers or
    no repeat buyer for BG/NBD) and ``FitNotConverged``; nothing is stored then.
    """
    unit = _checked_fit_args(time_unit, classifier, horizon_days)
    calibration = _aware(as_of)
    if calibration > utcnow() + dt.timedelta(minutes=5):
        raise InvalidModelData("the calibration date is in the future", "asOf")
    notes: list[str] = []
    features.refresh_statistics(calibration)
    summaries = _Summaries.collect(calibration, unit, chunk_size)
    bgnbd = _fit_bgnbd(summaries, unit, calibration.isoformat())
    gamma_gamma, why = _fit_gamma_gamma(summaries)
    if why:
        notes.append(why)
    elif gamma_gamma is not None and gamma_gamma.warning:
        notes.append(gamma_gamma.warning)

    t0 = calibration - dt.timedelta(days=horizon_days)
    spec = features.feature_spec(t0)
    trained: ChurnClassifier | None = None
    training: dict[str, Any] = {"as_of": t0.isoformat(), "horizon_days": horizon_days}
    metrics: dict[str, Any] = {}
    try:
        population, share = _training_share(t0)
        summaries_t0 = _Summaries.collect(t0, unit, chunk_size, share)
        bgnbd_t0 = _fit_bgnbd(summaries_t0, unit, t0.isoformat())
        data = _training_set(spec, calibration, bgnbd_t0, summaries_t0, chunk_size,
                             population, share, progress)
        training.update(customers=data.population, labelled=len(data.y),
                        churned=int(data.y.sum()))
        result = train_classifier(data.X, data.names, data.y, kind=classifier,
                                  label_dates=data.dates, trained_at=utcnow())
        trained = result.classifier
        metrics["classifier"] = {
            "kind": classifier, "trained_at": trained.trained_at.isoformat(),
            "cross_validation": _metrics_dict(trained.cross_validation),
            "time_validation": _metrics_dict(trained.time_validation),
            "notes": list(trained.notes)}
    except (InsufficientData, FitNotConverged) as exc:
        notes.append(f"no classifier, risk = 1 - P(alive): {exc.errors[0].message}")
    metrics.update(training=training, notes=notes,
                   bgnbd={"log_likelihood": bgnbd.log_likelihood,
                          "n_customers": bgnbd.n_customers,
                          "n_repeat_buyers": bgnbd.n_repeat_buyers,
                          "converged": bgnbd.optimiser.converged})
    if gamma_gamma is not None:
        metrics["gamma_gamma"] = {"log_likelihood": gamma_gamma.log_likelihood,
                                  "n_customers": gamma_gamma.n_customers,
                                  "frequency_monetary_correlation":
                                      gamma_gamma.frequency_monetary_correlation}
    params = {"bgnbd": bgnbd.to_dict(),
              "gamma_gamma": gamma_gamma.to_dict() if gamma_gamma else None,
              "feature_spec": spec.to_json(), "horizon_days": horizon_days,
              "classifier": trained.kind if trained else None}
    kind = trained.kind if trained else ("bgnbd+gg" if gamma_gamma else "bgnbd")
    with transaction():
        db.session.execute(update(ChurnModelVersion).where(ChurnModelVersion.active.is_(True))
                           .values(active=False))
        version = ChurnModelVersion(
            as_of=calibration, time_unit=unit, kind=kind, params=params, metrics=metrics,
            feature_names=list(trained.feature_names) if trained else [],
            artifact=trained.to_bytes(key=_key()) if trained else None, active=True)
        db.session.add(version)
    return version


def _key() -> bytes:
    return rapport().settings.secret_key.encode()


# --- The active model ------------------------------------------------------------------------


@dataclass
class LoadedModel:
    version: ChurnModelVersion
    bgnbd: BGNBDParams
    gamma_gamma: GammaGammaParams | None
    spec: features.FeatureSpec
    classifier: ChurnClassifier | None

    @property
    def time_unit(self) -> TimeUnit:
        return self.version.time_unit


def active_version() -> ChurnModelVersion | None:
    return db.session.scalars(select(ChurnModelVersion).where(
        ChurnModelVersion.active.is_(True)).order_by(ChurnModelVersion.id.desc())
        .limit(1)).first()


def load_active_model() -> LoadedModel:
    version = active_version()
    if version is None:
        raise NoModel("no churn model is fitted yet: run `rapport churn fit` first")
    params = version.params
    gg = params.get("gamma_gamma")
    return LoadedModel(
        version=version, bgnbd=BGNBDParams.from_dict(params["bgnbd"]),
        gamma_gamma=GammaGammaParams.from_dict(gg) if gg else None,
        spec=features.FeatureSpec.from_json(params["feature_spec"]),
        classifier=ChurnClassifier.from_bytes(version.artifact, key=_key())
        if version.artifact else None)


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
    spec = model.spec
    ids = table[:, 0].astype(np.int64)
    summary = summary.reshape(-1, 5)
    summary_ids = summary[:, 0].astype(np.int64)
    x, tx, age, m = (_lookup(summary_ids, summary[:, i], ids) for i in (1, 2, 3, 4))
    bought = ~np.isnan(x)
    alive = np.full(len(ids), np.nan)
    aov = np.full(len(ids), np.nan)
    clv = np.full(len(ids), np.nan)
    if bought.any():
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
    factors: list[list[dict[str, Any]]]
    if model.classifier is not None:
        names = features.feature_names(spec)
        X, _ = with_dropout_feature(table[:, 1:], names, alive)
        supervised = model.classifier.predict_risk(X)
        explained = model.classifier.explain(X)
        factor_index, factor_value = explained.top_indices(TOP_FACTORS)
        factor_value = np.round(factor_value, 6)
        factor_names = tuple(explained.feature_names)
        risk, _ = churn_risk(np.where(bought, alive, 1.0), supervised)
    else:
        risk, _ = churn_risk(np.where(bought, alive, 1.0))
        factor_index = np.empty((len(ids), 0), dtype=np.intp)
        factor_value = np.empty((len(ids), 0))
        factor_names = ()
    risk = np.clip(risk, 0.0, 1.0)
    # Without a Gamma-Gamma model nobody has a CLV: rank by risk alone rather than tie
    # everyone at 0. With one, a customer without a purchase has no value to save (0).
    priority = risk * np.nan_to_num(clv) if model.gamma_gamma is not None else risk.copy()
    return ScoredChunk(ids, risk, alive, x, tx, age, aov, clv, priority, factor_index,
                       factor_value, factor_names)


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


_UPDATED = ("scored_at", "risk", "p_alive", "frequency", "recency", "T", "expected_aov",
            "clv", "priority", "top_factors")
_COPIED = ("customer_id", "model_version_id", "scored_at", "risk", "p_alive", "frequency",
           "recency", "T", "expected_aov", "clv", "priority", "top_factors")


def _upsert_sqlite(chunk: ScoredChunk, version_id: int, now: dt.datetime) -> None:
    """One set-based INSERT ... ON CONFLICT (customer, version) DO UPDATE for the chunk."""
    table = ChurnScore.__table__
    stmt = sqlite_insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["customer_id", "model_version_id"],
        set_={name: stmt.excluded[name] for name in _UPDATED})
    db.session.execute(stmt, _score_rows(chunk, version_id, now))


def _text_cells(values: np.ndarray, integer: bool = False) -> list[str]:
    """COPY text cells of a float column: ``\\N`` for NaN."""
    if integer:
        return ["\\N" if v != v else str(int(v)) for v in values.tolist()]
    return ["\\N" if v != v else repr(v) for v in values.tolist()]


def _copy_block(chunk: ScoredChunk, version_id: int, now: dt.datetime) -> str:
    """The chunk's scores as COPY text, built column by column."""
    n = len(chunk.customer_ids)
    factors = [f.replace("\\", "\\\\") for f in chunk.top_factors_json()]
    columns = [
        [str(v) for v in chunk.customer_ids.tolist()], [str(version_id)] * n,
        [now.isoformat()] * n, _text_cells(chunk.risk), _text_cells(chunk.p_alive),
        _text_cells(chunk.frequency, integer=True), _text_cells(chunk.recency),
        _text_cells(chunk.T), _text_cells(chunk.expected_aov), _text_cells(chunk.clv),
        _text_cells(chunk.priority), factors]
    return "".join("\t".join(row) + "\n" for row in zip(*columns))


def _copy_in(driver: Any, block: str) -> None:
    """COPY a block into churn_scores on the run's own connection (its transaction)."""
    quoted = ", ".join(f'"{c}"' for c in _COPIED)
    with driver.cursor() as cursor, cursor.copy(
            f"COPY churn_scores ({quoted}) FROM STDIN") as copy:
        copy.write(block)


class _Writer:
    """Writes chunks on the run's connection from a thread, one at a time, so that the
    database stores chunk i (index and key checks: about half a second per 20,000 scores)
    while Python scores chunk i + 1. Between ``write`` and ``wait`` nothing else may use
    the session: the scoring loop runs no query then (``customer_chunks`` reads its ids
    up front, the read-ahead has its own connection)."""

    def __init__(self) -> None:
        self.driver = db.session.connection().connection.driver_connection
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="churn-score-writer")
        self.pending: Future[None] | None = None

    def write(self, block: str) -> None:
        self.wait()
        self.pending = self.pool.submit(_copy_in, self.driver, block)

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


def score_customers(chunk_size: int = DEFAULT_SCORE_CHUNK, progress: Progress | None = None
                    ) -> ScoreSummary:
    """Score every non-erased customer with the active model (module docstring).

    Raises ``NoModel`` without an active model version, ``FeaturesChanged`` when the
    installed plugins no longer give the columns the classifier was trained on, and
    ``ModelFormatError`` for a stored classifier that cannot be read back.
    """
    if not isinstance(chunk_size, int) or not 100 <= chunk_size <= 200_000:
        raise InvalidModelData("the chunk size must be from 100 to 200,000 customers",
                               "chunkSize")
    settings = churn_settings()
    features.refresh_statistics(utcnow())
    with transaction():
        postgresql = db.session.get_bind().dialect.name == "postgresql"
        if postgresql:
            # One scoring run at a time (a second waits for the first to commit), taken
            # before reading the active model: a run that waited scores the newest one.
            db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCORE_LOCK})
        model = load_active_model()
        now = utcnow()
        if model.classifier is not None:
            expected = (*features.feature_names(model.spec.at(now)),
                        "btyd_dropout_probability")
            if tuple(model.classifier.feature_names) != expected:
                raise FeaturesChanged(
                    "the installed plugins give other churn features than the model was "
                    "trained on: run `rapport churn fit` again")
        summary = ScoreSummary(model_version=model.version.id, scored_at=now)
        if postgresql:
            # This version's earlier scores go first, so each chunk is a plain COPY.
            # Readers keep seeing the previous scores until the run commits.
            db.session.execute(delete(ChurnScore).where(
                ChurnScore.model_version_id == model.version.id))
        total = count_scorable(now)
        risk_sum = 0.0
        clv_sum = 0.0
        if progress:
            progress(0, total)
        jobs = ((id_range, chunk_statements(model, customers, id_range, now))
                for customers, id_range in features.customer_chunks(now, chunk_size))
        writer = _Writer() if postgresql else None
        try:
            for _, (table, summary_matrix) in features.matrices_ahead(
                    jobs, before_session=writer.wait if writer is not None else None):
                chunk = score_chunk(model, table, summary_matrix, settings)
                if chunk is None:
                    continue
                if writer is not None:
                    writer.write(_copy_block(chunk, model.version.id, now))
                else:
                    _upsert_sqlite(chunk, model.version.id, now)
                summary.customers += len(chunk.customer_ids)
                summary.with_purchases += int((~np.isnan(chunk.frequency)).sum())
                summary.high_risk += int((chunk.risk >= 0.5).sum())
                risk_sum += float(chunk.risk.sum())
                clv_sum += float(np.nansum(chunk.clv))
                if progress:
                    progress(summary.customers, max(total, summary.customers))
        finally:
            if writer is not None:
                writer.close()
        result = db.session.execute(delete(ChurnScore).where(
            ChurnScore.model_version_id != model.version.id))
        summary.removed_old_scores = result.rowcount  # type: ignore[attr-defined]
        summary.mean_risk = risk_sum / summary.customers if summary.customers else 0.0
        summary.total_clv = clv_sum
        if model.classifier is None:
            summary.notes.append("no classifier in this model: risk = 1 - P(alive)")
        if model.gamma_gamma is None:
            summary.notes.append("no Gamma-Gamma model: no CLV, priorities are the risks")
    return summary


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
    if score.frequency is None or score.recency is None or score.T is None:
        return None
    unit_days = 7.0 if version.time_unit == TimeUnit.WEEK else 1.0
    params = BGNBDParams.from_dict(version.params["bgnbd"])
    return float(btyd.expected_purchases(params, days / unit_days, [score.frequency],
                                         [score.recency], [score.T])[0])


def _still_customer() -> Any:
    """Not already churned: no open churn record (those are for win-back, not warnings)."""
    return ~select(ChurnRecord.id).where(
        ChurnRecord.customer_id == ChurnScore.customer_id,
        ChurnRecord.reactivated_at.is_(None)).exists()


def warnings_query(min_risk: float = 0.0) -> Select[Any]:
    """Scores of the current version with risk >= ``min_risk`` of customers not already
    marked churned, biggest priority first."""
    return (select(ChurnScore).where(ChurnScore.model_version_id == current_version_id(),
                                     ChurnScore.risk >= min_risk, _still_customer())
            .order_by(ChurnScore.priority.desc(), ChurnScore.customer_id.desc()))


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
                       ChurnScore.risk >= min_risk, _still_customer(),
                       Customer.status != CustomerStatus.ERASED))
        if after is not None:
            stmt = stmt.where(after_condition([ChurnScore.priority, ChurnScore.customer_id],
                                              after, descending=True))
        found = db.session.execute(stmt.order_by(ChurnScore.priority.desc(),
                                                 ChurnScore.customer_id.desc()).limit(size)).all()
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
                score.customer_id, " ".join(external.get(score.customer_id, [])),
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

