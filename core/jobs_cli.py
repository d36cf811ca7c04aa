"""``rapport worker`` and ``rapport scheduler``: the job tier's processes."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click
from flask import current_app

from core import jobs, scheduler
from core.app import rapport

log = logging.getLogger("rapport.jobs")


def _logging() -> None:
    from core.logs import configure_logging

    settings = rapport().settings
    configure_logging({**settings.extra, "RAPPORT_ENV": settings.env})


@click.command("worker")
@click.option("--concurrency", type=click.IntRange(1, 256), default=None,
              help="Jobs run at once by this worker [default: RAPPORT_WORKER_CONCURRENCY, "
                   "else the number of cores].")
@click.option("--pool", type=click.Choice(["prefork", "threads", "solo"]), default="prefork",
              show_default=True, help="prefork: a process per job slot (CPU-bound jobs); "
                                      "threads; solo: one job at a time in this process.")
@click.option("--hostname", default=None, help="Worker name [default: celery@HOST].")
def worker_command(concurrency: int | None, pool: str, hostname: str | None) -> None:
    """Run jobs from the queue (RAPPORT_BROKER_URL) until stopped (SIGTERM: finish the
    running jobs first)."""
    if not jobs.broker_url():
        raise click.ClickException(
            "RAPPORT_BROKER_URL is not set: without a broker, jobs run on threads of the "
            "server that started them and there is nothing for a worker to do.")
    from core import jobs_celery

    _logging()
    jobs.job_kinds()
    if concurrency is None:
        raw = rapport().settings.extra.get("RAPPORT_WORKER_CONCURRENCY")
        concurrency = int(raw) if raw else None
    if concurrency is None:
        import os

        concurrency = os.cpu_count() or 1
    jobs_celery.run_worker(current_app._get_current_object(),  # type: ignore[attr-defined]
                           concurrency, pool, hostname)


@click.command("scheduler")
@click.option("--tick", type=click.FloatRange(0.1, 3600), default=scheduler.DEFAULT_TICK_SECONDS,
              show_default=True, help="Seconds between looks at the schedules table.")
@click.option("--once", is_flag=True, help="Start what is due now, then exit.")
def scheduler_command(tick: float, once: bool) -> None:
    """Start the jobs of due schedules, acting as the service 'scheduler'. Without a broker
    the jobs run on this process's threads."""
    _logging()
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        scheduler.serve(tick, stop, once=once)
    finally:
        if not jobs.broker_url():
            jobs.wait_for_threads(app)
