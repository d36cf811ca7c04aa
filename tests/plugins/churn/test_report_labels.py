"""The churn HTML report as people read it: the model's parameters and metrics under human
labels (never the stored snake_case keys), an sBG model's survival by period instead of an
empty P(alive) section, and a warning when the classifier ranks churners no better than
chance (also on the fit result, through the classifier's notes)."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
from flask import Flask

from core.db import db
from plugins.churn import classifier as clf
from plugins.churn.html_report import render_churn_report
from plugins.churn.models import ChurnModelVersion, TimeUnit
from tests.plugins.churn.conftest import NOW, days_ago

PERIOD = ((NOW - dt.timedelta(days=60)).date().isoformat(), NOW.date().isoformat())
ALPHA, BETA = 0.7, 3.1


def _version(**fields: object) -> ChurnModelVersion:
    version = ChurnModelVersion(as_of=days_ago(1), time_unit=TimeUnit.DAY, active=True,
                                feature_names=[], **fields)
    db.session.add(version)
    db.session.commit()
    return version


def _classifier_metrics(roc_auc: float) -> dict[str, object]:
    return {"kind": "logistic", "trained_at": days_ago(1).isoformat(), "notes": [],
            "cross_validation": {"method": "5-fold", "n": 400, "n_positive": 40,
                                 "roc_auc": roc_auc, "pr_auc": 0.11, "base_rate": 0.1,
                                 "brier": 0.09, "reliability": []},
            "time_validation": None}


def _page() -> str:
    return render_churn_report(*PERIOD, now=NOW)


def test_the_model_tables_show_labels_not_stored_keys(churn_app: Flask) -> None:
    _version(kind="logistic", params={
        "model": "bgnbd", "bgnbd": {"r": 0.8, "alpha": 16.0, "a": 0.6, "b": 3.0,
                                    "log_likelihood": -900.5, "n_customers": 300,
                                    "n_repeat_buyers": 120},
        "gamma_gamma": {"p": 6.1, "q": 3.9, "gamma": 15.2, "log_likelihood": -812.5}},
        metrics={"classifier": _classifier_metrics(0.81),
                 "training": {"as_of": days_ago(91).isoformat(), "horizon_days": 90,
                              "customers": 500, "labelled": 400, "churned": 40},
                 "bgnbd": {"log_likelihood": -900.5, "n_repeat_buyers": 120},
                 "notes": ["a note"], "model": "bgnbd"})
    page = _page()
    cells = re.findall(r"<t[hd]>([^<]*)</t[hd]>", page)
    stored = [c for c in cells if re.fullmatch(r"[a-z]+(_[a-z]+)+|[a-z_]+\.[a-z_.]+", c)]
    assert stored == []
    for label in ("Training: features as of", "Training: horizon (days)",
                  "Classifier: cross-validation, ROC-AUC", "Log-likelihood", "Repeat buyers",
                  "BG/NBD", "Gamma-Gamma", "logistic regression"):
        assert f">{label}<" in page, label
    assert "training.as_of" not in page and "roc_auc" not in page
    assert '<p class="note info">a note</p>' in page
    assert "no better than chance" not in page


def test_an_sbg_model_shows_survival_by_period_not_an_empty_p_alive(churn_app: Flask) -> None:
    _version(kind="sbg", params={"model": "sbg", "bgnbd": None, "gamma_gamma": None, "sbg": {
        "month": {"alpha": ALPHA, "beta": BETA, "log_likelihood": -512.25, "n_customers": 300,
                  "n_churned": 80, "max_tenure": 6, "period": "month"}}},
        metrics={"training": {"as_of": days_ago(91).isoformat(), "horizon_days": 90},
                 "notes": [], "model": "sbg"})
    page = _page()
    assert "<h2>P(alive) by frequency and recency</h2>" not in page
    assert "<h2>Subscriber survival by period</h2>" in page
    assert 'data-chart="sbg-survival"><svg' in page
    assert "P(alive) by frequency and recency is not shown" in page
    # S(1) = beta / (alpha + beta); S(2) = S(1) (beta + 1) / (alpha + beta + 1)
    s1 = BETA / (ALPHA + BETA)
    s2 = s1 * (BETA + 1) / (ALPHA + BETA + 1)
    r12 = (BETA + 11) / (ALPHA + BETA + 11)
    cell = r"<td>([^<]*)</td>"
    rows = re.findall(r'<tr><td class="num">(\d+)</td>' + 3 * cell, page)
    assert rows[0] == ("1", f"{100 * s1:.1f}%", f"{100 * s1:.1f}%", "")
    assert rows[1] == ("2", f"{100 * s2:.1f}%", f"{100 * (BETA + 1) / (ALPHA + BETA + 1):.1f}%",
                       "")
    assert ("12", f"{100 * r12:.1f}%", "extrapolated") == (rows[5][0], rows[5][2], rows[5][3])
    assert ">sBG (month)<" in page and ">Longest tenure (periods)<" in page


def test_a_classifier_at_chance_is_flagged_on_the_report(churn_app: Flask) -> None:
    _version(kind="logistic", params={"model": "bgnbd", "bgnbd": None},
             metrics={"classifier": _classifier_metrics(0.21), "notes": [], "model": "bgnbd"})
    page = _page()
    warning = re.search(r'<p class="note warning">([^<]*no better than chance[^<]*)</p>', page)
    assert warning is not None
    assert "cross-validation 0.21" in warning.group(1)
    assert "labels carry no signal the features can see" in warning.group(1)


def test_random_labels_give_the_fit_result_a_chance_warning() -> None:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 3))
    noise = clf.train_classifier(X, ["a", "b", "c"], (rng.random(300) < 0.3).astype(float),
                                 seed=0)
    auc = noise.cross_validation.metrics.roc_auc
    assert auc < clf.CHANCE_ROC_AUC
    (note,) = [n for n in noise.classifier.notes if "no better than chance" in n]
    assert note.startswith("warning:") and f"{auc:.2f}" in note
    signal = clf.train_classifier(X, ["a", "b", "c"], (X[:, 0] + 0.5 * rng.standard_normal(300)
                                                       > 0.5).astype(float), seed=0)
    assert signal.cross_validation.metrics.roc_auc > 0.8
    assert not [n for n in signal.classifier.notes if "chance" in n]
    assert clf.chance_level_note({"roc_auc": 0.55}) is None
    assert clf.chance_level_note({"roc_auc": 0.9}, {"roc_auc": 0.5}) is not None
