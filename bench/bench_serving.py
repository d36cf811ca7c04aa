"""Serving over HTTP: Rapport under gunicorn against a hand-written service, same machine.

Data: 10,000 customers and 80,000 interactions (2 to 14 each, half of them with an amount)
on PostgreSQL, every installed plugin's tables. Rapport: `gunicorn -c python:core.gunicorn_conf`
as `rapport serve --production` runs it (preloaded app, sync workers, JSON access log,
Prometheus multiprocess metrics) with EVERY installed plugin enabled. References, each its
own service under the same gunicorn configuration and worker count:

- handwritten: bench/serving_baseline.py, Flask + psycopg 3, the same API-key check (prefix
  lookup + digest comparison per request), plain SQL (one LATERAL query for the nested
  interactions), Fernet for the e-mails, orjson;
- PostGraphile 5 (auto-generated GraphQL over the same tables) needs Node 22: with an older
  Node it is skipped with a message.

Queries: the nested `customers(first: 100) { ... interactions(first: 5) ... }` (about 60 kB
of JSON) and `customer(id) { name }` (a random one of the first 1,000 customers, the same
sequence on each side). Every answer pair is compared once for equality before timing.

The load comes from a separate process: CONCURRENCY threads, each sending one request at a
time on a new connection (sync workers close it after each answer), for SECONDS per
window; windows alternate query by query and side by side ROUNDS times. Figures: requests/s
and latency percentiles over all windows of a side, and the server's CPU time (master and
workers, user + system) per request, which other load on the machine disturbs less. The
load generator shares the 2 cores with the servers and PostgreSQL. After the timed windows
each service gets MEMORY_REQUESTS more requests of each query per worker (on average) and
each worker's USS (private memory: smaps_rollup Private_Clean + Private_Dirty) is printed.

    python -m bench serving
    python -m bench serving -- --seconds 10 --rounds 3 --customers 1000   # a smaller run
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import json
import multiprocessing
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import bench_graphql, common

NAME = "serving"
ROOT = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("RAPPORT_BENCH_SECONDS", "5"))
ROUNDS = 3
CONCURRENCY = 4
WORKERS = 2
CUSTOMERS = 10_000
INTERACTIONS = 80_000
MEMORY_REQUESTS = 1_000
POSTGRAPHILE_NODE = 22
SIMPLE_QUERY = "query One($id: ID!) { customer(id: $id) { name } }"
_KINDS = ["purchase", "call", "email", "visit", "chat", "note", "refund", "service"]
_CURRENCIES = ["USD", "EUR", "JPY", "GBP"]


def seed(app: Any, customers: int, interactions: int) -> None:
    """``customers`` customers and about ``interactions`` interactions spread unevenly."""
    from core.crypto import keyring
    from core.db import db
    from core.models import Customer, CustomerStatus, Interaction, LifecycleStage

    keys = keyring(app)
    rnd = random.Random(20261206)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    mean = interactions / customers
    with app.app_context(), db.engine.begin() as conn:
        rows = []
        for i in range(customers):
            name = f"Customer {i:05d} {rnd.choice(['Ada', 'Grace', 'Alan', 'Edsger'])}"
            email = f"customer{i}@example.com"
            created = start + dt.timedelta(minutes=3 * i)
            rows.append({"name": name, "email": email, "name_normalized": name.lower(),
                         "email_blind_index": keys.blind_index("email", email),
                         "attributes": {}, "status": CustomerStatus.ACTIVE,
                         "lifecycle_stage": LifecycleStage.CUSTOMER, "created_at": created,
                         "updated_at": created})
        ids = conn.execute(Customer.__table__.insert().returning(Customer.__table__.c.id),
                           rows).scalars().all()
        batch: list[dict[str, Any]] = []
        made = 0
        for n, customer_id in enumerate(ids):
            left = interactions - made
            count = left if n == len(ids) - 1 else min(left, rnd.randint(
                max(1, int(mean * 0.25)), int(mean * 1.75)))
            for j in range(count):
                kind = rnd.choice(_KINDS)
                monetary = kind in ("purchase", "refund")
                currency = rnd.choice(_CURRENCIES) if monetary else None
                amount = (Decimal(rnd.randint(100, 99_999)) / 100 if currency != "JPY"
                          else Decimal(rnd.randint(100, 99_999))) if monetary else None
                occurred = start + dt.timedelta(days=rnd.randint(0, 900),
                                                seconds=rnd.randint(0, 86_399))
                batch.append({"customer_id": customer_id, "kind": kind, "channel": "web",
                              "occurred_at": occurred, "amount": amount,
                              "currency": currency, "payload": {"n": j},
                              "recorded_at": occurred})
            made += count
            if len(batch) >= 5_000:
                conn.execute(Interaction.__table__.insert(), batch)
                batch = []
        if batch:
            conn.execute(Interaction.__table__.insert(), batch)
    with app.app_context():
        common.analyze(db.engine)


# --- Load generator (runs in its own process) -----------------------------------------------

#: One request: (method, path, body).
Call = tuple[str, str, bytes | None]


def _worker(port: int, calls: list[Call], offset: int, headers: dict[str, str],
            deadline: float, limit: int | None, out: list[Any]) -> None:
    latencies: list[float] = []
    errors = 0
    n = offset
    while time.perf_counter() < deadline and (limit is None or n - offset < limit):
        method, path, body = calls[n % len(calls)]
        n += 1
        started = time.perf_counter()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            connection.close()
            ok = response.status == 200
        except OSError:
            ok = False
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            errors += 1
    out.append((latencies, errors))


def _load(port: int, calls: list[Call], headers: dict[str, str], seconds: float,
          concurrency: int, limit: int | None, queue: Any) -> None:
    deadline = time.perf_counter() + seconds
    out: list[Any] = []
    per_thread = None if limit is None else -(-limit // concurrency)
    threads = [threading.Thread(target=_worker, args=(
        port, calls, i * 7919, headers, deadline, per_thread, out)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    queue.put(([lat for lats, _ in out for lat in lats], sum(e for _, e in out), elapsed))


def generate_load(port: int, calls: list[Call], headers: dict[str, str], seconds: float,
                  concurrency: int, limit: int | None = None
                  ) -> tuple[list[float], int, float]:
    """Load from a separate process for ``seconds`` (or until ``limit`` requests)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_load, args=(port, calls, headers, seconds, concurrency,
                                                  limit, queue))
    process.start()
    result = queue.get(timeout=seconds + 120)
    process.join(timeout=30)
    return result  # type: ignore[no-any-return]


# --- Servers --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A gunicorn with core/gunicorn_conf.py on a free port; output to a file."""

    def __init__(self, env: dict[str, str], workers: int, log_dir: Path, label: str,
                 app: str | None = None, tree: Path = ROOT):
        self.label = label
        self.port = _free_port()
        self.log = open(log_dir / f"{label}.log", "w")  # noqa: SIM115
        args = [sys.executable, "-m", "gunicorn", "--config", "python:core.gunicorn_conf"]
        if app:
            args.append(app)
        self.process = subprocess.Popen(
            args, cwd=tree, stdout=self.log, stderr=subprocess.STDOUT,
            env={**env, "RAPPORT_WORKERS": str(workers),
                 "RAPPORT_BIND": f"127.0.0.1:{self.port}",
                 "PROMETHEUS_MULTIPROC_DIR": str(log_dir / f"metrics-{label}")})
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn ({label}) did not start: see {self.log.name}")
            time.sleep(0.1)

    def request(self, call: Call, headers: dict[str, str]) -> Any:
        method, path, body = call
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        assert response.status == 200, data[:500]
        return json.loads(data)

    def pids(self) -> list[int]:
        pid = self.process.pid
        return [pid, *(int(c) for c in
                       Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the master and its workers (user + system)."""
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> tuple[float, list[tuple[float, float]]]:
        """Master RSS, and each worker's (RSS, USS) in MB. USS: pages no other process
        maps (Private_Clean + Private_Dirty): what stopping the worker would free."""

        def rollup(pid: int) -> dict[str, float]:
            fields = {}
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
                name, value = line.split(":", 1)
                fields[name] = float(value.split()[0]) / 1024
            return fields

        master, *children = self.pids()
        workers = [rollup(c) for c in children]
        return rollup(master)["Rss"], [
            (w["Rss"], w["Private_Clean"] + w["Private_Dirty"]) for w in workers]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0


def postgraphile_available() -> str | None:
    """None if Node >= 22 is installed, else why PostGraphile 5 is not measured."""
    try:
        version = subprocess.run(["node", "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "Node is not installed"
    match = re.match(r"v(\d+)", version)
    if not match or int(match.group(1)) < POSTGRAPHILE_NODE:
        return f"PostGraphile 5 needs Node {POSTGRAPHILE_NODE}; this machine has " \
               f"{version or 'an unknown Node'}"
    return None


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _gid(type_name: str, pk: int) -> str:
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode("ascii")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench serving")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="per window")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--interactions", type=int, default=INTERACTIONS)
    parser.add_argument("--memory-requests", type=int, default=MEMORY_REQUESTS,
                        help="requests of each query per worker before memory is read")
    parser.add_argument("--also-tree", type=Path, default=None,
                        help="another source tree of Rapport (e.g. an export of the last "
                             "commit) served as a third side, 'rapport@<folder name>'")
    args = parser.parse_args(argv if argv is not None else [])
    print(__doc__.strip().splitlines()[0])
    print(f"{args.customers:,} customers, {args.interactions:,} interactions; "
          f"{args.workers} gunicorn workers per service; {args.concurrency} client threads "
          f"in a separate process; {args.rounds} x {args.seconds:g} s windows per query and "
          f"side, alternating. Load average at start: {_loadavg()}.\n")
    skipped = postgraphile_available()
    if skipped:
        print(f"PostGraphile: skipped ({skipped}).\n")
    else:
        print("PostGraphile: Node is recent enough, but running it is not automated here "
              "yet; skipped.\n")
    from cryptography.fernet import Fernet

    rows: list[list[Any]] = []
    memory: dict[str, tuple[float, list[tuple[float, float]]]] = {}
    with common.fresh_database(NAME) as url, tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        config = {"RAPPORT_INSTANCE_PATH": str(scratch_dir / "instance"),
                  "RAPPORT_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
                  "RAPPORT_BLIND_INDEX_KEY": "bench-serving-blind-index-key-0123456789"}
        app = common.make_app(url, plugins=common.ALL_PLUGINS, **config)
        try:
            plugins = common.enabled_plugins(app)
            started = time.perf_counter()
            seed(app, args.customers, args.interactions)
            print(f"seeded in {time.perf_counter() - started:.0f} s; plugins enabled: "
                  f"{', '.join(plugins)}\n", flush=True)
            secret = common.admin_key(app)
        finally:
            common.dispose(app)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RAPPORT_") and k not in ("WEB_CONCURRENCY", "PORT")}
        env.update({"RAPPORT_ENV": "test", "RAPPORT_DATABASE_URL": url,
                    "RAPPORT_LOG_FORMAT": "json", "RAPPORT_RATE_LIMIT": "10000000/minute",
                    "BENCH_DATABASE_URL": url, **config})
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        rnd = random.Random(7)
        picks = [rnd.randint(1, min(1_000, args.customers)) for _ in range(500)]
        queries: dict[str, dict[str, list[Call]]] = {
            "nested": {
                "rapport": [("POST", "/graphql",
                             json.dumps({"query": bench_graphql.QUERY}).encode())],
                "handwritten": [("GET", f"/customers?first={bench_graphql.PAGE}"
                                        f"&nested={bench_graphql.NESTED}", None)]},
            "customer(id)": {
                "rapport": [("POST", "/graphql", json.dumps({
                    "query": SIMPLE_QUERY, "variables": {"id": _gid("Customer", pk)}}).encode())
                    for pk in picks],
                "handwritten": [("GET", f"/customer?id={_gid('Customer', pk)}", None)
                                for pk in picks]},
        }
        targets: dict[str, tuple[str | None, Path]] = {
            "rapport": (None, ROOT), "handwritten": ("bench.serving_baseline:app", ROOT)}
        if args.also_tree:
            other = f"rapport@{args.also_tree.resolve().name}"
            targets[other] = (None, args.also_tree.resolve())
            for calls in queries.values():
                calls[other] = calls["rapport"]
        servers = {side: Server(env, args.workers, scratch_dir, side.replace("@", "-"),
                                app=target, tree=tree)
                   for side, (target, tree) in targets.items()}
        try:
            for query, calls in queries.items():
                for i in (0, len(calls["rapport"]) - 1):
                    answers = {side: servers[side].request(c[i], headers)
                               for side, c in calls.items()}
                    assert "errors" not in answers["rapport"], answers["rapport"]["errors"]
                    for side in answers:
                        assert answers[side] == answers["handwritten"], \
                            f"{query}: {side} and the hand-written service disagree"
            print("answers compared: equal\n", flush=True)
            results = {(q, side): ([], 0, 0.0) for q in queries for side in targets}
            cpu = dict.fromkeys(results, 0.0)
            for query, calls in queries.items():  # warm every worker up
                for side in targets:
                    generate_load(servers[side].port, calls[side], headers, 1.0,
                                  args.concurrency)
            load_during = []
            for _ in range(args.rounds):
                for query, calls in queries.items():
                    for side in targets:
                        cpu_before = servers[side].cpu_seconds()
                        lat, err, elapsed = generate_load(
                            servers[side].port, calls[side], headers, args.seconds,
                            args.concurrency)
                        cpu[(query, side)] += servers[side].cpu_seconds() - cpu_before
                        done = results[(query, side)]
                        results[(query, side)] = (done[0] + lat, done[1] + err,
                                                  done[2] + elapsed)
                load_during.append(_loadavg())
            for query, calls in queries.items():
                for side in targets:
                    generate_load(servers[side].port, calls[side], headers, 600,
                                  args.concurrency,
                                  limit=args.memory_requests * args.workers)
            for side in targets:
                memory[side] = servers[side].memory_mb()
        finally:
            for server in servers.values():
                server.stop()
    for query in queries:
        rps = {}
        for side in targets:
            lat, errors, elapsed = results[(query, side)]
            rps[side] = len(lat) / elapsed
            rows.append([query, side, rps[side], statistics.median(lat) * 1000,
                         _percentile(lat, 0.99) * 1000, cpu[(query, side)] * 1000 / len(lat),
                         len(lat), errors])
        per_request = {side: cpu[(query, side)] / len(results[(query, side)][0])
                       for side in targets}
        for side in targets:
            if side != "handwritten":
                rows.append([query, f"ratio {side}/handwritten",
                             common.ratio(rps[side], rps["handwritten"]), "", "",
                             common.ratio(per_request["handwritten"], per_request[side]),
                             "", ""])
    common.print_table(["query", "server", "req/s", "p50 ms", "p99 ms", "CPU ms/req",
                        "requests", "errors"], rows)
    print("ratio row: throughput ratio, and in the CPU column handwritten CPU/request over "
          "Rapport's (higher is better for Rapport).")
    print(f"load average after each round: {' | '.join(load_during)}\n")
    common.print_table(
        ["service", "master RSS MB", "worker", "RSS MB", "USS MB"],
        [[side, master, n, rss, uss] for side, (master, workers) in memory.items()
         for n, (rss, uss) in enumerate(workers, start=1)],
        title=f"Memory after the timed windows and {args.memory_requests:,} more requests of "
              f"each query per worker (on average; goal for Rapport: USS <= 100 MB):")


if __name__ == "__main__":
    main()
