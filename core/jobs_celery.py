"""The Celery side of ``core.jobs``: the only module that imports Celery.

A task carries only a job id; the job row holds everything else. Tasks are acknowledged
late with a prefetch of one, so a worker killed mid-job leaves its message to be
delivered again (at once on RabbitMQ; on Redis once ``RAPPORT_JOB_VISIBILITY_TIMEOUT``
seconds passed), and ``core.jobs.run_job`` then retries the job or fails it with
``WORKER_LOST`` after ``RAPPORT_JOB_MAX_ATTEMPTS``. A message that arrives while another
worker still beats on the job is put back with a delay instead of being run twice.

Install with ``pip install "rapport-crm[queue]"``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from sqlalchemy.exc import DBAPIError

from core import jobs
from core.app import rapport
from core.config import ConfigError

log = logging.getLogger("rapport.jobs")
#: The queue's name (RAPPORT_JOB_QUEUE changes it: several installations on one broker).
QUEUE = "rapport.jobs"
TASK = "rapport.run_job"
DEFAULT_VISIBILITY_TIMEOUT = 3600
_EXTENSION = "rapport_celery"


def _import_celery() -> Any:
    try:
        import celery
    except ImportError:
        raise ConfigError('RAPPORT_BROKER_URL is set but Celery is not installed: '
                          'pip install "rapport-crm[queue]"') from None
    return celery


def celery_app(app: Flask) -> Any:
    """The app's Celery application (made once per Flask app)."""
    found = app.extensions.get(_EXTENSION)
    if found is not None:
        return found
    celery = _import_celery()
    with app.app_context():
        url = jobs.broker_url()
        visibility = int(jobs._setting("RAPPORT_JOB_VISIBILITY_TIMEOUT",
                                       DEFAULT_VISIBILITY_TIMEOUT))
        retry_delay = jobs.stale_after().total_seconds()
        queue_name = rapport(app).settings.extra.get("RAPPORT_JOB_QUEUE") or QUEUE
    if not url:
        raise ConfigError("RAPPORT_BROKER_URL is not set: no queue to talk to")
    queue = celery.Celery("rapport", broker=url, set_as_current=False)
    queue.conf.update(
        task_serializer="json", accept_content=["json"], result_backend=None,
        task_ignore_result=True, task_acks_late=True, task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1, task_default_queue=queue_name,
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
        # Redis gives an unacknowledged message back once its visibility timeout has
        # passed, but only when a worker sweeps for such messages: by default every
        # 10 x 10 polls (about 100 s). Sweep every few seconds instead (one ZRANGEBYSCORE
        # under a mutex), so a killed worker's job comes back soon after the timeout.
        broker_transport_options={
            "visibility_timeout": visibility,
            "unacked_restore_interval": max(1, min(10, visibility // 2)),
            "unacked_restore_throttle": 1,
        },
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )

    @queue.task(name=TASK, bind=True, max_retries=None)
    def run_job_task(task: Any, job_id: int) -> str:
        try:
            with app.app_context():
                outcome = jobs.run_job(int(job_id),
                                       jobs.worker_name(f":{task.request.hostname}"))
        except DBAPIError as exc:
            # The database is unreachable: the job cannot even be taken. Keep the message
            # (a new one, with a growing delay) rather than lose the job.
            log.warning("job %s: database unavailable (%s); trying again", job_id, exc.orig)
            raise task.retry(countdown=min(60, 2 ** task.request.retries), exc=exc)
        if outcome is jobs.Outcome.RETRY_LATER:
            raise task.retry(countdown=retry_delay)
        return outcome.value

    app.extensions[_EXTENSION] = queue
    return queue


def enqueue(app: Flask, job_id: int) -> None:
    queue = celery_app(app)
    queue.send_task(TASK, args=[job_id], queue=queue.conf.task_default_queue)


def run_worker(app: Flask, concurrency: int, pool: str, hostname: str | None) -> None:
    """Run a Celery worker for the app's jobs in this process until it is stopped."""
    queue = celery_app(app)
    if pool == "prefork":
        from celery.signals import worker_process_init

        @worker_process_init.connect(weak=False)
        def fresh_connections(**kwargs: Any) -> None:
            # A forked child must not share the parent's database connections.
            with app.app_context():
                from core.db import db

                db.engine.dispose(close=False)

    argv = ["worker", f"--concurrency={concurrency}", f"--pool={pool}",
            f"--queues={queue.conf.task_default_queue}",
            "--loglevel=INFO", "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    log.info("worker for %s (pool %s x %s)", rapport(app).settings.extra.get(
        "RAPPORT_BROKER_URL", "").split("@")[-1], pool, concurrency)
    queue.worker_main(argv=argv)


def ping(app: Flask, timeout: float = 2.0) -> bool:
    """Whether the broker answers (readiness)."""
    try:
        with celery_app(app).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False
