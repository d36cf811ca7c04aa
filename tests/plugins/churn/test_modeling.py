"""``modeling.fit_models`` and ``modeling.score_customers`` on purchases simulated from the
BG/NBD model itself (with a known dropout, so some customers go quiet), churn records for
the customers who went quiet, typed errors, and the stored versions and scores."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pytest
from flask import Flask
from sqlalchemy import func, select

from core.db import db
from core.services.customers import erase_customer, import_customers
from core.services.interactions import record_interactions
from plugins.churn import modeling, service
from plugins.churn.btyd import BGNBDParams, ChurnModelError, expected_purchases
from plugins.churn.classifier import roc_auc
from plugins.churn.models import ChurnModelVersion, ChurnScore, TimeUnit
from tests.conftest import AppFactory
from tests.plugins.churn.conftest import NOW, customer, days_ago, purchase


@dataclass
class Simulated:
    """Customer ids by external id, who dropped out, and who got a churn record when."""

    ids: dict[str, int]
    dropped: set[str]
    churned: dict[str, dt.datetime]


def simulate(n: int = 300, seed: int = 7, r: float = 2.0, alpha: float = 30.0,
             a: float = 2.0, b: float = 6.0) -> tuple[
                 list[dict[str, str]], list[dict[str, str]], dict[str, dt.datetime], set[str]]:
    """Customers, purchases and churn marks drawn from BG/NBD: each customer starts 150 to
    500 days ago, buys at a Gamma(r, alpha) daily rate, and after each repeat purchase
    leaves for good with a Beta(a, b) probability. A customer who left is marked churned
    when someone notices, 30 to 240 days after its last purchase (when that date is past).
    """
    rng = np.random.default_rng(seed)
    people, purchases, churned, dropped = [], [], {}, set()
    for k in range(n):
        key = f"S-{k:04d}"
        people.append({"name": f"Sim {k}", "external_id": key, "email": f"sim{k}@example.com"})
        rate = rng.gamma(r, 1.0 / alpha)
        leave = rng.beta(a, b)
        moment = NOW - dt.timedelta(days=float(rng.uniform(150, 500)))
        count = 0
        while moment < NOW:
            purchases.append({"kind": "purchase", "occurred_at": moment.isoformat(),
                              "amount": str(Decimal(str(round(float(rng.gamma(4, 8)), 2)))
                                            + Decimal("1.00")),
                              "currency": "USD", "external_id": f"{key}-{count}",
                              "source": "sim", "customer": key})
            count += 1
            if count > 1 and rng.random() < leave:
                dropped.add(key)
                when = moment + dt.timedelta(days=float(rng.uniform(30, 240)))
                if when < NOW - dt.timedelta(days=1):
                    churned[key] = when
                break
            moment += dt.timedelta(days=float(rng.exponential(1.0 / rate)))
    return people, purchases, churned, dropped


def load_simulation(n: int = 300, seed: int = 7, with_marks: bool = True) -> Simulated:
    people, purchases, churned, dropped = simulate(n, seed)
    result = import_customers(people)
    assert not result.errors
    ids = {p["external_id"]: result.recorded_ids[i] for i, p in enumerate(people)}
    rows = [{k: v for k, v in p.items() if k != "customer"} | {"customer_id": ids[p["customer"]]}
            for p in purchases]
    for start in range(0, len(rows), 1000):
        assert not record_interactions(rows[start:start + 1000]).errors
    if with_marks and churned:
        # One batch, as an import marks them: the same records, statuses, events and
        # churn-rate check as a mark_churned call per customer, without a monthly report
        # per mark (mark_churned itself: test_records.py).
        marked = service.mark_customers_churned([
            {"customer_id": ids[key], "type": "competitive", "reason": "pricing",
             "churned_at": when.isoformat()} for key, when in churned.items()])
        assert not marked.errors and len(marked.recorded_ids) == len(churned)
    return Simulated(ids, dropped, churned if with_marks else {})


def test_fit_and_score_simulated_customers(churn_app: Flask) -> None:
    sim = load_simulation()
    assert len(sim.churned) >= 40
    version = modeling.fit_models(horizon_days=120)
    assert version.active and version.kind == "logistic"
    assert version.params["bgnbd"]["time_unit"] == "day"
    assert version.params["gamma_gamma"] is not None
    classifier = version.metrics["classifier"]
    assert classifier["cross_validation"]["roc_auc"] > 0.6
    assert version.metrics["training"]["churned"] >= 5
    assert version.feature_names[-1] == "btyd_dropout_probability"
    # The version's training date is horizon days before the calibration date.
    assert dt.datetime.fromisoformat(version.metrics["training"]["as_of"]) == pytest.approx(
        version.as_of - dt.timedelta(days=120), abs=dt.timedelta(seconds=1))

    seen: list[tuple[int, int]] = []
    summary = modeling.score_customers(chunk_size=100, progress=lambda d, t: seen.append((d, t)))
    assert summary.customers == len(sim.ids) and summary.model_version == version.id
    assert seen[0] == (0, len(sim.ids)) and seen[-1] == (len(sim.ids), len(sim.ids))
    scores = {s.customer_id: s for s in db.session.scalars(select(ChurnScore))}
    assert len(scores) == len(sim.ids)
    by_key = {k: scores[v] for k, v in sim.ids.items()}
    quiet = [s.p_alive for k, s in by_key.items() if k in sim.dropped]
    buying = [s.p_alive for k, s in by_key.items() if k not in sim.dropped]
    assert np.mean(quiet) < np.mean(buying) - 0.2
    labels = np.array([k in sim.churned for k in by_key])
    assert roc_auc(labels, np.array([s.risk for s in by_key.values()])) > 0.7
    some = next(s for s in by_key.values() if s.frequency and s.frequency > 1)
    assert some.clv is not None and some.clv > 0 and some.expected_aov > 0
    assert some.priority == pytest.approx(some.risk * some.clv)
    assert 1 <= len(some.top_factors) <= 5
    assert {"feature", "contribution"} <= set(some.top_factors[0])

    # A second fit deactivates the first; scoring again replaces the old version's scores.
    second = modeling.fit_models(time_unit="week", classifier="gradient_boosting",
                                 horizon_days=120)
    db.session.expire_all()
    assert db.session.scalars(select(ChurnModelVersion.id).where(
        ChurnModelVersion.active.is_(True))).all() == [second.id]
    again = modeling.score_customers()
    assert again.removed_old_scores == len(sim.ids)
    assert set(db.session.scalars(select(ChurnScore.model_version_id))) == {second.id}


def test_erased_customers_are_not_scored(churn_app: Flask) -> None:
    sim = load_simulation(n=120, seed=3, with_marks=False)
    version = modeling.fit_models()
    assert version.kind == "bgnbd+gg"  # no churn record: no classifier
    assert any("no classifier" in note for note in version.metrics["notes"])
    gone = sim.ids["S-0001"]
    erase_customer(gone)
    summary = modeling.score_customers()
    assert summary.customers == len(sim.ids) - 1
    assert db.session.scalar(select(func.count()).select_from(ChurnScore).where(
        ChurnScore.customer_id == gone)) == 0
    # Without a classifier risk is 1 - P(alive) and there are no factors.
    score = db.session.scalars(select(ChurnScore).where(ChurnScore.p_alive.is_not(None))
                               .limit(1)).one()
    assert score.risk == pytest.approx(1 - score.p_alive)
    assert score.top_factors == []


def test_one_class_fits_btyd_only_and_says_why(churn_app: Flask) -> None:
    sim = load_simulation(n=120, seed=5, with_marks=False)
    # Every label of the window is the same class (one churned customer only).
    service.mark_churned({"customer_id": sim.ids["S-0002"], "type": "natural",
                          "reason": "other", "churned_at": days_ago(5).isoformat()})
    version = modeling.fit_models()
    assert version.artifact is None and version.feature_names == []
    notes = " ".join(version.metrics["notes"])
    assert "no classifier" in notes and "churned" in notes


def test_typed_errors(churn_app: Flask) -> None:
    with pytest.raises(modeling.NoModel) as no_model:
        modeling.score_customers()
    assert no_model.value.errors[0].code == "NO_MODEL"
    for n in range(5):  # too few customers
        person = customer(f"Few {n}")
        purchase(person, days_ago(100))
        purchase(person, days_ago(50))
    with pytest.raises(ChurnModelError) as few:
        modeling.fit_models()
    assert few.value.errors[0].code == "INSUFFICIENT_DATA"
    assert "at least 20 customers" in few.value.errors[0].message
    for kwargs, field_name in (({"time_unit": "month"}, "timeUnit"),
                               ({"classifier": "svm"}, "classifier"),
                               ({"horizon_days": 0}, "horizonDays"),
                               ({"as_of": NOW + dt.timedelta(days=3)}, "asOf")):
        with pytest.raises(ChurnModelError) as bad:
            modeling.fit_models(**kwargs)  # type: ignore[arg-type]
        assert (bad.value.errors[0].code, bad.value.errors[0].field) == (
            "INVALID_DATA", field_name)
    assert db.session.scalar(select(func.count()).select_from(ChurnModelVersion)) == 0


def test_no_repeat_buyer_is_insufficient_data(churn_app: Flask) -> None:
    for n in range(25):
        purchase(customer(f"Once {n}"), days_ago(30 + n))
    with pytest.raises(ChurnModelError) as none:
        modeling.fit_models()
    assert none.value.errors[0].code == "INSUFFICIENT_DATA"
    assert "repeat purchase" in none.value.errors[0].message


def test_clv_settings(make_app: AppFactory) -> None:
    app = make_app(enabled=["churn"], RAPPORT_CHURN_CLV_HORIZON_MONTHS="24",
                   RAPPORT_CHURN_DISCOUNT_RATE="0.2")
    settings = app.extensions[modeling.EXTENSION]
    assert (settings.clv_horizon_months, settings.discount_rate) == (24, 0.2)
    assert (1 + settings.monthly_discount_rate) ** 12 == pytest.approx(1.2)
    from core.config import ConfigError
    with pytest.raises(ConfigError, match="RAPPORT_CHURN_DISCOUNT_RATE"):
        make_app(enabled=["churn"], RAPPORT_CHURN_DISCOUNT_RATE="ten percent")
    with pytest.raises(ConfigError, match="RAPPORT_CHURN_CLV_HORIZON_MONTHS"):
        make_app(enabled=["churn"], RAPPORT_CHURN_CLV_HORIZON_MONTHS="0")


def test_week_unit_stores_summaries_in_weeks(churn_app: Flask) -> None:
    sim = load_simulation(n=100, seed=11, with_marks=False)
    modeling.fit_models(time_unit="week")
    modeling.score_customers()
    version = modeling.active_version()
    assert version is not None and version.time_unit == TimeUnit.WEEK
    score = db.session.scalars(select(ChurnScore).where(
        ChurnScore.customer_id == sim.ids["S-0000"])).one()
    assert score.T is not None and score.T < 500 / 7 + 1
    params = BGNBDParams.from_dict(version.params["bgnbd"])
    direct = expected_purchases(params, 10.0, [score.frequency], [score.recency], [score.T])
    assert modeling.expected_purchases(version, score, 70) == pytest.approx(direct[0])
