"""The paths that make a million-customer run fast, checked for what they return: the
binary COPY reader (NULL as NaN, empty results, the same numbers as the driver's rows),
the read-ahead connection (the same chunks in the same order), the training sample chosen
in SQL, statistics refreshed before a fit, and two scoring runs at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from flask import Flask
from sqlalchemy import Float, cast, create_engine, func, literal, null, select, text

from core.db import db
from core.models import Customer
from plugins.churn import features, modeling
from plugins.churn.models import ChurnScore
from tests.conftest import wait_for_a_lock_wait
from tests.plugins.churn.conftest import customer, days_ago, many_customers, purchase
from tests.plugins.churn.test_modeling import load_simulation
from tests.plugins.churn.test_review import _while_held


def _driver_rows(stmt: object) -> np.ndarray:
    rows = db.session.execute(stmt).all()  # type: ignore[call-overload]
    return np.asarray([[np.nan if v is None else float(v) for v in r] for r in rows])


def test_fetch_matrix_reads_nulls_as_nan_and_empty_results(churn_app: Flask) -> None:
    ids = [customer(f"C{k}") for k in range(5)]
    # % as an operator and inside literals: the SQL goes to COPY without parameters.
    stmt = (select(Customer.id, cast(Customer.id * 1.5, Float),
                   func.nullif(Customer.id % 2, 0), literal(1e300), literal(-0.25),
                   func.length(literal("50%% off, 5% more") + Customer.name))
            .order_by(Customer.id))
    got = features.fetch_matrix(stmt)
    assert got.shape == (5, 6)
    assert got[0, 5] == len("50%% off, 5% more") + len("C0")
    np.testing.assert_array_equal(got[:, 0], ids)
    np.testing.assert_allclose(got[:, 1], np.asarray(ids) * 1.5)
    assert np.isnan(got[:, 2][np.asarray(ids) % 2 == 0]).all()
    np.testing.assert_array_equal(got, _driver_rows(stmt))
    empty = features.fetch_matrix(select(Customer.id, null()).where(Customer.id < 0))
    assert empty.shape == (0, 2)


def test_read_ahead_gives_every_chunk_in_order(churn_app: Flask) -> None:
    ids = [customer(f"C{k}", created_days_ago=30) for k in range(23)]
    for k, cid in enumerate(ids):
        purchase(cid, days_ago(k + 1), f"{k + 1}.00")
    spec = features.feature_spec(days_ago(0))
    chunks = list(features.feature_chunks(spec, chunk_size=5))
    assert [len(c.customer_ids) for c in chunks] == [5, 5, 5, 5, 3]
    assert np.concatenate([c.customer_ids for c in chunks]).tolist() == ids
    # The same numbers as one chunk read by the caller's own connection.
    customers, id_range = next(features.customer_chunks(spec.as_of, 100))
    whole = _driver_rows(features.feature_select(customers, spec, id_range)
                         .order_by(customers.c.customer_id))
    np.testing.assert_allclose(np.vstack([c.values for c in chunks]), whole[:, 1:])
    summaries = list(features.btyd_chunks(days_ago(0), chunk_size=4))
    assert np.concatenate([s.customer_ids for s in summaries]).tolist() == ids


def test_the_training_sample_is_chosen_in_sql(churn_app: Flask) -> None:
    ids = many_customers(400, created_days_ago=30)
    condition = features.sampled(0.25)
    chosen = set(db.session.scalars(select(Customer.id).where(condition)))
    assert 60 <= len(chosen) <= 140 and chosen < set(ids)
    # Deterministic, and nested: a bigger share keeps the smaller one's customers.
    assert chosen == set(db.session.scalars(select(Customer.id).where(condition)))
    assert chosen <= set(db.session.scalars(select(Customer.id).where(features.sampled(0.5))))
    sample = [c for chunk, _ in features.customer_chunks(days_ago(0), 50, share=0.25)
              for c in db.session.scalars(select(chunk.c.customer_id))]
    assert set(sample) == chosen
    # Through the binary COPY too (the hash's % operator reaches PostgreSQL as %).
    spec = features.feature_spec(days_ago(0))
    read = [c for chunk in features.feature_chunks(spec, 50, share=0.25)
            for c in chunk.customer_ids.tolist()]
    assert read == sorted(chosen)


def test_a_fit_refreshes_missing_statistics_first(churn_app: Flask, database_url: str
                                                   ) -> None:
    load_simulation(n=120, seed=3, with_marks=False)
    if not database_url.startswith("postgresql"):
        assert features.refresh_statistics(days_ago(0)) == []
        return
    # The test tables were truncated (never analyzed since) and just filled.
    analyzed = features.refresh_statistics(days_ago(0))
    assert {"customers", "interactions"} <= set(analyzed)
    assert features.refresh_statistics(days_ago(0)) == []  # fresh now: nothing to do
    reltuples = db.session.execute(text(
        "SELECT reltuples FROM pg_class WHERE relname = 'interactions'")).scalar_one()
    assert reltuples > 0  # -1 before: never analyzed


def test_statistics_of_a_table_analyzed_nearly_empty_are_refreshed(
        churn_app: Flask, database_url: str) -> None:
    """Autovacuum may analyze a table early in a load, while it is nearly empty; a few
    hundred rows later its statistics still say "empty". The fit analyzes it again, as
    autovacuum would on its next pass (threshold 50 + 10% of the rows by default)."""
    if not database_url.startswith("postgresql"):
        return
    customer("First")
    db.session.commit()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE customers")
    assert "customers" not in features.refresh_statistics(days_ago(0))
    many_customers(200)
    # A backend reports its row counts to the statistics at most once a second, and up to
    # ten seconds later when it goes idle: the fit must not wait for that report.
    db.session.commit()
    assert "customers" in features.refresh_statistics(days_ago(0))
    reltuples = db.session.execute(text(
        "SELECT reltuples FROM pg_class WHERE relname = 'customers'")).scalar_one()
    assert reltuples > 150


def test_two_scoring_runs_at_once_both_finish(churn_app: Flask, database_url: str) -> None:
    """A run holds the scoring lock in a transaction left open; a second run waits on it,
    then replaces the first one's scores instead of failing on the unique key."""
    sim = load_simulation(n=120, seed=3, with_marks=False)
    modeling.fit_models()
    hold = [select(func.pg_advisory_xact_lock(modeling._SCORE_LOCK))]
    summary = _while_held(churn_app, database_url, hold, modeling.score_customers)
    assert isinstance(summary, modeling.ScoreSummary), summary
    again = modeling.score_customers()
    assert summary.customers == again.customers == len(sim.ids)
    assert db.session.scalar(select(func.count()).select_from(ChurnScore)) == len(sim.ids)


def test_a_fit_on_a_sample_trains_on_that_share(churn_app: Flask,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    load_simulation(n=300, seed=7)
    monkeypatch.setattr(modeling, "MAX_TRAINING_ROWS", 100)
    version = modeling.fit_models(horizon_days=120)
    training = version.metrics["training"]
    # 300 customers existed at the training date; about a third of them were sampled.
    assert training["customers"] == 300
    assert 60 <= training["labelled"] <= 140
    assert version.params["bgnbd"]["r"] > 0


def test_read_ahead_behind_a_queued_ddl_runs_on_the_session(
        churn_app: Flask, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session holds its table locks; an ALTER TABLE queues behind them; a new
    connection's read would queue behind the ALTER (and the session wait for that read):
    the read-ahead gives up after its lock timeout and the job runs on the session."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no read-ahead connection")
    ids = [customer(f"C{k}", created_days_ago=30) for k in range(5)]
    for cid in ids:
        purchase(cid, days_ago(3))
    monkeypatch.setattr(features, "READ_AHEAD_LOCK_TIMEOUT", "300ms")
    spec = features.feature_spec(days_ago(0))  # the session now holds customers' lock
    engine = create_engine(db.engine.url)
    ddl = engine.connect()
    waiting = threading.Thread(target=lambda: ddl.execute(
        text("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")))
    waiting.start()
    try:
        assert wait_for_a_lock_wait(engine)  # the LOCK queues behind the session
        chunks = list(features.feature_chunks(spec, chunk_size=2))
        assert np.concatenate([c.customer_ids for c in chunks]).tolist() == ids
    finally:
        db.session.rollback()  # releases the session's locks: the LOCK gets through
        waiting.join(timeout=30)
        ddl.rollback()
        ddl.close()
        engine.dispose()
    assert not waiting.is_alive()
