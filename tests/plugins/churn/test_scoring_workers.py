"""Scoring split into chunks run in parallel (docs/churn.md, "Scoring across workers"): the
result equals a one-chunk run; chunks hold no lock in common; a failed or cancelled run
publishes nothing; with a real broker, two worker processes share a run."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from core import jobs
from core.db import db
from core.job_tables import Job, JobStatus
from plugins.churn import modeling
from plugins.churn.models import (
    ChurnScore, ChurnScoreRun, ChurnScoreStaging, ScoringRunStatus,
)
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.core.test_jobs_broker import BROKER, Workers, _broker_problem, app_on_broker
from tests.plugins.churn.test_modeling import load_simulation

COLUMNS = ("customer_id", "model_version_id", "risk", "p_alive", "frequency", "recency", "T",
           "expected_aov", "clv", "priority", "top_factors")


def all_scores() -> list[tuple[Any, ...]]:
    return [tuple(getattr(s, c) for c in COLUMNS) for s in db.session.scalars(
        select(ChurnScore).order_by(ChurnScore.customer_id))]


def staged_rows() -> int:
    return db.session.scalar(select(func.count()).select_from(ChurnScoreStaging)) or 0


def test_a_run_split_in_chunks_equals_a_one_chunk_run(churn_app: Flask,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sim = load_simulation(n=150, seed=7)
    version = modeling.fit_models(horizon_days=120)
    assert version.artifact is not None  # a classifier: top factors are compared too
    # Both runs on the same clock: features such as ages move with it.
    clock = modeling.utcnow()
    monkeypatch.setattr(modeling, "utcnow", lambda: clock)
    one = modeling.score_customers(chunk_size=100, parts=1)
    single = all_scores()
    split = modeling.score_customers(chunk_size=100, parts=7)
    db.session.expire_all()
    assert all_scores() == single  # every column of every customer, exactly
    assert len(single) == len(sim.ids) == one.customers == split.customers
    assert (split.high_risk, split.with_purchases) == (one.high_risk, one.with_purchases)
    assert split.mean_risk == pytest.approx(one.mean_risk, rel=1e-12)
    runs = db.session.execute(select(ChurnScoreRun.chunks, ChurnScoreRun.status)
                              .order_by(ChurnScoreRun.id)).all()
    # 150 customers make two whole batches of 100: two chunks at most.
    assert runs == [(1, ScoringRunStatus.PUBLISHED), (2, ScoringRunStatus.PUBLISHED)]
    assert staged_rows() == 0


def test_the_id_ranges_cover_every_customer_once() -> None:
    import numpy as np

    ids = np.array([3, 4, 9, 10, 11, 20, 21], dtype=float)
    assert modeling.split_ids(ids, 3, 1) == [((2, 9), 3), ((9, 11), 2), ((11, 21), 2)]
    assert [n for _, n in modeling.split_ids(ids, 50, 1)] == [1] * 7
    # Whole batches of 2: [3 4] [9 10] [11 20] [21] shared by 3 ranges.
    assert modeling.split_ids(ids, 3, 2) == [((2, 10), 4), ((10, 20), 2), ((20, 21), 1)]
    assert modeling.split_ids(ids, 3, 100) == [((2, 21), 7)]
    assert modeling.split_ids(ids[:0], 4, 2) == []


def test_chunks_run_at_once_without_a_shared_lock(churn_app: Flask, database_url: str
                                                  ) -> None:
    """Two chunks of one run hold their write transactions open at the same moment; the
    database shows neither waiting for a lock (pg_locks, pg_stat_activity), and no
    advisory lock held; then both commit and the run publishes."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: concurrency only means something on PostgreSQL")
    sim = load_simulation(n=120, seed=3, with_marks=False)
    modeling.fit_models()
    plan = modeling.plan_scoring(parts=2, chunk_size=100)
    assert len(plan.ranges) == 2
    inside = threading.Barrier(3, timeout=60)
    leave = threading.Barrier(3, timeout=60)
    results: dict[int, Any] = {}

    def chunk(index: int) -> None:
        def progress(done: int, total: int) -> None:
            if done and done >= total:  # scored and written: the transaction is still open
                inside.wait()
                leave.wait()

        with churn_app.app_context():
            try:
                results[index] = modeling.score_range(plan.run_id, plan.ranges[index], 100,
                                                      progress, plan.sizes[index])
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                results[index] = exc
                inside.abort()
                leave.abort()
            finally:
                db.session.remove()

    threads = [threading.Thread(target=chunk, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    inside.wait()
    time.sleep(0.5)  # each writer thread's COPY of its chunk has landed by now
    database = db.session.scalar(text("SELECT current_database()"))
    writing = db.session.execute(text(
        "SELECT pid, state, wait_event_type FROM pg_stat_activity "
        "WHERE datname = :db AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"),
        {"db": database}).all()
    waiting = db.session.execute(text(
        "SELECT l.pid, l.locktype, l.mode FROM pg_locks l JOIN pg_stat_activity a "
        "ON a.pid = l.pid WHERE a.datname = :db AND NOT l.granted"), {"db": database}).all()
    advisory = db.session.execute(text(  # of this database: the server may hold others
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())")).all()
    db.session.rollback()
    leave.wait()
    for thread in threads:
        thread.join(timeout=60)
    assert len(writing) == 2, writing  # both chunks' transactions wrote and are open
    assert all(w.wait_event_type != "Lock" for w in writing), writing
    assert waiting == [] and advisory == []
    totals = [results[0], results[1]]
    assert all(isinstance(t, modeling.RangeTotals) for t in totals), totals
    summary = modeling.publish_run(plan.run_id, totals)
    assert summary.customers == len(sim.ids)
    assert db.session.scalar(select(func.count()).select_from(ChurnScore)) == len(sim.ids)


@pytest.fixture
def jobs_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["churn"], RAPPORT_JOB_THREADS=1, RAPPORT_RATE_LIMIT="unlimited")
    with app.app_context():
        yield app
    jobs.wait_for_threads(app)


def _wait(job_id: int, done: Any, timeout: float = 120) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        db.session.expire_all()
        job = db.session.get(Job, job_id)
        assert job is not None
        if done(job):
            return job
        assert time.monotonic() < deadline, (job.status, job.message)
        time.sleep(0.05)


def _children(job_id: int) -> list[Job]:
    return list(db.session.scalars(select(Job).where(Job.parent_id == job_id)
                                   .order_by(Job.id)))


def test_a_score_job_fans_out_and_its_last_chunk_publishes(jobs_app: Flask) -> None:
    sim = load_simulation(n=120, seed=3, with_marks=False)
    modeling.fit_models()
    job = jobs.start_job("churn.score", {"chunkSize": 100, "chunks": 3})
    done = _wait(job.id, lambda j: j.status in (JobStatus.SUCCEEDED, JobStatus.FAILED))
    assert done.status is JobStatus.SUCCEEDED, (done.error_code, done.error_message)
    assert done.result["customers"] == len(sim.ids) and done.progress == 1.0
    children = _children(job.id)
    # 120 customers make two whole batches of 100 (modeling.split_ids): two chunks.
    assert [c.kind for c in children] == ["churn.score_chunk"] * 2
    assert all(c.status is JobStatus.SUCCEEDED for c in children)
    assert sum(c.result["customers"] for c in children) == len(sim.ids)
    assert db.session.scalar(select(func.count()).select_from(ChurnScore)) == len(sim.ids)
    # A chunk is started by its parent only.
    with pytest.raises(jobs.UserError) as refused:
        jobs.start_job("churn.score_chunk", {"run": 1, "after": 0, "upTo": 9, "customers": 1})
    assert refused.value.errors[0].code == "UNKNOWN_KIND"


def test_a_failing_chunk_fails_the_run_and_publishes_nothing(
        jobs_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    load_simulation(n=120, seed=3, with_marks=False)
    modeling.fit_models()
    modeling.score_customers()
    before = all_scores()
    real = modeling.score_range
    calls = []

    def second_fails(run_id: int, id_range: Any, *args: Any) -> modeling.RangeTotals:
        calls.append(id_range)
        if len(calls) == 2:
            raise modeling.InvalidModelData("a chunk that cannot be scored", "chunk")
        return real(run_id, id_range, *args)

    monkeypatch.setattr(modeling, "score_range", second_fails)
    job = jobs.start_job("churn.score", {"chunkSize": 100, "chunks": 3})
    done = _wait(job.id, lambda j: j.status in (JobStatus.SUCCEEDED, JobStatus.FAILED))
    assert done.status is JobStatus.FAILED and done.error_code == "INVALID_DATA"
    assert "churn.score_chunk" in done.error_message
    assert "a chunk that cannot be scored" in done.error_message
    jobs.wait_for_threads(jobs_app)
    db.session.expire_all()
    statuses = [c.status for c in _children(job.id)]
    assert JobStatus.FAILED in statuses and JobStatus.RUNNING not in statuses
    run = db.session.scalars(select(ChurnScoreRun).order_by(ChurnScoreRun.id.desc())).first()
    assert run.status is ScoringRunStatus.FAILED and run.message
    assert staged_rows() == 0 and all_scores() == before  # the previous run stays current
    monkeypatch.setattr(modeling, "score_range", real)
    assert modeling.score_customers().customers == len(before)  # not blocked by the failure


def test_cancelling_the_score_job_cancels_its_chunks(
        jobs_app: Flask, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite: a running chunk's transaction holds the file's write lock, so "
                    "neither cancelJob nor the chunk's progress can write until it ends")
    load_simulation(n=120, seed=3, with_marks=False)
    modeling.fit_models()
    release = threading.Event()
    real = modeling.score_range

    def slow(run_id: int, id_range: Any, chunk_size: int, progress: Any, *args: Any
             ) -> modeling.RangeTotals:
        def waiting(done: int, total: int) -> None:
            progress(done, total)
            while not release.wait(0.05):
                progress(done, total)  # a cancelled chunk stops here

        return real(run_id, id_range, chunk_size, waiting, *args)

    monkeypatch.setattr(modeling, "score_range", slow)
    job = jobs.start_job("churn.score", {"chunkSize": 100, "chunks": 4})
    _wait(job.id, lambda j: any(c.status is JobStatus.RUNNING for c in _children(j.id)))
    cancelled = jobs.cancel_job(job.id)
    assert cancelled.status is JobStatus.RUNNING  # until its running chunk stops
    done = _wait(job.id, lambda j: j.status is not JobStatus.RUNNING)
    release.set()
    assert done.status is JobStatus.CANCELLED
    jobs.wait_for_threads(jobs_app)
    db.session.expire_all()
    assert {c.status for c in _children(job.id)} == {JobStatus.CANCELLED}
    run = db.session.scalars(select(ChurnScoreRun)).one()
    assert run.status is ScoringRunStatus.FAILED
    assert staged_rows() == 0
    assert db.session.scalar(select(func.count()).select_from(ChurnScore)) == 0


def test_a_second_run_waits_for_none_and_is_refused_while_one_is_open(churn_app: Flask
                                                                       ) -> None:
    load_simulation(n=60, seed=3, with_marks=False)
    modeling.fit_models()
    plan = modeling.plan_scoring(parts=2)
    with pytest.raises(modeling.ScoringInProgress) as busy:
        modeling.plan_scoring(parts=2)
    assert busy.value.errors[0].code == "SCORING_IN_PROGRESS"
    assert f"scoring run {plan.run_id}" in busy.value.errors[0].message
    modeling.abandon_run(plan.run_id, "given up in a test")
    with pytest.raises(modeling.ScoringRunClosed):
        modeling.score_range(plan.run_id, plan.ranges[0], 100)
    assert modeling.score_customers().customers == 60


# --- With a real broker and two `rapport worker` processes ------------------------------------

START = """mutation($parameters: GenericScalar) {
  startJob(input: {kind: "churn.score", parameters: $parameters}) {
    job { id } errors { field code message } } }"""
JOB = """query($id: ID!) { job(id: $id) { status progress result error { code message } } }"""


@pytest.fixture
def two_workers(make_app: AppFactory, database_url: str, tmp_path: Path
                ) -> Iterator[tuple[Flask, Workers]]:
    problem = _broker_problem()
    if problem:
        if os.environ.get("RAPPORT_REQUIRE_BROKER") == "1":
            pytest.fail(f"RAPPORT_REQUIRE_BROKER=1 but {problem}")
        pytest.skip(f"broker tests skipped: {problem}")
    with app_on_broker(make_app, BROKER, database_url, tmp_path, ["churn"]) as pair:
        yield pair


def test_a_run_split_over_two_worker_processes_succeeds(
        two_workers: tuple[Flask, Workers], database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several worker processes share one PostgreSQL (SQLite: one writer)")
    app, workers = two_workers
    sim = load_simulation(n=120, seed=3, with_marks=False)
    modeling.fit_models()
    # The workers' clock cannot be frozen: compare with a one-chunk run at the run's time.
    for _ in range(2):
        workers.start()
    gql = GraphQL(app, admin_token(app))
    started = gql(START, {"parameters": {"chunkSize": 100, "chunks": 6}})["startJob"]
    assert started["errors"] == []
    deadline = time.monotonic() + 180
    while True:
        job = gql(JOB, {"id": started["job"]["id"]})["job"]
        if job["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"{job}\n" + "\n".join(
                workers.log(n + 1)[-3000:] for n in range(2)))
        time.sleep(0.2)
    assert job["status"] == "SUCCEEDED", (job, workers.log(1)[-3000:], workers.log(2)[-3000:])
    assert job["result"]["customers"] == len(sim.ids) and job["progress"] == 1.0
    db.session.expire_all()
    chunk_workers = set(db.session.scalars(select(Job.worker).where(
        Job.kind == "churn.score_chunk")))
    hosts = {w.split(":")[-1].split("@")[0] for w in chunk_workers}
    assert hosts == {"worker1", "worker2"}, chunk_workers  # both processes took chunks
    split = all_scores()
    run = db.session.scalars(select(ChurnScoreRun).order_by(ChurnScoreRun.id.desc())).first()
    clock = run.scored_at
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modeling, "utcnow", lambda: clock)
        modeling.score_customers(chunk_size=100)
    db.session.expire_all()
    assert all_scores() == split  # the same scores as a one-process, one-chunk run
