"""Churn scoring across worker processes: one run split into chunk jobs, 1, 2 and 4 workers.

Data: the simulated customers of ``bench_churn_scoring`` (BG/NBD purchases, other
interactions, churn records; loyalty, complaints, surveys and churn enabled), ``--customers``
of them (default 200,000) in their own database ``rapport_bench_churn_workers``, kept for
later runs. A model is fitted once; then, for each worker count, that many
``rapport worker --pool solo`` processes are started on a Redis broker
(``RAPPORT_BENCH_BROKER_URL``, default redis://127.0.0.1:6379/13, a queue of its own) and
one ``churn.score`` job is started with the same split every time (``--chunks`` chunk jobs,
``--chunk-size`` customers per query batch). Measured per run:

- wall time, from the job's creation to its end (the job row's times), and the speed-up
  against one worker;
- CPU (user + system) of the worker processes and of the PostgreSQL backends serving the
  benchmark's database (``/proc/<pid>/stat`` of each, at the start and at the end of the
  run: the workers keep their connections in their pools, so the same backends do the
  work); CPU seconds per wall second says how much of the machine the run used.

The in-process path (``rapport churn score``: the same chunks one after the other, no
queue) is timed as well, interleaved with the worker runs. Figures are printed, never
asserted. The goal (the issue's): 2 workers >= 1.3 x one, PostgreSQL on the same 2 cores.

    python -m bench churn_workers -- --customers 200000 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from bench import bench_churn_scoring as data
from bench import common

DATABASE = "rapport_bench_churn_workers"
CUSTOMERS = 200_000
BROKER = os.environ.get("RAPPORT_BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
SECRET = "bench-churn-workers"
ROOT = Path(__file__).resolve().parents[1]
GOAL_SPEEDUP = 1.3
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _backends(app: Any) -> list[int]:
    from core.db import db

    with app.app_context():
        pids = list(db.session.scalars(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")))
        db.session.rollback()
    return pids


class Workers:
    def __init__(self, count: int, env: dict[str, str], logs: Path):
        self.processes = []
        for number in range(count):
            log = (logs / f"worker{number + 1}.log").open("wb")
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "core.cli", "worker", "--pool", "solo",
                 "--hostname", f"bench{number + 1}@%h"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        self.logs = [logs / f"worker{n + 1}.log" for n in range(count)]

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not all(b"ready" in p.read_bytes() for p in self.logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                raise RuntimeError("workers did not start:\n" + "\n".join(
                    p.read_text(errors="replace")[-2000:] for p in self.logs))
            time.sleep(0.2)

    def cpu(self) -> float:
        return sum(_cpu_seconds(p.pid) for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _settings(url: str, queue: str) -> dict[str, str]:
    return {"RAPPORT_ENV": "test", "RAPPORT_DATABASE_URL": url,
            "RAPPORT_PLUGINS": ",".join(data.PLUGINS), "RAPPORT_SECRET_KEY": SECRET,
            "RAPPORT_BROKER_URL": BROKER, "RAPPORT_JOB_QUEUE": queue}


def run_on_workers(url: str, count: int, chunks: int, chunk_size: int) -> dict[str, Any]:
    from core import create_app, jobs
    from core.db import db
    from core.job_tables import Job, JobStatus

    queue = f"rapport.bench.{uuid.uuid4().hex[:10]}"
    settings = _settings(url, queue)
    app = create_app(dict(settings, RAPPORT_PLUGINS=data.PLUGINS))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")}
    env.update(settings, PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as logs:
        workers = Workers(count, env, Path(logs))
        try:
            workers.wait_ready()
            before_pg = {pid: _cpu_seconds(pid) for pid in _backends(app)}
            before_workers = workers.cpu()
            with app.app_context():
                job_id = jobs.start_job("churn.score", {"chunks": chunks,
                                                        "chunkSize": chunk_size}).id
                while True:
                    db.session.expire_all()
                    job = db.session.get(Job, job_id)
                    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                      JobStatus.CANCELLED):
                        break
                    db.session.rollback()
                    time.sleep(0.2)
                if job.status is not JobStatus.SUCCEEDED:
                    raise RuntimeError(f"the job ended {job.status}: {job.error_message}")
                wall = (job.finished_at - job.created_at).total_seconds()
                customers = job.result["customers"]
                hosts = set(db.session.scalars(text(
                    "SELECT split_part(worker, '@', 1) FROM jobs WHERE parent_id = :id"),
                    {"id": job_id}))
                first_chunk, last_chunk = db.session.execute(select(
                    func.min(Job.created_at), func.max(Job.finished_at)).where(
                    Job.parent_id == job_id)).one()
                plan = (first_chunk - job.created_at).total_seconds()
                publish = (job.finished_at - last_chunk).total_seconds()
                db.session.rollback()
            worker_cpu = workers.cpu() - before_workers
            after = _backends(app)
            pg_cpu = sum(_cpu_seconds(pid) - before_pg.get(pid, 0.0) for pid in after)
        finally:
            workers.stop()
            common.dispose(app)
    return {"wall": wall, "worker_cpu": worker_cpu, "pg_cpu": pg_cpu,
            "customers": customers, "workers_used": len(hosts), "plan": plan,
            "publish": publish}


def run_in_process(url: str, chunks: int, chunk_size: int) -> dict[str, Any]:
    """``rapport churn score --chunks N``: the same chunks one after the other here."""
    from core import create_app
    from plugins.churn import modeling

    app = create_app(dict(_settings(url, "unused"), RAPPORT_BROKER_URL="",
                          RAPPORT_PLUGINS=data.PLUGINS))
    before_pg = {pid: _cpu_seconds(pid) for pid in _backends(app)}
    mine = os.getpid()
    cpu_before = _cpu_seconds(mine)
    with app.app_context():
        started = time.perf_counter()
        summary = modeling.score_customers(chunk_size=chunk_size, parts=chunks)
        wall = time.perf_counter() - started
    cpu = _cpu_seconds(mine) - cpu_before
    pg = sum(_cpu_seconds(pid) - before_pg.get(pid, 0.0) for pid in _backends(app))
    common.dispose(app)
    return {"wall": wall, "worker_cpu": cpu, "pg_cpu": pg, "customers": summary.customers,
            "workers_used": 1, "plan": None, "publish": None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_churn_workers")
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1,
                        help="Repeat the whole series (interleaved), reporting each run.")
    args = parser.parse_args(argv or [])
    print(__doc__.strip().splitlines()[0])
    print(f"PostgreSQL {common.postgres_version()}; {common.machine()}; broker "
          f"{BROKER}\n", flush=True)
    data.DATABASE = DATABASE
    url = data.database_url()
    app = data.make_app(url)
    from core.migrate import upgrade

    upgrade(app)
    loaded = data.load_dataset(app, args.customers, False)
    print(f"data: {loaded.customers:,} customers, {loaded.purchases:,} purchases; "
          f"{'reused' if loaded.reused else 'generated'} ({loaded.seconds:.1f} s)", flush=True)
    from core.db import db
    from plugins.churn import modeling

    with app.app_context():
        db.session.execute(text("TRUNCATE churn_scores, churn_score_staging, churn_score_runs "
                                "RESTART IDENTITY CASCADE"))
        if loaded.reused:
            fitted = db.session.scalar(text(
                "SELECT id FROM churn_model_versions WHERE active ORDER BY id DESC LIMIT 1"))
        else:
            fitted = None
            db.session.execute(text("TRUNCATE churn_model_versions RESTART IDENTITY CASCADE"))
        db.session.commit()
    from core import create_app

    # The classifier is sealed with the secret key: the workers use the same one.
    fit_app = create_app(dict(_settings(url, "unused"), RAPPORT_BROKER_URL="",
                              RAPPORT_PLUGINS=data.PLUGINS))
    with fit_app.app_context():
        if fitted is None:
            started = time.perf_counter()
            version = modeling.fit_models(as_of=data.AS_OF)
            db.session.commit()
            print(f"fitted model version {version.id} ({version.kind}) in "
                  f"{time.perf_counter() - started:.1f} s (not measured below)\n", flush=True)
        else:
            print(f"model version {fitted} of an earlier run reused\n", flush=True)
    common.dispose(fit_app)
    common.dispose(app)

    rows: list[list[Any]] = []
    base: float | None = None
    for round_ in range(args.rounds):
        series = args.workers if round_ % 2 == 0 else list(reversed(args.workers))
        plan: list[int | None] = [None, *series]
        for count in plan:
            if count is None:
                figures = run_in_process(url, args.chunks, args.chunk_size)
                label = "in process (rapport churn score --chunks N)"
            else:
                figures = run_on_workers(url, count, args.chunks, args.chunk_size)
                label = f"{count} worker{'s' if count > 1 else ''} ({figures['workers_used']} took chunks)"
                if count == 1 and base is None:
                    base = figures["wall"]
            speedup = "" if count is None or base is None else f"{base / figures['wall']:.2f}x"
            total_cpu = figures["worker_cpu"] + figures["pg_cpu"]
            rows.append([label, figures["customers"], figures["wall"], speedup,
                         "" if figures["plan"] is None else figures["plan"],
                         "" if figures["publish"] is None else figures["publish"],
                         figures["worker_cpu"], figures["pg_cpu"],
                         f"{total_cpu / figures['wall']:.2f}"])
            print(f"  {label}: {figures['wall']:.1f} s", flush=True)
    common.print_table(
        ["run", "customers", "wall s", "speed-up vs 1 worker", "plan s", "publish s",
         "workers CPU s", "PostgreSQL CPU s", "CPU s per wall s"], rows,
        title=f"churn.score of {loaded.customers:,} customers, {args.chunks} chunk jobs of "
              f"whole {args.chunk_size:,}-customer batches")
    by_count = {r[0].split(" ")[0]: r for r in rows if "worker" in r[0]}
    if "1" in by_count and "2" in by_count:
        ratio = by_count["1"][2] / by_count["2"][2]
        print(f"2 workers vs 1: {ratio:.2f}x (goal >= {GOAL_SPEEDUP}x: "
              f"{'meets' if ratio >= GOAL_SPEEDUP else 'misses'})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
