"""The churn-risk classifier (plugins.churn.classifier) on data simulated from a known
logistic model; metrics checked against scikit-learn's own functions (the module computes
them from their definitions), explanations against the coefficients written out."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from scipy import special
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from plugins.churn import classifier as clf

NAMES = ("days_since_purchase", "purchases_90d", "complaints_365d", "noise", "tenure_years")
#: True log-odds = INTERCEPT + X @ COEFFICIENTS; about 18 % churned.
COEFFICIENTS = np.array([0.9, -1.2, 0.6, 0.0, -0.5])
INTERCEPT = -2.0


def simulate(seed: int, n: int, missing: float = 0.1) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """Standard normal features, churn drawn from the true logistic model; then a share of
    complaints_365d is blanked (missing completely at random). Returns X, y, true p."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, len(NAMES)))
    truth = special.expit(INTERCEPT + X @ COEFFICIENTS)
    y = (rng.random(n) < truth).astype(float)
    X[rng.random(n) < missing, 2] = np.nan
    return X, y, truth


@pytest.fixture(scope="module")
def simulated() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return simulate(seed=1, n=4000)


@pytest.fixture(scope="module")
def logistic(simulated: tuple[np.ndarray, np.ndarray, np.ndarray]) -> clf.TrainingResult:
    X, y, _ = simulated
    return clf.train_classifier(X, NAMES, y, seed=3)


def test_recovers_the_signs_and_the_auc_of_the_true_model(
        simulated: tuple[np.ndarray, np.ndarray, np.ndarray],
        logistic: clf.TrainingResult) -> None:
    X, y, truth = simulated
    model = logistic.classifier.pipeline.named_steps["model"]
    # Columns: the five imputed features, then complaints_365d's missing indicator.
    coefficients = model.coef_[0][:5]
    assert np.sign(coefficients[[0, 1, 2, 4]]).tolist() == [1, -1, 1, -1]
    assert abs(coefficients[3]) < 0.1
    # The best possible AUC on these labels is the true probability's.
    best = roc_auc_score(y, truth)
    assert logistic.classifier.cross_validation.roc_auc == pytest.approx(best, abs=0.03)
    # Risks are corrected back to the base rate: they average close to it.
    risks = logistic.classifier.predict_risk(X)
    assert risks.mean() == pytest.approx(y.mean(), abs=0.03)


def test_cross_validation_metrics_match_sklearn(simulated: tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray],
                                                logistic: clf.TrainingResult) -> None:
    _, y, _ = simulated
    validation = logistic.cross_validation
    oof = validation.predictions
    metrics = validation.metrics
    assert metrics.method == "stratified 5-fold" and metrics.n == len(y)
    assert metrics.roc_auc == pytest.approx(roc_auc_score(y, oof), abs=1e-12)
    assert metrics.pr_auc == pytest.approx(average_precision_score(y, oof), abs=1e-12)
    assert metrics.brier == pytest.approx(brier_score_loss(y, oof), abs=1e-12)
    assert metrics.base_rate == pytest.approx(y.mean())
    observed, predicted = calibration_curve(y, oof, n_bins=10, strategy="uniform")
    assert [b.observed_rate for b in metrics.reliability] == pytest.approx(observed.tolist())
    assert [b.mean_predicted for b in metrics.reliability] == pytest.approx(predicted.tolist())
    assert sum(b.count for b in metrics.reliability) == len(y)
    assert metrics.brier < metrics.base_rate * (1 - metrics.base_rate)  # beats the base rate


def test_out_of_fold_predictions_come_from_models_that_did_not_see_the_row(
        simulated: tuple[np.ndarray, np.ndarray, np.ndarray],
        logistic: clf.TrainingResult) -> None:
    X, y, _ = simulated
    train, test = next(StratifiedKFold(5, shuffle=True, random_state=3).split(X, y))
    own = clf.build_pipeline("logistic").fit(X[train], y[train])
    shift = special.logit(y[train].mean())
    expected = special.expit(special.logit(own.predict_proba(X[test])[:, 1]) + shift)
    assert logistic.cross_validation.predictions[test] == pytest.approx(expected, rel=1e-9)


def test_metric_definitions_on_a_hand_example() -> None:
    labels = [1, 0, 1, 0, 0]
    scores = [0.9, 0.8, 0.8, 0.3, 0.1]
    # Pairs (positive, negative): (0.9 vs all 3) = 3, (0.8 vs 0.8) = 0.5, (0.8 vs 0.3, 0.1)
    # = 2: 5.5 of 6.
    assert clf.roc_auc(labels, scores) == pytest.approx(5.5 / 6)
    # Thresholds 0.9: P=1, R=0.5; 0.8: P=2/3, R=1: AP = 0.5 * 1 + 0.5 * 2/3.
    assert clf.average_precision(labels, scores) == pytest.approx(0.5 + 1 / 3)


def test_logistic_explanations_add_up_to_the_log_odds(
        simulated: tuple[np.ndarray, np.ndarray, np.ndarray],
        logistic: clf.TrainingResult) -> None:
    X, _, _ = simulated
    model = logistic.classifier
    chunk = X[:200]
    explained = model.explain(chunk)
    assert explained.contributions.shape == (200, 5)
    total = explained.baseline_log_odds + explained.contributions.sum(axis=1)
    assert total == pytest.approx(special.logit(model.predict_risk(chunk)), abs=1e-9)
    # One row written out: coefficient x (x - training mean) / training sd.
    steps = model.pipeline.named_steps
    row = next(i for i in range(200) if not np.isnan(chunk[i]).any())
    coef, mean, scale = steps["model"].coef_[0], steps["scale"].mean_, steps["scale"].scale_
    by_hand = coef[0] * (chunk[row, 0] - mean[0]) / scale[0]
    assert explained.contributions[row, 0] == pytest.approx(by_hand, rel=1e-9)
    # complaints_365d adds its value's term and its missing indicator's.
    with_indicator = coef[2] * (chunk[row, 2] - mean[2]) / scale[2] + \
        coef[5] * (0.0 - mean[5]) / scale[5]
    assert explained.contributions[row, 2] == pytest.approx(with_indicator, rel=1e-9)


def test_top_factors_are_ranked_by_size_with_their_sign(logistic: clf.TrainingResult) -> None:
    # A customer far from the mean on two features.
    row = np.array([[3.0, -2.5, 0.0, 0.0, 0.0]])
    factors = logistic.classifier.explain(row).top_factors(2)[0]
    assert [f.feature for f in factors] == ["purchases_90d", "days_since_purchase"]
    assert factors[0].contribution > 0 and factors[1].contribution > 0
    lower = logistic.classifier.explain(np.array([[0.0, 2.0, 0.0, 0.0, 0.0]]))
    assert lower.top_factors(1)[0][0].contribution < 0


@pytest.mark.parametrize("kind", ["knn", "gradient_boosting"])
def test_other_kinds_validate_and_explain(kind: str) -> None:
    X, y, truth = simulate(seed=2, n=1500)
    # One OpenMP thread: on a busy 2-CPU machine, gradient boosting's threads made this
    # test ten times slower.
    with threadpool_limits(limits=1):
        _check_kind(kind, X, y, truth)


def _check_kind(kind: str, X: np.ndarray, y: np.ndarray, truth: np.ndarray) -> None:
    result = clf.train_classifier(X, NAMES, y, kind=kind, seed=1)
    model = result.classifier
    assert model.kind == kind
    assert 0.7 < result.classifier.cross_validation.roc_auc <= roc_auc_score(y, truth) + 0.02
    chunk = X[:40]
    explained = model.explain(chunk)
    # Row by row gives the same as the chunk at once.
    one = model.explain(chunk[7:8])
    assert one.contributions[0] == pytest.approx(explained.contributions[7], abs=1e-9)
    # By definition: log-odds minus log-odds with that feature at its training mean.
    means = model.pipeline.named_steps["impute"].statistics_
    moved = chunk[7:8].copy()
    moved[0, 1] = means[1]
    expected = special.logit(model.predict_risk(chunk[7:8])) - \
        special.logit(model.predict_risk(moved))
    assert explained.contributions[7, 1] == pytest.approx(expected[0], abs=1e-6)
    # A customer at the mean on every feature owes nothing to any of them.
    assert model.explain(means.reshape(1, -1)).contributions == pytest.approx(
        np.zeros((1, 5)), abs=1e-12)
    # The strongest true effect (purchases_90d, negative) has the largest mean |effect|.
    assert int(np.argmax(np.abs(explained.contributions).mean(axis=0))) in (0, 1)


def test_knn_balances_the_classes() -> None:
    X = np.r_[np.zeros((90, 1)), np.ones((10, 1))] + \
        np.random.default_rng(0).normal(0, 0.6, (100, 1))
    y = np.r_[np.zeros(90), np.ones(10)]
    knn = clf.BalancedKNeighborsClassifier(n_neighbors=15).fit(X, y)
    # A neighbourhood of 6 churned and 9 retained: raw votes say 40 %, balanced 6/0.1
    # against 9/0.9 (with one added to each) says (7/0.1) / (7/0.1 + 10/0.9).
    votes = knn.model_.predict_proba(np.array([[0.6]]))[0] * 15
    expected = ((votes[1] + 1) / 0.1) / ((votes[1] + 1) / 0.1 + (votes[0] + 1) / 0.9)
    assert knn.predict_proba(np.array([[0.6]]))[0, 1] == pytest.approx(expected)


def test_time_aware_validation_trains_on_the_earlier_labels() -> None:
    X, y, _ = simulate(seed=4, n=800)
    start = dt.date(2025, 1, 1)
    dates = np.array([np.datetime64(start + dt.timedelta(days=int(d)))
                      for d in np.random.default_rng(4).integers(0, 365, len(y))])
    result = clf.train_classifier(X, NAMES, y, label_dates=dates, seed=0)
    timed = result.time_validation
    assert timed is not None and result.classifier.time_validation == timed.metrics
    tested = np.zeros(len(y), dtype=bool)
    tested[timed.rows] = True
    assert dates[tested].min() > dates[~tested].max()
    assert tested.sum() == pytest.approx(0.25 * len(y), abs=10)
    assert timed.metrics.roc_auc == pytest.approx(roc_auc_score(y[timed.rows],
                                                                timed.predictions))
    # The later quarter scored by a model of the earlier three quarters, written out.
    own = clf.build_pipeline("logistic").fit(X[~tested], y[~tested])
    shift = special.logit(y[~tested].mean())
    expected = special.expit(special.logit(own.predict_proba(X[timed.rows])[:, 1]) + shift)
    assert timed.predictions == pytest.approx(expected, rel=1e-9)


def test_time_validation_is_skipped_with_a_reason_when_a_part_lacks_a_class() -> None:
    X, y, _ = simulate(seed=5, n=300)
    dates = np.where(y == 1, 2, 1)  # every churn label is later than every other one
    result = clf.train_classifier(X, NAMES, y, label_dates=dates)
    assert result.time_validation is None
    assert "earlier part has 0 churned" in result.classifier.notes[0]


# --- Persistence ----------------------------------------------------------------------------


def test_round_trip_through_bytes(simulated: tuple[np.ndarray, np.ndarray, np.ndarray],
                                  logistic: clf.TrainingResult) -> None:
    X, _, _ = simulated
    model = logistic.classifier
    stored = model.to_bytes()
    again = clf.ChurnClassifier.from_bytes(stored)
    assert again.predict_risk(X[:50]) == pytest.approx(model.predict_risk(X[:50]), abs=0)
    assert again.cross_validation == model.cross_validation
    assert (again.kind, again.feature_names, again.trained_at) == \
        (model.kind, model.feature_names, model.trained_at)
    keyed = model.to_bytes(key=b"secret")
    assert clf.ChurnClassifier.from_bytes(keyed, key=b"secret").n_labels == model.n_labels


def test_altered_or_foreign_bytes_are_refused(logistic: clf.TrainingResult) -> None:
    stored = logistic.classifier.to_bytes()
    tampered = bytearray(stored)
    tampered[-20] ^= 0xFF
    with pytest.raises(clf.ModelFormatError, match="checksum") as caught:
        clf.ChurnClassifier.from_bytes(bytes(tampered))
    assert caught.value.errors[0].code == "MODEL_FORMAT"
    newer = stored.replace(b'"format_version": 1', b'"format_version": 2', 1)
    with pytest.raises(clf.ModelFormatError, match="format version 2"):
        clf.ChurnClassifier.from_bytes(newer)
    other_sklearn = stored.replace(b'"sklearn": "', b'"sklearn": "0.', 1)
    with pytest.raises(clf.ModelFormatError, match="scikit-learn"):
        clf.ChurnClassifier.from_bytes(other_sklearn)
    with pytest.raises(clf.ModelFormatError, match="not a stored churn classifier"):
        clf.ChurnClassifier.from_bytes(b"\x80\x04 a pickle, say")
    keyed = logistic.classifier.to_bytes(key=b"secret")
    with pytest.raises(clf.ModelFormatError, match="checksum"):
        clf.ChurnClassifier.from_bytes(keyed, key=b"another")
    with pytest.raises(clf.ModelFormatError, match="checksum"):
        clf.ChurnClassifier.from_bytes(keyed)


# --- Degenerate input -----------------------------------------------------------------------


def test_one_class_or_too_few_labels_are_typed_errors() -> None:
    X, y, _ = simulate(seed=6, n=200)
    with pytest.raises(clf.InsufficientData, match="0 churned") as caught:
        clf.train_classifier(X, NAMES, np.zeros(200))
    assert caught.value.errors[0].code == "INSUFFICIENT_DATA"
    with pytest.raises(clf.InsufficientData, match="at least 30 labelled"):
        clf.train_classifier(X[:20], NAMES, y[:20])
    few = np.zeros(200)
    few[:3] = 1
    with pytest.raises(clf.InsufficientData, match="at least 5 churned"):
        clf.train_classifier(X, NAMES, few)


@pytest.mark.parametrize("change, message", [
    (lambda X, y, n: (X[:, :4], y, n), "must have 5 columns"),
    (lambda X, y, n: (X, y[:-1], n), "labels for"),
    (lambda X, y, n: (X, y * 2, n), "labels must be 1"),
    (lambda X, y, n: (np.where(X > 2.5, np.inf, X), y, n), "infinite value"),
    (lambda X, y, n: (X, y, ("a", "a", "b", "c", "d")), "distinct"),
])
def test_malformed_inputs_are_refused(change: object, message: str) -> None:
    X, y, _ = simulate(seed=7, n=200)
    X2, y2, names = change(X, y, NAMES)  # type: ignore[operator]
    with pytest.raises(clf.InvalidModelData, match=message):
        clf.train_classifier(X2, names, y2)


def test_unknown_kind_is_refused() -> None:
    X, y, _ = simulate(seed=7, n=200)
    with pytest.raises(clf.InvalidModelData, match="unknown classifier kind 'svm'"):
        clf.train_classifier(X, NAMES, y, kind="svm")


def test_a_feature_missing_everywhere_explains_nothing() -> None:
    X, y, _ = simulate(seed=8, n=400, missing=0.0)
    X[:, 3] = np.nan
    model = clf.train_classifier(X, NAMES, y).classifier
    assert "without any value in the labelled customers (they contribute nothing): noise" \
        in model.notes[-1]
    explained = model.explain(X[:10])
    assert np.all(explained.contributions[:, 3] == 0)
    assert all(f.feature != "noise" for row in explained.top_factors(5) for f in row)
    total = explained.baseline_log_odds + explained.contributions.sum(axis=1)
    assert total == pytest.approx(special.logit(model.predict_risk(X[:10])), abs=1e-9)


# --- Combining with BG/NBD ------------------------------------------------------------------


def test_risk_without_labels_is_one_minus_p_alive() -> None:
    risk, source = clf.churn_risk(np.array([1.0, 0.25, 0.6]))
    assert risk == pytest.approx([0.0, 0.75, 0.4])
    assert source.tolist() == ["btyd"] * 3


def test_risk_with_a_classifier_uses_it_and_falls_back_per_customer() -> None:
    risk, source = clf.churn_risk(np.array([0.9, 0.2]), np.array([0.3, np.nan]))
    assert risk == pytest.approx([0.3, 0.8])
    assert source.tolist() == ["classifier", "btyd"]


def test_p_alive_becomes_a_classifier_feature() -> None:
    rng = np.random.default_rng(9)
    X, y, _ = simulate(seed=9, n=600)
    alive = np.where(y == 1, rng.uniform(0.0, 0.6, 600), rng.uniform(0.4, 1.0, 600))
    X2, names = clf.with_dropout_feature(X, NAMES, alive)
    assert names[-1] == clf.DROPOUT_FEATURE and X2[:, -1] == pytest.approx(1 - alive)
    with_btyd = clf.train_classifier(X2, names, y).classifier
    without = clf.train_classifier(X, NAMES, y).classifier
    assert with_btyd.cross_validation.roc_auc > without.cross_validation.roc_auc
    coefficient = with_btyd.pipeline.named_steps["model"].coef_[0][5]
    assert coefficient > 0  # more likely gone by BG/NBD: more likely churned
