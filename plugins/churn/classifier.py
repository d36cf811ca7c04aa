"""The supervised churn-risk classifier over arrays: training, validation, explanations,
persistence, and how its risk combines with BG/NBD's P(alive).

Pure numpy/scikit-learn: no database. Input: a float feature matrix X (NaN = missing), its
feature names, labels y (1 = churned, 0 = not) and optionally each label's date.

Models (``kind``), each a scikit-learn pipeline that starts by imputing missing values with
the training mean and adding a missing-indicator column for every feature that had gaps:

- ``logistic`` (default): standardised features, logistic regression with balanced class
  weights (each class weighs n / (2 n_class)).
- ``knn``: standardised features, k nearest neighbours whose votes are divided by their
  class's share of the training set (the same balancing, for a method without weights).
- ``gradient_boosting``: histogram gradient boosting with balanced class weights.

Balancing stops the majority class from swamping the fit, but inflates the minority's
probabilities: a model trained on a base rate pi with balanced weights estimates odds
multiplied by (1 - pi) / pi. ``predict_risk`` undoes that (the prior-shift correction:
log-odds + logit(pi)), so risks read as probabilities and the Brier score and reliability
bins measure them as such. Rankings (ROC-AUC, PR-AUC) do not depend on it.

Validation: stratified k-fold cross-validation (out-of-fold predictions, so every labelled
customer is scored by a model that did not see it) gives ROC-AUC, PR-AUC next to the base
rate (the PR-AUC of a random ranking), the Brier score and reliability bins. When label
dates are given, a time-aware split also trains on the earliest 75 % of the labels and
tests on the latest 25 %, as the model will be used: on customers after those it learnt
from. The model kept is then trained on every label. The metrics are computed here from
their definitions (ranks for ROC-AUC, precision at each threshold for PR-AUC).

Explanations (per customer, signed, in log-odds of churn, for a chunk of rows at once):
for logistic regression, coefficient x standardised deviation from the training mean,
summed over a feature and its missing indicator; they add up exactly to the customer's
log-odds minus the baseline (the intercept, i.e. the average customer). For the other
kinds: log-odds of the customer minus log-odds with that one feature set to its training
mean (missing counts as the mean), all features of all rows in one batched prediction.
They add up to the total only when features do not interact; the baseline reported is
the log-odds of a customer with every feature at its mean.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import math
import pickle
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import sklearn
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from plugins.churn.btyd import (ChurnModelError, ChurnModelErrorCode, InsufficientData,
                                InvalidModelData)


#: The classifiers ``kind`` selects (see the module docstring).
ClassifierKind = Literal["logistic", "knn", "gradient_boosting"]
KINDS: tuple[ClassifierKind, ...] = ("logistic", "knn", "gradient_boosting")

#: Fewer labelled customers than this, or fewer of either class, cannot be validated.
MIN_LABELS = 30
MIN_PER_CLASS = 5
FOLDS = 5
#: Share of the labels, latest first, held out by the time-aware validation.
TIME_TEST_SHARE = 0.25
RELIABILITY_BINS = 10
NEIGHBOURS = 15
#: Probabilities are kept within [floor, 1 - floor] before taking log-odds (k-NN and trees
#: can say 0 or 1).
PROBABILITY_FLOOR = 1e-6
#: Rows x features predicted at once by the model-agnostic explanations.
EXPLAIN_BATCH_CELLS = 2_000_000

FORMAT_VERSION = 1
MAGIC = b"RAPPORT-CHURN-CLASSIFIER\n"
#: The name of the BG/NBD column ``with_dropout_feature`` adds to a feature matrix.
DROPOUT_FEATURE = "btyd_dropout_probability"
#: A validation ROC-AUC below this ranks churners hardly better than a coin (0.5): the
#: fit result and the report warn that the labels carry no signal the features can see.
CHANCE_ROC_AUC = 0.55

FloatArray = NDArray[np.float64]


class ModelFormatError(ChurnModelError):
    """Stored model bytes that are not ours, of another format version, or altered."""

    code = ChurnModelErrorCode.MODEL_FORMAT


# --- Metrics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_predicted: float
    observed_rate: float


@dataclass(frozen=True)
class Metrics:
    method: str
    n: int
    n_positive: int
    roc_auc: float
    pr_auc: float
    #: The share of churned customers: the PR-AUC of a random ranking.
    base_rate: float
    brier: float
    reliability: tuple[ReliabilityBin, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        bins = tuple(ReliabilityBin(**b) for b in data["reliability"])
        return cls(**{**data, "reliability": bins})


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """P(score of a churned customer > score of a retained one), ties counting half: the
    Mann-Whitney statistic from average ranks."""
    y = np.asarray(labels, dtype=bool)
    ranks = stats.rankdata(np.asarray(scores, dtype=float))
    positives, negatives = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """PR-AUC as the mean precision over the thresholds, weighted by the recall each adds:
    sum over distinct scores (highest first) of (recall_k - recall_{k-1}) precision_k."""
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    true_positives = np.cumsum(y)[last_of_tie]
    precision = true_positives / (last_of_tie + 1)
    recall = true_positives / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def reliability_bins(labels: ArrayLike, probabilities: ArrayLike,
                     bins: int = RELIABILITY_BINS) -> tuple[ReliabilityBin, ...]:
    """Equal-width bins of predicted probability (the last one closed): per non-empty bin,
    the mean prediction and the observed churn rate."""
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    index = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for i in range(bins):
        inside = index == i
        if inside.any():
            out.append(ReliabilityBin(i / bins, (i + 1) / bins, int(inside.sum()),
                                      float(p[inside].mean()), float(y[inside].mean())))
    return tuple(out)


def metrics_of(method: str, labels: FloatArray, probabilities: FloatArray) -> Metrics:
    return Metrics(method=method, n=len(labels), n_positive=int(labels.sum()),
                   roc_auc=roc_auc(labels, probabilities),
                   pr_auc=average_precision(labels, probabilities),
                   base_rate=float(labels.mean()),
                   brier=float(np.mean((probabilities - labels) ** 2)),
                   reliability=reliability_bins(labels, probabilities))


# --- Models ---------------------------------------------------------------------------------


class BalancedKNeighborsClassifier(ClassifierMixin, BaseEstimator):
    """k-NN whose neighbours' votes are divided by their class's training share (so a
    minority customer's neighbourhood is not outvoted by sheer numbers), with add-one
    smoothing so no probability is exactly 0 or 1."""

    def __init__(self, n_neighbors: int = NEIGHBOURS):
        self.n_neighbors = n_neighbors

    def fit(self, X: FloatArray, y: FloatArray) -> BalancedKNeighborsClassifier:
        labels = np.asarray(y).astype(int)
        self.classes_ = np.array([0, 1])
        self.k_ = min(self.n_neighbors, len(labels))
        self.model_ = KNeighborsClassifier(n_neighbors=self.k_).fit(X, labels)
        self.class_share_ = np.bincount(labels, minlength=2) / len(labels)
        return self

    def predict_proba(self, X: FloatArray) -> FloatArray:
        votes = self.model_.predict_proba(X) * self.k_
        weighted = (votes + 1.0) / self.class_share_
        return weighted / weighted.sum(axis=1, keepdims=True)

    def predict(self, X: FloatArray) -> NDArray[np.int64]:
        return np.argmax(self.predict_proba(X), axis=1)


def build_pipeline(kind: str, seed: int = 0) -> Pipeline:
    """The untrained pipeline of ``kind`` (see the module docstring)."""
    # A feature with no value in training is kept (imputed as 0, then constant): the
    # columns stay those of the feature names, and it contributes nothing.
    imputer = ("impute", SimpleImputer(strategy="mean", add_indicator=True,
                                       keep_empty_features=True))
    if kind == "logistic":
        return Pipeline([imputer, ("scale", StandardScaler()),
                         ("model", LogisticRegression(class_weight="balanced", max_iter=5000))])
    if kind == "knn":
        return Pipeline([imputer, ("scale", StandardScaler()),
                         ("model", BalancedKNeighborsClassifier())])
    if kind == "gradient_boosting":
        return Pipeline([imputer, ("model", HistGradientBoostingClassifier(
            class_weight="balanced", random_state=seed))])
    raise InvalidModelData(f"unknown classifier kind {kind!r}; one of {', '.join(KINDS)}",
                           "kind")


def _log_odds(probabilities: FloatArray) -> FloatArray:
    return special.logit(np.clip(probabilities, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR))


def _balanced_log_odds(pipeline: Pipeline, X: FloatArray) -> FloatArray:
    return _log_odds(pipeline.predict_proba(X)[:, 1])


def _prior_shift(base_rate: float) -> float:
    return float(special.logit(base_rate))


# --- The trained classifier -----------------------------------------------------------------


@dataclass(frozen=True)
class Factor:
    feature: str
    contribution: float


@dataclass(frozen=True)
class Explanations:
    """Signed contributions (log-odds of churn) of each feature for a chunk of customers."""

    feature_names: tuple[str, ...]
    #: rows x features
    contributions: FloatArray
    #: the log-odds the contributions start from (logistic: the average customer's)
    baseline_log_odds: FloatArray
    method: str

    def top_indices(self, k: int = 5) -> tuple[NDArray[np.intp], FloatArray]:
        """Per customer (rows), the column indices of the ``k`` largest |contribution|,
        largest first (ties: the earlier feature), and those contributions."""
        if self.contributions.size == 0:
            empty = np.empty((len(self.contributions), 0))
            return empty.astype(np.intp), empty
        order = np.argsort(-np.abs(self.contributions), axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(self.contributions, order, axis=1)

    def top_factors(self, k: int = 5) -> list[list[Factor]]:
        """Per customer, the ``k`` features with the largest |contribution|, largest first;
        features contributing exactly 0 are left out."""
        order, values = self.top_indices(k)
        names = self.feature_names
        return [[Factor(names[j], v) for j, v in zip(picks, row) if v != 0]
                for picks, row in zip(order.tolist(), values.tolist())]


@dataclass
class ChurnClassifier:
    kind: str
    feature_names: tuple[str, ...]
    pipeline: Pipeline
    #: Share of churned customers among the training labels (for the prior correction).
    base_rate: float
    n_labels: int
    trained_at: dt.datetime
    cross_validation: Metrics
    time_validation: Metrics | None
    #: Why there is no time-aware validation, when there is none.
    notes: tuple[str, ...] = field(default=())

    # ... prediction

    def _matrix(self, features: ArrayLike) -> FloatArray:
        return _feature_matrix(features, len(self.feature_names))

    def log_odds(self, features: ArrayLike) -> FloatArray:
        """Log-odds of churn of each row, corrected to the training base rate."""
        return _balanced_log_odds(self.pipeline, self._matrix(features)) + \
            _prior_shift(self.base_rate)

    def predict_risk(self, features: ArrayLike) -> FloatArray:
        """Probability of churn of each row (see the module docstring on the correction)."""
        return special.expit(self.log_odds(features))

    def explain(self, features: ArrayLike) -> Explanations:
        """Contributions of every feature for a chunk of rows (module docstring)."""
        X = self._matrix(features)
        if self.kind == "logistic":
            return self._explain_linear(X)
        return self._explain_by_mean_replacement(X)

    def _explain_linear(self, X: FloatArray) -> Explanations:
        imputer: SimpleImputer = self.pipeline.named_steps["impute"]
        scaler: StandardScaler = self.pipeline.named_steps["scale"]
        model: LogisticRegression = self.pipeline.named_steps["model"]
        standardised = scaler.transform(imputer.transform(X))
        per_column = standardised * model.coef_[0]
        contributions = per_column @ self._column_sources(imputer)
        baseline = np.full(len(X), float(model.intercept_[0]) + _prior_shift(self.base_rate))
        return Explanations(self.feature_names, contributions, baseline,
                            "coefficient x standardised deviation")

    def _column_sources(self, imputer: SimpleImputer) -> FloatArray:
        """A (transformed columns x input features) 0/1 matrix: which input feature each
        imputed value or missing indicator comes from."""
        width = len(self.feature_names)
        indicated = imputer.indicator_.features_ if imputer.indicator_ is not None else []
        sources = np.r_[np.arange(width), np.asarray(indicated, dtype=int)].astype(int)
        matrix = np.zeros((len(sources), width))
        matrix[np.arange(len(sources)), sources] = 1.0
        return matrix

    def _explain_by_mean_replacement(self, X: FloatArray) -> Explanations:
        means = self.pipeline.named_steps["impute"].statistics_
        rows, width = X.shape
        full = _balanced_log_odds(self.pipeline, X)
        contributions = np.empty((rows, width))
        step = max(1, EXPLAIN_BATCH_CELLS // max(1, width * width))
        columns = np.arange(width)
        for start in range(0, rows, step):
            chunk = X[start:start + step]
            # One copy of the chunk per feature, that feature replaced by its mean.
            replaced = np.repeat(chunk[np.newaxis], width, axis=0)
            replaced[columns, :, columns] = means[:, np.newaxis]
            without = _balanced_log_odds(self.pipeline, replaced.reshape(-1, width))
            contributions[start:start + step] = (
                full[start:start + step, np.newaxis] - without.reshape(width, -1).T)
        average = _balanced_log_odds(self.pipeline, means.reshape(1, -1))[0]
        baseline = np.full(rows, average + _prior_shift(self.base_rate))
        return Explanations(self.feature_names, contributions, baseline,
                            "change in log-odds when the feature is set to its mean")

    # ... persistence

    def to_bytes(self, key: bytes | None = None) -> bytes:
        """Magic line, a JSON header line (format version, scikit-learn version, digest),
        then the pickled model. The digest is SHA-256 of the payload, or HMAC-SHA256 with
        ``key`` (give the application's secret: a plain hash only catches corruption,
        while a keyed one also refuses a payload someone rewrote)."""
        buffer = io.BytesIO()
        pickle.dump({
            "kind": self.kind, "feature_names": list(self.feature_names),
            "pipeline": self.pipeline, "base_rate": self.base_rate,
            "n_labels": self.n_labels, "trained_at": self.trained_at.isoformat(),
            "cross_validation": asdict(self.cross_validation),
            "time_validation": asdict(self.time_validation) if self.time_validation else None,
            "notes": list(self.notes)}, buffer, protocol=pickle.HIGHEST_PROTOCOL)
        payload = buffer.getvalue()
        header = {"format_version": FORMAT_VERSION, "sklearn": sklearn.__version__,
                  "digest": _digest(payload, key)}
        return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload

    @classmethod
    def from_bytes(cls, data: bytes, key: bytes | None = None) -> ChurnClassifier:
        """The classifier back, refusing (``ModelFormatError``) bytes that are not a stored
        classifier, another format version or scikit-learn minor version, or whose digest
        does not match. The digest is checked before anything is unpickled."""
        if not data.startswith(MAGIC):
            raise ModelFormatError("these bytes are not a stored churn classifier")
        header_line, _, payload = data[len(MAGIC):].partition(b"\n")
        try:
            header = json.loads(header_line)
            version, trained_with, digest = (header["format_version"], header["sklearn"],
                                             header["digest"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelFormatError("the stored classifier's header is unreadable") from exc
        if version != FORMAT_VERSION:
            raise ModelFormatError(f"the stored classifier has format version {version}; "
                                   f"this code reads version {FORMAT_VERSION}: retrain it")
        if _minor(trained_with) != _minor(sklearn.__version__):
            raise ModelFormatError(f"the stored classifier was trained with scikit-learn "
                                   f"{trained_with}, this is {sklearn.__version__}: retrain it")
        if not hmac.compare_digest(str(digest), _digest(payload, key)):
            raise ModelFormatError("the stored classifier's checksum does not match its "
                                   "content (corrupted, altered, or another key): retrain it")
        state = pickle.loads(payload)
        time_validation = state["time_validation"]
        return cls(kind=state["kind"], feature_names=tuple(state["feature_names"]),
                   pipeline=state["pipeline"], base_rate=state["base_rate"],
                   n_labels=state["n_labels"],
                   trained_at=dt.datetime.fromisoformat(state["trained_at"]),
                   cross_validation=Metrics.from_dict(state["cross_validation"]),
                   time_validation=Metrics.from_dict(time_validation)
                   if time_validation else None,
                   notes=tuple(state["notes"]))


def _digest(payload: bytes, key: bytes | None) -> str:
    if key is None:
        return "sha256:" + hashlib.sha256(payload).hexdigest()
    return "hmac-sha256:" + hmac.new(key, payload, hashlib.sha256).hexdigest()


def _minor(version: str) -> str:
    return ".".join(str(version).split(".")[:2])


# --- Training -------------------------------------------------------------------------------


def _feature_matrix(features: ArrayLike, width: int) -> FloatArray:
    X = np.asarray(features, dtype=float)
    if X.ndim == 1 and width == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2 or X.shape[1] != width:
        raise InvalidModelData(f"the feature matrix must have {width} columns, one per "
                               f"feature name (got shape {X.shape})", "features")
    if np.isinf(X).any():
        row = int(np.argmax(np.isinf(X).any(axis=1)))
        raise InvalidModelData(f"the feature matrix has an infinite value (row {row}); use "
                               f"NaN for a missing value", "features")
    return X


def _labels(labels: ArrayLike, rows: int) -> FloatArray:
    y = np.asarray(labels, dtype=float).ravel()
    if len(y) != rows:
        raise InvalidModelData(f"{len(y)} labels for {rows} rows of features", "labels")
    if not np.isin(y, (0.0, 1.0)).all():
        raise InvalidModelData("labels must be 1 (churned) or 0 (not churned)", "labels")
    return y


def _check_counts(y: FloatArray, what: str) -> None:
    positives = int(y.sum())
    negatives = len(y) - positives
    if len(y) < MIN_LABELS:
        raise InsufficientData(f"{what} needs at least {MIN_LABELS} labelled customers "
                               f"(got {len(y)})", "labels")
    if min(positives, negatives) < MIN_PER_CLASS:
        raise InsufficientData(f"{what} needs at least {MIN_PER_CLASS} churned and "
                               f"{MIN_PER_CLASS} retained customers (got {positives} churned, "
                               f"{negatives} retained)", "labels")


def _fit_and_predict(kind: str, seed: int, X_train: FloatArray, y_train: FloatArray,
                     X_test: FloatArray) -> FloatArray:
    pipeline = clone(build_pipeline(kind, seed)).fit(X_train, y_train)
    shift = _prior_shift(float(y_train.mean()))
    return special.expit(_balanced_log_odds(pipeline, X_test) + shift)


@dataclass(frozen=True)
class Validation:
    """Out-of-sample predictions behind a ``Metrics`` (not stored with the model)."""

    metrics: Metrics
    rows: NDArray[np.int64]
    predictions: FloatArray


def cross_validate(kind: str, X: FloatArray, y: FloatArray, folds: int = FOLDS,
                   seed: int = 0) -> Validation:
    """Stratified k-fold out-of-fold predictions of every row and their metrics."""
    splits = min(folds, int(y.sum()), int(len(y) - y.sum()))
    predictions = np.empty(len(y))
    splitter = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    for train, test in splitter.split(X, y):
        predictions[test] = _fit_and_predict(kind, seed, X[train], y[train], X[test])
    return Validation(metrics_of(f"stratified {splits}-fold", y, predictions),
                      np.arange(len(y)), predictions)


def _moment(value: Any) -> str:
    """A label date for people: the scorer passes epoch seconds, shown as UTC."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return dt.datetime.fromtimestamp(float(value), dt.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC")
    return str(value)


def time_validate(kind: str, X: FloatArray, y: FloatArray, dates: NDArray[Any],
                  seed: int = 0) -> Validation | str:
    """Train on the earliest labels, test on the latest ``TIME_TEST_SHARE``; or the reason
    it cannot be done (a part without both classes)."""
    order = np.argsort(dates, kind="stable")
    cut = int(round(len(y) * (1 - TIME_TEST_SHARE)))
    # Labels of the cut's date all go to the test side: training sees only earlier dates.
    cut = int(np.searchsorted(dates[order], dates[order][cut], side="left")) \
        if cut < len(y) else cut
    train, test = order[:cut], order[cut:]
    for part, name in ((train, "earlier"), (test, "later")):
        counts = np.bincount(y[part].astype(int), minlength=2) if len(part) else [0, 0]
        if min(counts) < MIN_PER_CLASS:
            return (f"no time-aware validation: the {name} part has {counts[1]} churned and "
                    f"{counts[0]} retained customers (at least {MIN_PER_CLASS} of each needed)")
    predictions = _fit_and_predict(kind, seed, X[train], y[train], X[test])
    method = f"time split: trained before {_moment(dates[order][cut])}, tested from it"
    return Validation(metrics_of(method, y[test], predictions), test, predictions)


def _roc_auc(metrics: Metrics | dict[str, Any] | None) -> float | None:
    value = metrics.get("roc_auc") if isinstance(metrics, dict) else \
        getattr(metrics, "roc_auc", None)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def chance_level_note(cross_validation: Metrics | dict[str, Any] | None,
                      time_validation: Metrics | dict[str, Any] | None = None) -> str | None:
    """A warning when a validation ROC-AUC is below ``CHANCE_ROC_AUC`` (stored metrics, as
    dicts, are read too), else None."""
    low = [f"{name} {auc:.2f}" for name, auc in (
        ("cross-validation", _roc_auc(cross_validation)),
        ("time-aware", _roc_auc(time_validation))) if auc is not None and auc < CHANCE_ROC_AUC]
    if not low:
        return None
    return (f"warning: the classifier ranks churners no better than chance (ROC-AUC "
            f"{', '.join(low)}; 0.5 is a coin toss, below {CHANCE_ROC_AUC} is no signal): "
            f"the churn labels carry no signal the features can see. Do not act on its "
            f"risks; check the labels (random or demo labels look like this) or add "
            f"features that explain churn.")


@dataclass(frozen=True)
class TrainingResult:
    classifier: ChurnClassifier
    cross_validation: Validation
    time_validation: Validation | None


def train_classifier(features: ArrayLike, feature_names: list[str] | tuple[str, ...],
                     labels: ArrayLike, *, kind: str = "logistic",
                     label_dates: ArrayLike | None = None, folds: int = FOLDS,
                     seed: int = 0, trained_at: dt.datetime | None = None
                     ) -> TrainingResult:
    """Validate, then train the kept model on every label (module docstring).

    Raises ``InvalidModelData`` for inputs of the wrong shape, labels other than 0/1 or an
    unknown kind, and ``InsufficientData`` for fewer than ``MIN_LABELS`` labels or fewer
    than ``MIN_PER_CLASS`` of either class.
    """
    names = tuple(str(n) for n in feature_names)
    if len(set(names)) != len(names) or not names:
        raise InvalidModelData("feature names must be given and distinct", "featureNames")
    build_pipeline(kind, seed)
    X = _feature_matrix(features, len(names))
    y = _labels(labels, len(X))
    _check_counts(y, "the churn classifier")
    validation = cross_validate(kind, X, y, folds, seed)
    timed: Validation | None = None
    notes: list[str] = []
    if label_dates is not None:
        dates = np.asarray(label_dates)
        if len(dates) != len(y):
            raise InvalidModelData(f"{len(dates)} label dates for {len(y)} labels",
                                   "labelDates")
        outcome = time_validate(kind, X, y, dates, seed)
        if isinstance(outcome, str):
            notes.append(outcome)
        else:
            timed = outcome
    else:
        notes.append("no time-aware validation: no label dates given")
    chance = chance_level_note(validation.metrics, timed.metrics if timed else None)
    if chance:
        notes.append(chance)
    empty = [name for name, gone in zip(names, np.isnan(X).all(axis=0)) if gone]
    if empty:
        notes.append(f"features without any value in the labelled customers (they "
                     f"contribute nothing): {', '.join(empty)}")
    pipeline = clone(build_pipeline(kind, seed)).fit(X, y)
    classifier = ChurnClassifier(
        kind=kind, feature_names=names, pipeline=pipeline, base_rate=float(y.mean()),
        n_labels=len(y), trained_at=trained_at or dt.datetime.now(dt.timezone.utc),
        cross_validation=validation.metrics,
        time_validation=timed.metrics if timed else None, notes=tuple(notes))
    return TrainingResult(classifier, validation, timed)


# --- Combining with BG/NBD ------------------------------------------------------------------


def with_dropout_feature(features: ArrayLike, feature_names: list[str] | tuple[str, ...],
                         probability_alive: ArrayLike) -> tuple[FloatArray, tuple[str, ...]]:
    """The feature matrix with 1 - P(alive) appended as ``DROPOUT_FEATURE``: how the
    classifier learns from BG/NBD (see ``churn_risk``)."""
    X = _feature_matrix(features, len(feature_names))
    alive = np.asarray(probability_alive, dtype=float).reshape(-1, 1)
    if len(alive) != len(X):
        raise InvalidModelData(f"{len(alive)} P(alive) values for {len(X)} rows")
    return np.hstack([X, 1.0 - alive]), (*feature_names, DROPOUT_FEATURE)


RISK_FROM_CLASSIFIER = "classifier"
RISK_FROM_BTYD = "btyd"


def churn_risk(probability_alive: ArrayLike, classifier_risk: ArrayLike | None = None
               ) -> tuple[FloatArray, NDArray[np.str_]]:
    """Each customer's churn risk and where it comes from.

    Without labels there is no classifier: risk = 1 - P(alive), BG/NBD's probability that
    the customer has already left. With labels, 1 - P(alive) is one of the classifier's
    features (``with_dropout_feature``), so the classifier weighs it against every other
    feature using the churn records, rather than us fixing a blend by hand; its risk is
    the risk. A customer the classifier did not score (NaN) falls back to 1 - P(alive).
    """
    alive = np.asarray(probability_alive, dtype=float)
    btyd_risk = 1.0 - alive
    if classifier_risk is None:
        return btyd_risk, np.full(alive.shape, RISK_FROM_BTYD)
    supervised = np.asarray(classifier_risk, dtype=float)
    if supervised.shape != alive.shape:
        raise InvalidModelData("classifier risks and P(alive) have different lengths")
    scored = ~np.isnan(supervised)
    return (np.where(scored, supervised, btyd_risk),
            np.where(scored, RISK_FROM_CLASSIFIER, RISK_FROM_BTYD))

