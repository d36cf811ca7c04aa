"""Outbox to webhook: how fast committed events reach a local receiver.

One process, PostgreSQL, no broker (the embedded default): a producer thread commits one
event per transaction (``core.changes.record``, as a mutation does) at a steady rate; the
relay thread, woken by each commit, hands them to the webhooks plugin, whose delivery job
(on the job threads) signs and POSTs each to an HTTP receiver on 127.0.0.1. Measured:

- sustained: latency from each commit to its arrival at the receiver (p50, p99, max) at
  ``--rate`` events/s for ``--seconds`` (goal: p99 < 2 s at 200 events/s for 60 s);
- burst: ``--burst`` events committed at once, then the time until the last arrives
  (events delivered per second when the pipeline is saturated);
- floor: the same signed POST made directly from one thread (no database, no queue), the
  cost of the HTTP round trip itself.

    python -m bench webhooks -- --rate 200 --seconds 60 --burst 3000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.common import fresh_database, make_app, postgres_version, print_table, verdict


def _serve(port: Any, arrivals: Any, count: Any, stop: Any) -> None:
    """The receiver, in its own process (a receiver runs elsewhere, not on our GIL):
    notes the first arrival time of each event's customerId."""
    seen: dict[str, float] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            now = time.time()
            key = json.loads(body)["data"].get("customerId", "")
            with lock:
                if key not in seen:
                    seen[key] = now
                    with count.get_lock():
                        count.value += 1
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port.value = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop.wait()
    with lock:
        arrivals.send(seen)
    server.shutdown()


class _Receiver:
    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._port = context.Value("i", 0)
        self._count = context.Value("i", 0)
        self._stop = context.Event()
        self._mine, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(
            self._port, theirs, self._count, self._stop), daemon=True)
        self.process.start()
        while not self._port.value:
            time.sleep(0.01)
        self.arrivals: dict[str, float] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port.value}/hooks"

    def count(self) -> int:
        return int(self._count.value)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self.arrivals = self._mine.recv()
        self.process.join(10)
        return self.arrivals


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _commit_event(seq: int) -> None:
    from core.changes import Event, record
    from core.ids import global_id
    from core.services import transaction

    customer = global_id("Customer", seq)
    with transaction():
        record("bench", [], events=[Event("customer.updated", customer, {
            "customerId": customer, "changedFields": ["city"]})])


def _wait_all(receiver: _Receiver, expected: int, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while receiver.count() < expected:
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.01)
    return True


def _producer(app: Any, committed: dict[str, float], lock: threading.Lock) -> Any:
    from core.ids import global_id

    def produce(seq: int) -> None:
        with app.app_context():
            _commit_event(seq)
            done = time.time()
            from core.db import db

            db.session.remove()
        with lock:
            committed[global_id("Customer", seq)] = done

    return produce


def _sustained(app: Any, receiver: _Receiver, rate: float, seconds: float, first_seq: int,
               producers: int) -> tuple[dict[str, float], float]:
    """Events committed at ``rate`` by ``producers`` threads (as concurrent requests
    would); latency from each commit to its arrival."""
    total = int(rate * seconds)
    before = receiver.count()
    committed: dict[str, float] = {}
    lock = threading.Lock()
    produce = _producer(app, committed, lock)
    lag = 0.0
    with ThreadPoolExecutor(max_workers=producers) as pool:
        start = time.perf_counter()
        for i in range(total):
            planned = start + i / rate
            pause = planned - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            lag = max(lag, time.perf_counter() - planned)
            pool.submit(produce, first_seq + i)
    if not _wait_all(receiver, before + total, timeout=120):
        print(f"  warning: {total - receiver.count()} of {total} events had not arrived "
              f"after 120 s")
    return committed, lag


def _burst(app: Any, receiver: _Receiver, count: int, first_seq: int, producers: int
           ) -> tuple[float, float]:
    already = receiver.count()
    committed: dict[str, float] = {}
    produce = _producer(app, committed, threading.Lock())
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=producers) as pool:
        list(pool.map(produce, range(first_seq, first_seq + count)))
    written = time.perf_counter() - start
    _wait_all(receiver, already + count, timeout=300)
    return written, time.perf_counter() - start


def _floor(url: str, rounds: int = 500) -> float:
    """Median seconds of one signed POST from a single thread (httpx, kept-alive)."""
    import httpx
    from standardwebhooks import Webhook

    from core.db import utcnow

    hook = Webhook("whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    samples = []
    with httpx.Client() as client:
        for i in range(rounds):
            body = json.dumps({"id": f"evt_{i}", "type": "customer.updated",
                               "data": {"customerId": f"floor-{i}"}})
            began = time.perf_counter()
            moment = utcnow().replace(microsecond=0)
            client.post(url, content=body, headers={
                "webhook-id": f"evt_{i}", "webhook-timestamp": str(int(moment.timestamp())),
                "webhook-signature": hook.sign(f"evt_{i}", moment, body)})
            samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_webhooks", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="sustained run length")
    parser.add_argument("--burst", type=int, default=3000, help="events in the burst run")
    parser.add_argument("--job-threads", type=int, default=2, help="RAPPORT_JOB_THREADS")
    parser.add_argument("--producers", type=int, default=8,
                        help="threads committing events (concurrent requests)")
    args = parser.parse_args(argv)

    print(f"# Outbox to webhook (PostgreSQL {postgres_version()}, no broker: relay thread + "
          f"{args.job_threads} job threads, one process; the receiver in another)")
    receiver = _Receiver()
    with fresh_database("webhooks") as url:
        app = make_app(url, ["webhooks"], RAPPORT_OUTBOX_RELAY="thread",
                       RAPPORT_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
                       RAPPORT_JOB_THREADS=str(args.job_threads))
        from core import context, jobs, outbox
        from plugins.webhooks import service

        with app.app_context(), context.use(actor=context.Actor(service="bench")):
            service.create_webhook({"url": receiver.url, "event_types": ["customer.*"]},
                                   {"admin"})
        state = app.extensions[outbox.EXTENSION]
        state.relay.start()
        try:
            floor = _floor(receiver.url)
            cpu_before = time.process_time()
            committed, lag = _sustained(app, receiver, args.rate, args.seconds, 1,
                                        args.producers)
            cpu_per_event = (time.process_time() - cpu_before) / max(len(committed), 1)
            written, delivered_in = _burst(app, receiver, args.burst,
                                           1 + int(args.rate * args.seconds), args.producers)
        finally:
            state.relay.stop()
            jobs.wait_for_threads(app)
            from core.db import db

            with app.app_context():
                db.engine.dispose()
    arrivals = receiver.stop()
    latencies = [arrivals[k] - t for k, t in committed.items() if k in arrivals]
    missing = len(committed) - len(latencies)
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    print_table(["run", "events", "p50 ms", "p99 ms", "max ms", "events/s", "note"], [
        [f"sustained {args.rate:g}/s x {args.seconds:g} s", len(latencies),
         f"{p50 * 1000:.0f}", f"{p99 * 1000:.0f}", f"{max(latencies) * 1000:.0f}",
         f"{len(latencies) / args.seconds:.0f}",
         f"{args.producers} producer threads, {lag * 1000:.0f} ms behind schedule at "
         f"most; {missing} missing"],
        [f"burst of {args.burst}", args.burst, "", "", "", f"{args.burst / delivered_in:.0f}",
         f"committed in {written:.1f} s, all delivered {delivered_in:.1f} s after the "
         f"first commit"],
        ["floor: one signed POST, no database", 500, f"{floor * 1000:.1f}", "", "",
         f"{1 / floor:.0f}", "httpx, one thread, kept-alive"],
    ])
    print(f"CPU of the Rapport process per event (commit, relay, delivery, bookkeeping; the "
          f"receiver excluded): {cpu_per_event * 1000:.2f} ms, i.e. {cpu_per_event * 200:.2f} "
          f"core(s) at 200 events/s; load average at the end: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"goal p99 < 2000 ms at 200 events/s: {verdict(p99, 2.0)}" if args.rate >= 200
          else "goal measured at 200 events/s only")


if __name__ == "__main__":
    main()
