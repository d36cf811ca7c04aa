"""Jobs on a real broker and real ``rapport worker`` processes.

The broker comes from RAPPORT_TEST_BROKER_URL (e.g. redis://127.0.0.1:6379/15); without it
these tests skip, unless RAPPORT_REQUIRE_BROKER=1 (CI), where they fail. Each test uses
its own queue name on the broker, and the workers use the test's database (a SQLite file
or the PostgreSQL test database).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from core import jobs
from core.db import db
from core.job_tables import Job
from core.models import Customer
from tests.conftest import AppFactory, GraphQL, admin_token

BROKER = os.environ.get("RAPPORT_TEST_BROKER_URL", "")
REQUIRE = os.environ.get("RAPPORT_REQUIRE_BROKER") == "1"
ROOT = Path(__file__).resolve().parents[2]
IMPORT = "core.import_customers"

START = """mutation($parameters: GenericScalar) {
  startJob(input: {kind: "core.import_customers", parameters: $parameters}) {
    job { id status } errors { field code message }
  }
}"""
JOB = """query($id: ID!) {
  job(id: $id) { status progress attempts result error { code message } message }
}"""


def _broker_problem() -> str | None:
    if not BROKER:
        return "RAPPORT_TEST_BROKER_URL is not set"
    try:
        from kombu import Connection
    except ImportError:
        return 'Celery is not installed (pip install "rapport-crm[queue]")'
    try:
        with Connection(BROKER, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"the broker at RAPPORT_TEST_BROKER_URL is unreachable: {exc}"
    return None


@pytest.fixture(scope="module")
def broker() -> str:
    problem = _broker_problem()
    if problem:
        if REQUIRE:
            pytest.fail(f"RAPPORT_REQUIRE_BROKER=1 but {problem}")
        pytest.skip(f"broker tests skipped: {problem}")
    return BROKER


class Workers:
    """``rapport worker`` processes on the test's database and queue."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        number = len(self.processes) + 1
        log = (self.log_dir / f"worker{number}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "worker", "--pool", "solo",
             "--hostname", f"worker{number}@%h"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def log(self, number: int) -> str:
        return (self.log_dir / f"worker{number}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def app_on_broker(make_app: AppFactory, broker: str, database_url: str, tmp_path: Path,
                  plugins: list[str], **config: str) -> Iterator[tuple[Flask, Workers]]:
    """An app and ``rapport worker`` processes sharing a queue of their own on ``broker``
    and the test's database; the workers are stopped and the queue removed afterwards."""
    settings = {
        "RAPPORT_BROKER_URL": broker,
        "RAPPORT_JOB_QUEUE": f"rapport.test.{uuid.uuid4().hex[:12]}",
        "RAPPORT_SECRET_KEY": "broker-tests",
        "RAPPORT_INSTANCE_PATH": str(tmp_path / "instance"),
        "RAPPORT_RATE_LIMIT": "unlimited",  # the tests poll job(id) quickly
        **config,
    }
    app = make_app(enabled=plugins, **settings)
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAPPORT_")}
    env.update(settings, RAPPORT_ENV="test", RAPPORT_DATABASE_URL=database_url,
               RAPPORT_PLUGINS=",".join(plugins), PYTHONUNBUFFERED="1")
    workers = Workers(env, tmp_path)
    try:
        with app.app_context():
            yield app, workers
    finally:
        workers.stop_all()
        if broker.startswith("redis"):
            import redis

            client = redis.Redis.from_url(broker)
            for key in client.scan_iter(f"*{settings['RAPPORT_JOB_QUEUE']}*"):
                client.delete(key)


@pytest.fixture
def queue_app(broker: str, make_app: AppFactory, database_url: str, tmp_path: Path,
              request: pytest.FixtureRequest) -> Iterator[tuple[Flask, Workers]]:
    attempts = getattr(request, "param", 3)
    # A killed worker's message comes back after 2 s; its job looks dead after 1.5 s.
    with app_on_broker(make_app, broker, database_url, tmp_path, [],
                       RAPPORT_JOB_VISIBILITY_TIMEOUT="2",
                       RAPPORT_JOB_HEARTBEAT_SECONDS="0.5",
                       RAPPORT_JOB_MAX_ATTEMPTS=str(attempts)) as pair:
        yield pair


def _customers_csv(path: Path, count: int) -> Path:
    with path.open("w") as handle:
        handle.write("external_id,name,country\n")
        for number in range(count):
            handle.write(f"c-{number},Customer {number},GB\n")
    return path


def _poll(gql: GraphQL, job_id: str, done: Any, timeout: float, workers: Workers
          ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = gql(JOB, {"id": job_id})["job"]
        if done(job):
            return job  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            logs = "\n".join(workers.log(n + 1)[-3000:] for n in range(len(workers.processes)))
            raise AssertionError(f"job {job} did not get there; worker logs:\n{logs}")
        time.sleep(0.1)


def _upload(app: Flask, token: str, path: Path) -> str:
    response = app.test_client().post(
        "/files?kind=core.import_customers&name=customers.csv", data=path.read_bytes(),
        headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]  # type: ignore[no-any-return]


def test_an_import_job_runs_end_to_end_on_a_worker(queue_app: tuple[Flask, Workers],
                                                   tmp_path: Path) -> None:
    app, workers = queue_app
    gql = GraphQL(app, admin_token(app))
    file_id = _upload(app, gql.token or "", _customers_csv(tmp_path / "c.csv", 50))
    started = gql(START, {"parameters": {"file": file_id, "batchSize": 20}})["startJob"]
    assert started["errors"] == [] and started["job"]["status"] == "QUEUED"
    assert jobs.job_kinds()  # the test process itself runs nothing: no threads started
    workers.start()
    job = _poll(gql, started["job"]["id"], lambda j: j["status"] == "SUCCEEDED", 60, workers)
    assert job["result"] == {"imported": 50, "skipped": 0, "rejected": 0}
    assert job["progress"] == 1.0 and job["attempts"] == 1
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 50
    (worker,) = db.session.scalars(select(Job.worker).where(Job.kind == IMPORT))
    assert worker.split(":")[-1].startswith("worker1@")


def _kill_mid_job(queue_app: tuple[Flask, Workers], tmp_path: Path
                  ) -> tuple[GraphQL, str, Workers]:
    app, workers = queue_app
    gql = GraphQL(app, admin_token(app))
    file_id = _upload(app, gql.token or "", _customers_csv(tmp_path / "c.csv", 1500))
    job_id = gql(START, {"parameters": {"file": file_id, "batchSize": 10}})["startJob"][
        "job"]["id"]
    first = workers.start()
    _poll(gql, job_id, lambda j: j["status"] == "RUNNING" and 0 < j["progress"] < 0.9, 60,
          workers)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    job = gql(JOB, {"id": job_id})["job"]
    assert job["status"] == "RUNNING" and job["progress"] < 1  # killed mid-job
    workers.start()
    return gql, job_id, workers


def test_a_job_whose_worker_is_killed_is_retried_on_another_worker(
        queue_app: tuple[Flask, Workers], tmp_path: Path) -> None:
    gql, job_id, workers = _kill_mid_job(queue_app, tmp_path)
    job = _poll(gql, job_id, lambda j: j["status"] != "RUNNING", 120, workers)
    assert job["status"] == "SUCCEEDED", job
    assert job["attempts"] == 2
    # The rows of the batches done before the kill are skipped, not imported twice.
    assert job["result"]["imported"] + job["result"]["skipped"] == 1500
    assert job["result"]["skipped"] > 0
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1500
    (worker,) = db.session.scalars(select(Job.worker).where(Job.kind == IMPORT))
    assert worker.split(":")[-1].startswith("worker2@")


@pytest.mark.parametrize("queue_app", [1], indirect=True)
def test_a_killed_job_fails_with_a_reason_after_its_last_attempt(
        queue_app: tuple[Flask, Workers], tmp_path: Path) -> None:
    gql, job_id, workers = _kill_mid_job(queue_app, tmp_path)
    # As long as the retry test waits: the broker gives the message back on its own clock.
    job = _poll(gql, job_id, lambda j: j["status"] != "RUNNING", 120, workers)
    assert job["status"] == "FAILED" and job["attempts"] == 1
    assert job["error"]["code"] == "WORKER_LOST"
    assert "worker1@" in job["error"]["message"]
    assert "not retried after 1 attempts" in job["error"]["message"]
