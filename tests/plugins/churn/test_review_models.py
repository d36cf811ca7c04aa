"""Review of the churn models and scores (issue 6): each test failed before its fix.

The reference for BG/NBD's conditional expectation is computed here from first principles,
independently of the closed form in btyd.py: given (x, t_x, T) and alive at T, the
posterior of the purchase rate is Gamma(r + x, alpha + T) and that of the dropout
probability Beta(a, b + x); a customer with rate lambda and dropout p makes
(1 - exp(-lambda p t)) / p purchases in expectation over the next t, whose mean over
lambda is (1 - ((alpha + T) / (alpha + T + p t))^(r + x)) / p. Hence

    E[Y(t) | x, t_x, T] = P(alive) * integral_0^1 Beta(p; a, b + x)
                          (1 - ((alpha + T) / (alpha + T + p t))^(r + x)) / p dp

(Fader, Hardie & Lee 2005, section 4), integrated numerically with ``scipy.integrate.quad``.
"""

from __future__ import annotations

import base64
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from scipy import integrate, special
from sqlalchemy import func, select, update

from api.types import decode_global_id
from core.cli import cli
from core.db import db
from core.models import Interaction
from plugins.churn import btyd, modeling
from plugins.churn.btyd import BGNBDParams
from plugins.churn.models import ChurnScore
from tests.conftest import GraphQL
from tests.plugins.churn.test_modeling import load_simulation

#: FHL 2005's CDNOW estimates (weeks) and two other shapes (a > 1; a small, r large).
PARAMS = [(0.243, 4.414, 0.793, 2.426), (0.8, 10.0, 1.2, 5.0), (2.0, 50.0, 0.3, 0.8)]
#: (x, t_x, T, t): ordinary customers and buyers on most days of several years, over
#: horizons up to ten years.
HISTORIES = [(2, 30.43, 38.86, 30.0), (0, 0.0, 38.86, 365.0), (100, 300.0, 365.0, 3650.0),
             (600, 1000.0, 1000.0, 3650.0), (1500, 1800.0, 1825.0, 3650.0),
             (50, 3640.0, 3650.0, 3650.0), (600, 1000.0, 1000.0, 365.0)]


def reference_expected_purchases(params: tuple[float, float, float, float], t: float,
                                 x: float, tx: float, T: float) -> float:
    """E[Y(t) | x, t_x, T] by numerical integration over the dropout probability."""
    r, alpha, a, b = params
    alive = float(btyd.probability_alive(params, [x], [tx], [T])[0])
    log_norm = special.betaln(a, b + x)

    def integrand(p: float) -> float:
        rest = math.exp((b + x - 1) * math.log1p(-p) - log_norm)
        if p == 0.0:
            return (r + x) * t / (alpha + T) * rest
        gain = -math.expm1((r + x) * (math.log(alpha + T) - math.log(alpha + T + p * t)))
        return gain / p * rest

    # weight "alg" with wvar (a - 1, 0): the integrable singularity p^(a - 1) at 0.
    value, _ = integrate.quad(integrand, 0.0, 1.0, weight="alg", wvar=(a - 1, 0.0),
                              limit=500, epsabs=0.0, epsrel=1e-11)
    return alive * value


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("x,tx,T,t", HISTORIES)
def test_expected_purchases_match_the_posterior_integral(params: tuple, x: float, tx: float,
                                                         T: float, t: float) -> None:
    """Defect: 1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(...) was 0 x inf = NaN (or +-inf) for
    frequent buyers over long horizons: CLV was NULL and expectedPurchases failed."""
    got = btyd.expected_purchases(params, t, [x], [tx], [T])[0]
    assert math.isfinite(got)
    assert got == pytest.approx(reference_expected_purchases(params, t, x, tx, T), rel=1e-6,
                                abs=1e-12)


def test_clv_of_a_near_daily_buyer_over_ten_years_is_finite() -> None:
    bgnbd, gamma_gamma = PARAMS[0], (6.25, 3.74, 15.44)
    x, tx, T, m = [600.0, 2.0], [1000.0, 30.0], [1000.0, 38.0], [35.0, 20.0]
    clv = btyd.customer_lifetime_value(bgnbd, gamma_gamma, x, tx, T, m, periods=120,
                                       period_length=30.4375, discount_rate=0.008)
    assert np.all(np.isfinite(clv)) and np.all(clv > 0)
    undiscounted = btyd.customer_lifetime_value(bgnbd, gamma_gamma, x, tx, T, m,
                                                periods=120, period_length=30.4375,
                                                discount_rate=0.0)
    aov = btyd.expected_order_value(gamma_gamma, x, m)
    expected = [reference_expected_purchases(bgnbd, 120 * 30.4375, *h)
                for h in zip(x, tx, T)]
    assert undiscounted == pytest.approx(aov * np.asarray(expected), rel=1e-6)


CHURN = "query($first: Int) { customers(first: $first) { edges { node { id churn { " \
        "expectedPurchases(days: 3650) clv } } } } }"


def test_expected_purchases_in_graphql_for_a_frequent_buyer(churn_app: Flask,
                                                           gql: GraphQL) -> None:
    """The same defect at the API: NaN reached GraphQL's Float (an error for the page)."""
    load_simulation(n=60, seed=3, with_marks=False)
    version = modeling.fit_models()
    modeling.score_customers()
    busy = db.session.scalars(select(ChurnScore.customer_id)
                              .order_by(ChurnScore.customer_id).limit(1)).one()
    db.session.execute(update(ChurnScore).where(ChurnScore.customer_id == busy)
                       .values(frequency=600, recency=1000.0, T=1000.0))
    db.session.commit()
    body = gql.raw(CHURN, {"first": 100}).get_json()
    assert "errors" not in body, body["errors"]
    churn = {decode_global_id(e["node"]["id"], "Customer"): e["node"]["churn"]
             for e in body["data"]["customers"]["edges"]}
    params = BGNBDParams.from_dict(version.params["bgnbd"])
    tuple_params = (params.r, params.alpha, params.a, params.b)
    assert churn[busy]["expectedPurchases"] == pytest.approx(
        reference_expected_purchases(tuple_params, 3650.0, 600, 1000.0, 1000.0), rel=1e-6)


WARNINGS = """query($after: String) { churnWarnings(first: 5, after: $after) {
    edges { node { priority } } } }"""


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("raw", ["[NaN,5]", "[Infinity,5]", "[-Infinity,5]"])
def test_a_non_finite_warning_cursor_is_bad_input(churn_app: Flask, gql: GraphQL,
                                                  raw: str) -> None:
    """Defect: Python's JSON reads NaN and Infinity, so an edited cursor was accepted and
    compared in SQL (SQLite: NULL, an empty page; PostgreSQL: NaN sorts above every
    number, the first page again)."""
    load_simulation(n=40, seed=5, with_marks=False)
    modeling.fit_models()
    modeling.score_customers()
    body = gql.raw(WARNINGS, {"after": _cursor(raw)}).get_json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["data"] is None


def test_warnings_without_scores_leave_an_existing_file_alone(churn_app: Flask,
                                                             tmp_path: Path) -> None:
    """Defect: the CSV was opened (truncated) before the check that there are scores, so
    a failed run destroyed last week's list."""
    folder = tmp_path / "lists"
    folder.mkdir()
    out = folder / "warnings.csv"
    out.write_text("customer_id\n42\n", encoding="utf-8")
    result = churn_app.test_cli_runner().invoke(cli, ["churn", "warnings", "--out", str(out)])
    assert result.exit_code == 1 and "rapport churn fit" in result.output
    assert out.read_text(encoding="utf-8") == "customer_id\n42\n"
    assert sorted(p.name for p in folder.iterdir()) == ["warnings.csv"]


def _heavy_tailed_spends(seed: int, q: float) -> None:
    """Every purchase's amount redrawn from Gamma-Gamma with this q: per customer
    nu ~ Gamma(q, scale 0.02), amounts Gamma(3, rate nu) (q <= 1: no finite mean)."""
    rng = np.random.default_rng(seed)
    rows = db.session.execute(select(Interaction.id, Interaction.customer_id).where(
        Interaction.kind == "purchase").order_by(Interaction.id)).all()
    customers = sorted({cid for _, cid in rows})
    nu = dict(zip(customers, rng.gamma(q, 0.02, size=len(customers))))
    for iid, cid in rows:
        amount = min(float(rng.gamma(3.0, 1.0 / nu[cid])), 1e8) + 0.01
        db.session.execute(update(Interaction).where(Interaction.id == iid).values(
            amount=Decimal(str(round(amount, 2)))))
    db.session.commit()


def test_a_gamma_gamma_without_a_finite_mean_is_not_stored(churn_app: Flask) -> None:
    """Defect: a Gamma-Gamma fit with q <= 1 (spends too heavy-tailed for a finite mean)
    was stored, and then every `rapport churn score` failed on it with INVALID_DATA until
    someone changed the data. Now the version has no Gamma-Gamma (no CLV) and says why."""
    load_simulation(n=300, seed=7, with_marks=False)
    _heavy_tailed_spends(seed=1, q=0.6)
    version = modeling.fit_models()
    assert version.params["gamma_gamma"] is None and version.kind == "bgnbd"
    assert any("q = " in note for note in version.metrics["notes"]), version.metrics["notes"]
    summary = modeling.score_customers()
    assert summary.customers == 300
    assert db.session.scalar(select(func.count()).select_from(ChurnScore).where(
        ChurnScore.clv.is_not(None))) == 0
